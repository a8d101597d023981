"""What a worker process holds: its detector (loaded once), the shutdown flag Dramatiq raises on SIGTERM,
the stage metrics it records, and the fault-injection hooks the fault run uses (off unless configured)."""
