"""The API's two hot reads on Daphne's event loop: ``GET /api/jobs/{id}/`` and ``GET /api/jobs/``.

Clients that follow jobs poll these two URLs. Through Django's handler and DRF each answer costs one thread
hop, ten middleware, content negotiation and three ORM queries: about 6-15 ms of CPU on the 2-core edge box,
and one Daphne process serves one request at a time for most of that (docs/performance.md, "API latency").
This ASGI layer answers the common case itself: a token (``Authorization: Token <key>``), JSON wanted, only
``page``/``status`` in the query. Authentication, visibility and the job or the page's job ids come from one
SQL statement on an asyncio PostgreSQL pool, shared by the requests waiting together (``_Shared``); a job is
rendered by the serializer's own fields (``job_representation``) and DRF's ``JSONRenderer`` once per version
of its row (only new or changed jobs are read, in a second statement), with the headers Django would add, so
the answer is the same bytes as DRF's (tests/test_readpath.py compares the two over the ownership matrix).

Everything else goes to Django unchanged: session cookies (the pages), anonymous, unknown or inactive tokens,
another user's job, a page out of range, an unknown status, a browser asking for HTML, an unexpected
parameter, SQLite (the embedded mode), and any database error. Those answers keep one implementation.
"""
from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import re
import weakref
from collections import OrderedDict
from contextvars import ContextVar
from urllib.parse import parse_qsl

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.db.models import JSONField
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.utils.urls import remove_query_param, replace_query_param

from .metrics import FAST_READS
from .models import Job, Status
from .serializers import job_representation

logger = logging.getLogger(__name__)

PATH = re.compile(r"^/api/jobs/(?:(?P<id>[1-9][0-9]{0,17})/)?$")
JSON_TYPES = {"application/json", "application/*", "*/*"}
PAGE = re.compile(r"^[1-9][0-9]{0,8}$")
RENDERED_JOBS = 4096  # jobs whose JSON is kept (a few MB)
HOSTS_KEPT = 64
ACCEPTS_KEPT = 64
BODIES_KEPT = 64  # per shared page statement: its bodies for the ways (URL, headers) it was asked
HOST_HEADERS = (b"host", b"x-forwarded-host")
JOINED_HEADERS = (b"authorization", b"accept")  # read here; sent twice, they mean something else to Django
_ANSWERED, _PASSED = FAST_READS.labels("answered"), FAST_READS.labels("passed")
# Set where gedge_site/fast_lane.py has asked already and hands the request to Daphne: not asked twice. The
# mark is a one-shot token ([True], emptied by the first application task that sees it, the one Daphne starts
# for that request): Twisted starts the next request pipelined on the connection from the reply to this one,
# in a copy of this context, and that request is asked as usual.
PASSED_ON: ContextVar[list[bool] | None] = ContextVar("gedge_fast_read_passed_on", default=None)


def _taken_passed_on() -> bool:
    """Whether this request was handed on by the lane; the mark is used up."""
    token = PASSED_ON.get()
    if token:
        token.clear()
        return True
    return False


def enabled() -> bool:
    return settings.GEDGE_FAST_READS and _on_postgresql()


@functools.cache
def _on_postgresql() -> bool:
    # Asked once: under ASGI every request runs in a context of its own, and ``connections["default"]`` would
    # build a new DatabaseWrapper (a dozen objects in reference cycles) for each request, only to be collected
    # by the garbage collector later, in pauses of 20 ms and more under load.
    return connections["default"].vendor == "postgresql"


