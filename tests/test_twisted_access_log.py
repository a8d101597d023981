"""Twisted's access-log line is formatted only where Daphne keeps the Twisted log (gedge_site/twisted_access_log.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from daphne.http_protocol import HTTPFactory

from gedge_site.twisted_access_log import install


@pytest.mark.parametrize(("verbosity", "written"), [(0, 0), (1, 0), (2, 1), (3, 1)])
def test_the_line_is_formatted_only_where_it_is_kept(verbosity, written):
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
