"""Daphne without the two costs that buy nothing (gedge_site/daphne_overhead.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from daphne.http_protocol import HTTPFactory

from gedge_site.daphne_overhead import install


@pytest.mark.parametrize(("verbosity", "written"), [(0, 0), (1, 0), (2, 1), (3, 1)])
def test_twisted_access_log_line_is_formatted_only_where_it_is_kept(verbosity, written):
    install()
    install()  # once only: a second install does not wrap the first
    factory = HTTPFactory(SimpleNamespace(verbosity=verbosity))
    formatted, lines = [], []
    factory._logFormatter = lambda timestamp, request: formatted.append(request) or "line"
    factory._logFile = SimpleNamespace(write=lines.append)
    factory._logDateTime = "26/Nov/2026:10:00:00 +0000"
    request = object()
    factory.log(request)
    assert len(formatted) == written and lines == ["line\n"] * written


def test_daphne_looks_twisted_http_up_without_the_deprecation_proxy():
    from daphne import http_protocol
    from twisted.python.deprecate import _ModuleProxy
    from twisted.web import http

    assert isinstance(http, _ModuleProxy)  # as Twisted installs it (else this patch is moot: drop it)
    install()
    assert not isinstance(http_protocol.http, _ModuleProxy)
    assert http_protocol.http.Request is http.Request and http_protocol.http.HTTPFactory is http.HTTPFactory