class _Sql:
    """The statements, built once from the models' metadata (custom user model and table names included)."""

    def __init__(self) -> None:
        _q = connections["default"].ops.quote_name
        user = get_user_model()
        fields = Job._meta.concrete_fields
        self.attnames = [f.attname for f in fields]
        self.json_columns = [i for i, f in enumerate(fields) if isinstance(f, JSONField)]
        names = {
            "users": _q(user._meta.db_table), "jobs": _q(Job._meta.db_table), "tokens": _q(Token._meta.db_table),
            "uid": _q(user._meta.pk.column), "name": _q(user._meta.get_field(user.USERNAME_FIELD).column),
            "active": _q(user._meta.get_field("is_active").column),
            "staff": _q(user._meta.get_field("is_staff").column),
            "owner": _q(Job._meta.get_field("user").column), "status": _q(Job._meta.get_field("status").column),
            "token_key": _q(Token._meta.get_field("key").column),
            "token_user": _q(Token._meta.get_field("user").column),
            # JSON columns as text, decoded by ``job`` as Django's JSONField decodes them.
            "job_cols": ", ".join(f"j.{_q(f.column)}" + ("::text" if isinstance(f, JSONField) else "")
                                  for f in fields),
        }
        # One row per (token, job id) asked for with a known active token: the job's owner and row version
        # (xmin) where this viewer may see it, else NULLs. The pairs come as two arrays: the requests waiting
        # together share the statement. As for a page, the job's columns are read only for a version of its
        # row not rendered yet (``rows``).
        self.detail = """
            SELECT r.key, r.id, v.{uid}, o.{name}, j.id, j.xmin::text
            FROM unnest(%(keys)s::text[], %(ids)s::bigint[]) AS r(key, id)
            JOIN {tokens} t ON t.{token_key} = r.key JOIN {users} v ON v.{uid} = t.{token_user}
            LEFT JOIN {jobs} j ON j.id = r.id AND (v.{staff} OR j.{owner} = v.{uid})
            LEFT JOIN {users} o ON o.{uid} = j.{owner}
            WHERE v.{active}""".format(**names)  # noqa: S608 - quoted model names only
        # One row per job of the page, each with the total and the job's id, owner and row version (xmin);
        # one row of NULLs where there is none; no row for an unknown token. The page's ids come from the
        # (user, id) index for a user and are joined to their rows after the LIMIT, so the cost follows the
        # page, not the user's whole history of jobs (which the count still walks, in the index). Staff see
        # every job: the two branches are gated by one-time filters on the viewer's flag. The jobs' columns
        # are not read here: a page is mostly jobs already rendered (see ``rendered``), and casting and
        # sending 50 wide rows cost PostgreSQL and this process more than the rest of the request.
        self.page = """
            WITH v AS (
                SELECT u.{uid}, u.{staff} FROM {tokens} t JOIN {users} u ON u.{uid} = t.{token_user}
                WHERE t.{token_key} = %(key)s AND u.{active}
            ), visible AS (
                SELECT j.id FROM {jobs} j
                WHERE NOT (SELECT {staff} FROM v) AND j.{owner} = (SELECT {uid} FROM v)
                    AND (%(status)s::text IS NULL OR j.{status} = %(status)s)
                UNION ALL
                SELECT j.id FROM {jobs} j
                WHERE (SELECT {staff} FROM v) AND (%(status)s::text IS NULL OR j.{status} = %(status)s)
            ), page AS (
                SELECT id FROM visible ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s
            )
            SELECT v.{uid}, (SELECT count(*) FROM visible), o.{name}, j.id, j.xmin::text
            FROM v LEFT JOIN page ON true LEFT JOIN {jobs} j ON j.id = page.id
            LEFT JOIN {users} o ON o.{uid} = j.{owner}
            ORDER BY j.id DESC""".format(**names)  # noqa: S608 - quoted model names only
        # The rows of jobs (of a page, or a job read) whose version is not rendered yet.
        self.rows = """
            SELECT o.{name}, j.xmin::text, {job_cols}
            FROM {jobs} j JOIN {users} o ON o.{uid} = j.{owner}
            WHERE j.id = ANY(%(ids)s)""".format(**names)  # noqa: S608 - quoted model names only
        self.user_model, self.username_field = user, user.USERNAME_FIELD
        self.id_column = self.attnames.index("id")
        self._rendered: OrderedDict[tuple[int, str], tuple[str, str, bytes]] = OrderedDict()

    def job(self, owner: str, values: tuple) -> Job:
        values = list(values)
        for i in self.json_columns:
            values[i] = None if values[i] is None else json.loads(values[i])
        job = Job.from_db("default", self.attnames, values)
        owner_user = self.user_model(pk=job.user_id, **{self.username_field: owner})
        Job.user.field.set_cached_value(job, owner_user)  # the serializer's "user" without a query
        return job

    def rendered(self, job_id: int, xmin: str, owner: str, tz: str) -> bytes | None:
        """The job's JSON if this version of its row has been rendered (for this owner name and time zone).

        ``xmin`` is the id of the transaction that wrote this version of the row: every UPDATE writes a new
        version, so a changed job (whatever column changed, ``version`` and ``updated_at`` included or not)
        has a new xmin, and readers outside a transaction only ever see its committed, final version. One
        entry per job and time zone: the newest version seen replaces the older one. (xmin is 32 bits: a
        stale entry could be taken for a new version only if it outlived 2**32 transactions and the job's
        next change landed on the same number; a restart of the web process clears the entries.)"""
        entry = self._rendered.get((job_id, tz))
        if entry is None or entry[0] != xmin or entry[1] != owner:
            return None
        self._rendered.move_to_end((job_id, tz))
        return entry[2]

    def render(self, owner: str, xmin: str, values: tuple, tz: str) -> bytes:
        """The job's JSON, exactly as DRF's JSONRenderer writes it, remembered for this version of its row."""
        job_id = values[self.id_column]
        body = self.rendered(job_id, xmin, owner, tz)
        if body is None:
            body = JSONRenderer().render(job_representation(self.job(owner, values)))
            self._rendered[(job_id, tz)] = (xmin, owner, body)
            self._rendered.move_to_end((job_id, tz))
            if len(self._rendered) > RENDERED_JOBS:
                self._rendered.popitem(last=False)
        return body


