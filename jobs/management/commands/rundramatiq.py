"""django_dramatiq's rundramatiq, with G-Edge's default for how long an idle worker waits between polls.

Dramatiq's Redis consumer backs off up to ``dramatiq_worker_timeout`` (1000 ms by default) while its queue is
empty, so each hand-off between two stages of a job could wait up to a second. With 100 ms, one street.mp4
job through the three workers went from 21.3 to 30.0 frames/s in the benchmark (docs/performance.md); the
cost is a few Redis round trips per second per idle queue. An operator's own setting wins.

Workers also lower their CPU priority: stage work is throughput, an API request is someone waiting. Where the
web process shares cores with workers (one edge box, or Pods on one node without CPU limits), a request then no
longer queues behind frames; when the web is idle the workers get the whole CPU as before (docs/performance.md,
"API latency"). Two settings, each on its own:

- ``GEDGE_WORKER_NICE`` (10 by default; 0 leaves it): niceness, a smaller share of the CPU beside the web;
- ``GEDGE_WORKER_SCHED_IDLE`` (on by default, Linux): the ``SCHED_IDLE`` policy, under which any other task
  that wakes up (the web, PostgreSQL, Redis) takes the core from a worker at once instead of at the end of
  the worker's time slice. A worker keeps a sliver of CPU (its heartbeat and lease renewals go on) even when
  other work fills every core.
"""
import os

from django.conf import settings
from django_dramatiq.management.commands.rundramatiq import Command as DjangoDramatiqCommand

IDLE_POLL_MS = 100  # also the embedded worker's (run_embedded.py)


class Command(DjangoDramatiqCommand):
    def handle(self, *args, **options):
        os.environ.setdefault("dramatiq_worker_timeout", str(IDLE_POLL_MS))  # read by the dramatiq CLI it execs
        # One message at a time per queue: what a worker has not started stays in Redis, where a short job's
        # segment may be put ahead of it (fair sharing, docs/segments.md) and another worker may take it.
        os.environ.setdefault("dramatiq_queue_prefetch", "1")
        # Which queues this worker's threads take: a stage gives way to a shorter job waiting on any of them
        # (jobs/lifecycle/transitions.fair_turn).
        os.environ["GEDGE_WORKER_QUEUES"] = ",".join(options.get("queues") or [])
        if settings.GEDGE_WORKER_NICE > 0:
            lower_priority(settings.GEDGE_WORKER_NICE)
        if settings.GEDGE_WORKER_SCHED_IDLE:
            idle_policy()
        return super().handle(*args, **options)


def lower_priority(nice: int) -> None:
    """Niceness for this process, kept across the exec and by every worker process it forks.

    Where the kernel groups processes by session for scheduling (autogroup, on by default on desktops and
    on this edge box), niceness only ranks processes *within* a session, and a worker started in a session
    of its own would still get an equal share beside the web. Such a worker, the leader of its own session,
    therefore also sets its session group's niceness. In Kubernetes each container is a cgroup instead, and
    the Pods' CPU requests decide (k8s/).
    """
    os.nice(nice)
    if os.getsid(0) == os.getpid():
        try:
            with open("/proc/self/autogroup", "w") as fh:
                fh.write(str(nice))
        except OSError:  # no autogroup in this kernel, or not allowed: niceness alone
            pass


def idle_policy() -> None:
    """``SCHED_IDLE`` for this process, kept across the exec and by every worker process and thread it starts
    (the policy is per thread on Linux: set here, in the one thread that execs). Not on this platform, or not
    allowed: the niceness alone."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass
