"""Twisted's own access-log line, formatted for every request only to be thrown away, is not formatted.

Daphne's HTTP factory is Twisted's, whose ``log`` formats a combined-log-format line for every request (a
timestamp, the client, the request line, the referrer and the user agent, each escaped) and writes it to
the Twisted log. At verbosity 0 or 1, Daphne sends the Twisted log nowhere. That was 8% of the web
process's CPU in a closed loop of polling clients (docs/performance.md, "API latency"). Daphne's own access
log (``--access-log``, its ``action_logger``) is a different one and is untouched; at verbosity 2 and up,
where Daphne passes the Twisted log on to Python's logging, the line is written as before.
"""
from __future__ import annotations


def install() -> None:
    """Patch Daphne's HTTP factory once."""
    from daphne.http_protocol import HTTPFactory

    if getattr(HTTPFactory, "_gedge_log_only_when_kept", False):
        return
    HTTPFactory._gedge_log_only_when_kept = True
    log = HTTPFactory.log

    def log_when_kept(self, request) -> None:
        if self.server.verbosity > 1:  # the Twisted log goes somewhere (daphne.server.Server.run)
            log(self, request)

    HTTPFactory.log = log_when_kept