class _Page:
    """A page statement's rows, and the bodies built from them for the requests that shared it."""

    __slots__ = ("rows", "bodies")

    def __init__(self, rows: list[tuple]) -> None:
        self.rows, self.bodies = rows, {}


class _Shared:
    """Reads that the requests waiting together share: one statement answers all of them.

    A request joins the next statement to be sent, never one already sent: the batch closes when its
    statement gets a connection and goes out, so whatever was committed before a request arrived is in its
    answer, exactly as if it had read alone. Requests that come in while a statement is on its way wait for the
    next one, which goes out when the answer to the one before is in (or after GEDGE_FAST_READS_WAIT_S, if it
    is not): one statement of each kind on its way at a time. Under load, the requests that arrive during one
    round trip to PostgreSQL share the next statement instead of taking a pool connection and a round trip
    each; an idle server sends a request's statement at once.

    ``send(conn, keys)`` runs the statement for a batch's distinct keys on a pool connection and returns
    {key: value}; a key it leaves out reads as None. An error reaches every request of the batch."""

    def __init__(self, pool, send) -> None:
        self._pool, self._send = pool, send
        self._next: tuple[dict, asyncio.Future] | None = None  # (keys, their answer) not sent yet
        self._on_its_way: asyncio.Future | None = None  # the answer to the statement sent last
        self._sending: set[asyncio.Task] = set()

    def _join(self, keys) -> asyncio.Future:
        """Put ``keys`` in the next statement; the future is its answer, {key: value}."""
        if self._next is None:
            self._next = ({}, asyncio.get_running_loop().create_future())
            task = asyncio.ensure_future(self._run(self._next))
            self._sending.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._sending.discard)
        batch, answer = self._next
        for key in keys:
            batch[key] = None
        return answer

    async def read_all(self, keys) -> dict:
        """{key: value} for ``keys`` (and any other key of the same statement)."""
        # shield: a request that goes away does not cancel the statement the others wait for
        return await asyncio.shield(self._join(keys))

    async def read(self, key):
        return (await self.read_all((key,))).get(key)

    async def _run(self, batch: tuple[dict, asyncio.Future]) -> None:
        keys, answer = batch
        try:
            before = self._on_its_way
            if before is not None and not before.done():  # more requests join meanwhile
                await asyncio.wait([before], timeout=settings.GEDGE_FAST_READS_WAIT_S)
            pool = await self._pool()
            async with pool.connection(timeout=settings.GEDGE_FAST_READS_WAIT_S) as conn:
                if self._next is batch:
                    self._next = None  # sent: from here on, requests wait for the next statement
                self._on_its_way = answer
                result = await self._send(conn, list(keys))
        except asyncio.CancelledError:  # the loop is shutting down
            answer.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - every waiting request has it raised (Django answers)
            if self._next is batch:
                self._next = None
            answer.set_exception(error)
            answer.exception()  # retrieved here too: no "never retrieved" log when every waiter went away
        else:
            answer.set_result(result)


