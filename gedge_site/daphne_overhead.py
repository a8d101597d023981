"""Two costs in Daphne's request path that buy nothing, removed (docs/performance.md, "API latency").

- **Twisted's access-log line.** Daphne's HTTP factory is Twisted's, whose ``log`` formats a
  combined-log-format line for every request (a timestamp, the client, the request line, the referrer and
  the user agent, each escaped) and writes it to the Twisted log. At verbosity 0 or 1, Daphne sends the
  Twisted log nowhere: 8% of the web process's CPU in a closed loop of polling clients. The line is now
  formatted only at verbosity 2 and up, where Daphne passes the Twisted log on to Python's logging. Daphne's
  own access log (``--access-log``, its ``action_logger``) is a different one and is untouched.
- **A deprecation proxy on every attribute.** ``twisted.web.http`` is wrapped in Twisted's ``_ModuleProxy``
  (it warns on a deprecated name), whose ``__getattribute__`` is Python code: 2.6 us for each ``http.Request``
  that Daphne's request class looks up, several times per request, where a module attribute costs 0.05 us.
  Daphne's module now refers to the module itself. Daphne uses no deprecated name of it (it would warn).
"""
from __future__ import annotations


def install() -> None:
    """Patch Daphne once (the ``daphne`` command builds its server after importing the application)."""
    from daphne import http_protocol
    from daphne.http_protocol import HTTPFactory
    from twisted.python.deprecate import _ModuleProxy

    if getattr(HTTPFactory, "_gedge_log_only_when_kept", False):
        return
    HTTPFactory._gedge_log_only_when_kept = True
    log = HTTPFactory.log

    def log_when_kept(self, request) -> None:
        if self.server.verbosity > 1:  # the Twisted log goes somewhere (daphne.server.Server.run)
            log(self, request)

    HTTPFactory.log = log_when_kept
    if isinstance(http_protocol.http, _ModuleProxy):
        http_protocol.http = object.__getattribute__(http_protocol.http, "_module")
