"""A job's life: the status table and its compare-and-set moves (transitions), what people ask of jobs
(services: submit, cancel, retry), storing uploads (uploads), running a stage in a worker (runner, leases),
finding work nobody holds (reaper), and telling browsers (broadcast)."""