class FastJobReads:
    """ASGI middleware in front of Django's handler (gedge_site/asgi.py)."""

    def __init__(self, app) -> None:
        self.app = app
        self._pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> pool
        self._renderer = JSONRenderer()
        # The reads that requests waiting together share (``_Shared``): a job for (token, id); a page for
        # (token, status, limit, offset); the rows of jobs not rendered yet, by id.
        self._details = _Shared(self._pool, self._send_details)
        self._pages = _Shared(self._pool, self._send_pages)
        self._rows = _Shared(self._pool, self._send_rows)
        self._hosts: dict[tuple, bool] = {}  # (Host and X-Forwarded-Host headers, server) -> allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not _taken_passed_on():
            answer = await self.answer(scope)
            if answer is not None:
                await send({"type": "http.response.start", "status": 200, "headers": answer[0]})
                return await send({"type": "http.response.body", "body": answer[1]})
        return await self.app(scope, receive, send)

    async def answer(self, scope) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        """(headers, body) of the 200 for an HTTP ``scope`` this path answers; None: Django's to answer. Also
        called by gedge_site/fast_lane.py, before Daphne builds a scope of its own."""
        match = PATH.match(scope["path"]) if scope["method"] == "GET" else None
        if match is None or not enabled():
            return None
        try:
            answer = await self._answer(scope, match)
        except Exception:  # noqa: BLE001 - any trouble here: Django answers instead, with its own errors
            logger.debug("fast read passed to Django", exc_info=True)
            answer = None
        if answer is None:
            _PASSED.inc()
            return None
        _ANSWERED.inc()
        body, allow = answer
        return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"vary", b"Accept"), (b"allow", allow.encode()), *self._security_headers], body

    def _host_allowed(self, scope, hosts: tuple) -> bool:
        """ALLOWED_HOSTS, as Django's ``request.get_host()`` checks it, remembered per Host (a few distinct
        values in practice; past HOSTS_KEPT of them, checked each time). ``hosts``: every Host and
        X-Forwarded-Host header as sent (Django joins repeated ones, which no allowed host matches)."""
        key = (hosts, tuple(scope.get("server") or ()))
        allowed = self._hosts.get(key)
        if allowed is None:
            try:
                ASGIRequest(scope, io.BytesIO()).get_host()
                allowed = True
            except DisallowedHost:
                allowed = False
            if len(self._hosts) < HOSTS_KEPT:
                self._hosts[key] = allowed
        return allowed

    async def _answer(self, scope, match: re.Match) -> tuple[bytes, str] | None:
        headers, hosts = {}, []
        for key, value in scope["headers"]:
            key = key.lower()
            if key in headers and key in JOINED_HEADERS:
                return None  # Django joins repeated headers with commas: DRF's 401, or HTML for a browser
            headers.setdefault(key, value)
            if key in HOST_HEADERS:
                hosts.append((key, value))
        key = _token(headers.get(b"authorization"))
        if key is None or not _wants_json(headers.get(b"accept")):
            return None
        query_string = scope.get("query_string")
        query = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query_string else []
        params = dict(query)
        if len(params) != len(query):
            return None
        if not self._host_allowed(scope, tuple(hosts)):
            return None
        if match["id"]:
            if params:
                return None
            row = await self._details.read((key, int(match["id"])))
            if row is None or row[2] is None:
                return None  # unknown token, or not this viewer's job: Django's 401/404
            _, owner, job_id, xmin = row
            jobs = await self._render_jobs([(owner, job_id, xmin)], _time_zone())
            return None if jobs is None else (jobs[0], "GET, HEAD, OPTIONS")
        if set(params) - {"page", "status"}:
            return None
        status = params.get("status")
        page = params.get("page", "1")
        if (status is not None and status not in Status.values) or not PAGE.match(page):
            return None
        size = api_settings.PAGE_SIZE
        number = int(page)
        read = await self._pages.read((key, status, size, (number - 1) * size))
        if read is None:
            return None  # unknown token
        rows = read.rows
        empty = rows[0][2] is None
        if empty and number > 1:
            return None  # past the last page: Django's 404
        # The requests that shared this page's statement and came the same way (the same URL, headers and
        # time zone) get the same bytes: built once.
        tz = _time_zone()
        same = (scope.get("scheme"), scope.get("root_path"), scope["path"], scope.get("query_string"),
                tuple(scope["headers"]), tz)
        body = read.bodies.get(same)
        if body is None:
            body = await self._page_body(scope, rows, number, size, empty, tz)
            if body is None:
                return None
            if len(read.bodies) < BODIES_KEPT:
                read.bodies[same] = body
        return body, "GET, POST, HEAD, OPTIONS"

    async def _page_body(self, scope, rows: list[tuple], number: int, size: int, empty: bool,
                         tz: str) -> bytes | None:
        count = 0 if empty else rows[0][1]
        url = ASGIRequest(scope, io.BytesIO()).build_absolute_uri()
        pages = max(1, -(-count // size))
        doc = {
            "count": count,
            "next": replace_query_param(url, "page", number + 1) if number < pages else None,
            "previous": None if number == 1 else (remove_query_param(url, "page") if number == 2
                                                  else replace_query_param(url, "page", number - 1)),
            "results": [],
        }
        # json.dumps is compositional: the page is its frame with the (cached) jobs spliced into "results".
        frame = self._renderer.render(doc)
        jobs = [] if empty else await self._render_jobs([row[2:] for row in rows], tz)  # (owner, job id, xmin)
        if jobs is None:
            return None
        return frame[:-2] + b",".join(jobs) + frame[-2:]

    async def _render_jobs(self, jobs: list[tuple[str, int, str]], tz: str) -> list[bytes] | None:
        """The JSON of ``jobs`` (owner, job id, xmin), in order: rendered ones from memory, the rest (new or
        changed jobs) read in one statement (shared with the requests waiting together) and rendered. None
        where a job went away in between (Django answers then)."""
        sql = self.sql
        bodies = [sql.rendered(job_id, xmin, owner, tz) for owner, job_id, xmin in jobs]
        missing = [job_id for (_, job_id, _), body in zip(jobs, bodies, strict=True) if body is None]
        if not missing:
            return bodies
        read = await self._rows.read_all(missing)
        fresh = {}
        for job_id in missing:
            row = read.get(job_id)
            if row is None:
                return None
            owner, xmin, values = row  # xmin: the version on the page, or a newer one committed since
            fresh[job_id] = sql.render(owner, xmin, values, tz)
        return [fresh[job_id] if body is None else body
                for (_, job_id, _), body in zip(jobs, bodies, strict=True)]

    async def _send_details(self, conn, keys: list[tuple[str, int]]) -> dict:
        cursor = await conn.execute(self.sql.detail, {"keys": [k for k, _ in keys], "ids": [i for _, i in keys]})
        return {(key, job_id): row for key, job_id, *row in await cursor.fetchall()}

    async def _send_pages(self, conn, keys: list[tuple]) -> dict:
        """One statement per distinct page: mostly one (many clients polling the same list). Several (users
        polling lists of their own) are pipelined, all sent before the first answer is waited for, half of
        them on a second connection from the pool, so that PostgreSQL runs the two halves side by side."""
        if len(keys) == 1:
            return await self._pages_on(conn, keys)
        half = len(keys) // 2

        async def second_half() -> dict:
            pool = await self._pool()
            async with pool.connection(timeout=settings.GEDGE_FAST_READS_WAIT_S) as other:
                return await self._pages_on(other, keys[half:])

        first, second = await asyncio.gather(self._pages_on(conn, keys[:half]), second_half())
        return {**first, **second}

    async def _pages_on(self, conn, keys: list[tuple]) -> dict:
        async def execute(key):
            token, status, limit, offset = key
            return await conn.execute(self.sql.page, {"key": token, "status": status, "limit": limit,
                                                      "offset": offset})

        if len(keys) == 1:
            cursors = [await execute(keys[0])]
        else:
            async with conn.pipeline():
                cursors = [await execute(key) for key in keys]
        pages = {}
        for key, cursor in zip(keys, cursors, strict=True):
            rows = await cursor.fetchall()
            pages[key] = _Page(rows) if rows else None  # no row: an unknown token
        return pages

    async def _send_rows(self, conn, ids: list[int]) -> dict:
        column = self.sql.id_column
        cursor = await conn.execute(self.sql.rows, {"ids": ids})
        return {values[column]: (owner, xmin, tuple(values)) for owner, xmin, *values in await cursor.fetchall()}

    @functools.cached_property
    def sql(self) -> _Sql:
        return _Sql()  # on first use: the models' metadata is complete by then

    async def _pool(self):
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            from psycopg_pool import AsyncConnectionPool

            db = connections["default"].settings_dict  # the test database's name under pytest
            kwargs = {k: v for k, v in {"dbname": db["NAME"], "user": db["USER"], "password": db["PASSWORD"],
                                        "host": db["HOST"], "port": db["PORT"]}.items() if v}
            kwargs.update(autocommit=True, options="-c TimeZone=UTC")
            # All the connections kept open (min = max): a burst after a quiet spell, or the first one after
            # a start, does not wait for new PostgreSQL connections (psycopg_pool closes idle ones above the
            # minimum after 10 minutes).
            size = settings.GEDGE_FAST_READS_POOL
            pool = AsyncConnectionPool(kwargs=kwargs, min_size=size, max_size=size, open=False,
                                       name="gedge-fast-reads")
            self._pools[loop] = pool
            await pool.open()
        return pool

    async def close(self) -> None:
        """Close this event loop's pool (tests; a server's pools end with its process)."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

    @functools.cached_property
    def _security_headers(self) -> list[tuple[bytes, bytes]]:
        return _security_headers()  # from settings that do not change while the process runs


def _time_zone() -> str:
    """The time zone dates are shown in. The read path runs before Django's middleware, where nothing has
    activated another zone: Django's current zone there is the default one (settings.TIME_ZONE)."""
    return timezone.get_default_timezone_name()


def _token(value: bytes | None) -> str | None:
    """DRF's TokenAuthentication parsing: ``Token <key>``, the keyword in any case, exactly two words."""
    if not value:
        return None
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() != b"token":
        return None
    try:
        return parts[1].decode()
    except UnicodeError:
        return None


def _wants_json(accept: bytes | None) -> bool:
    """No Accept, or only JSON / wildcards: DRF would pick its JSONRenderer (HTML gets the browsable API)."""
    return not accept or _only_json(accept)


@functools.lru_cache(maxsize=ACCEPTS_KEPT)  # clients send a few distinct Accept values: each parsed once
def _only_json(accept: bytes) -> bool:
    types = {part.split(b";")[0].strip().decode("latin-1").lower() for part in accept.split(b",")}
    return bool(types) and types <= JSON_TYPES


def _security_headers() -> list[tuple[bytes, bytes]]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to every Django response, from the same settings."""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        policy = policy if isinstance(policy, str) else ",".join(policy)
        headers.append((b"referrer-policy", policy.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()))
    headers.append((b"x-frame-options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper().encode()))
    return headers
