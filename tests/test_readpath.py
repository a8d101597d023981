"""The event-loop read path (jobs/readpath.py) answers exactly as DRF does, or leaves the request to Django.

Two real Daphne processes on the test database: one as deployed, one with the read path switched off
(GEDGE_FAST_READS=false), so every answer comes from Django and DRF. Each request goes to both; status, body
bytes and the headers a client acts on must be equal, and the first server's /metrics tells whether the read
path answered it or passed it on.
"""
from __future__ import annotations

import json
import re
import sys
from datetime import timedelta

import pytest
import requests
from django.db import connection
from django.test import Client
from django.utils import timezone

from jobs.models import Job, Status

from .conftest import fast_read_counts, free_port, service_env, token_for, wait_for_port

pytestmark = pytest.mark.django_db(transaction=True)  # the servers read what the test wrote

COMPARED_HEADERS = {"content-type", "content-length", "vary", "allow", "x-frame-options",
                    "x-content-type-options", "referrer-policy", "cross-origin-opener-policy"}


def seed(owner, other) -> dict[str, int]:
    now = timezone.now()
    rich = Job.objects.create(
        user=owner, path="uploads/a.mp4", type="mp4/mov", original_name="rue\u2028de la paix \u00e9t\u00e9.mp4",
        status=Status.EXIT, started_at=now - timedelta(seconds=3), ended_at=now, iteration=1, width=1280,
        height=720, fps=29.97, frame_count=84, duration_s=2.8, preprocess_done=84, inference_done=84,
        postprocess_done=84, stage_ms={"preprocess": 410.5, "inference": 1200}, params={"score": 0.3},
        summary={"detections": 1205, "per_class": {"person": 1148, "car": 9}}, model_name="yolox_nano.onnx",
        error="", version=17)
    running = Job.objects.create(user=owner, path="uploads/b.mp4", original_name="b.mp4",
                                 status=Status.INFERENCING, frame_count=84, preprocess_done=84, inference_done=40,
                                 started_at=now)
    Job.objects.bulk_create([Job(user=owner, path=f"uploads/{i}.mp4", original_name=f"{i}.mp4")
                             for i in range(55)])  # more than one page of 50
    theirs = Job.objects.create(user=other, path="uploads/c.mp4", original_name="c.mp4", status=Status.FAILED,
                                error="inference failed: boom")
    return {"rich": rich.pk, "running": running.pk, "theirs": theirs.pk}


class Servers:
    """The deployed web process and a reference one without the read path."""

    def __init__(self, processes, media_root) -> None:
        self.fast, self.reference = free_port(), free_port()
        for name, port, switch in (("web-fast", self.fast, "true"), ("web-reference", self.reference, "false")):
            processes.start(name, [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                   "gedge_site.asgi:application"], service_env(media_root, GEDGE_FAST_READS=switch))
        for port in (self.fast, self.reference):
            wait_for_port(port)
        self.http = requests.Session()

    def counts(self) -> dict[str, float]:
        return fast_read_counts(self.http, self.fast)

    def get(self, port: int, path: str, headers: dict) -> requests.Response:
        return self.http.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10, allow_redirects=False)

    def both(self, path: str, headers: dict) -> tuple[requests.Response, requests.Response, str]:
        """(read path's answer, Django's answer, "answered" or "passed")."""
        headers = {"Host": "localhost", **headers}  # the same absolute URLs (pagination links) from both
        before = self.counts()
        fast = self.get(self.fast, path, headers)
        after = self.counts()
        reference = self.get(self.reference, path, headers)
        moved = [k for k in after if after[k] != before[k]]
        return fast, reference, ",".join(moved)


def visible_headers(response: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() in COMPARED_HEADERS}


def test_same_answers_as_drf_and_only_for_what_it_is_for(owner, other, staff, django_user_model, processes,
                                                         media_root):
    ids = seed(owner, other)
    inactive = django_user_model.objects.create_user(username="gone", is_active=False)
    mine, theirs = f"/api/jobs/{ids['rich']}/", f"/api/jobs/{ids['theirs']}/"
    as_owner = {"Authorization": f"Token {token_for(owner)}"}
    as_other = {"Authorization": f"token {token_for(other)}"}  # the keyword in any case, as DRF takes it
    as_staff = {"Authorization": f"Token {token_for(staff)}"}
    client = Client()
    client.force_login(owner)
    by_cookie = {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}

    answered_here = [
        (mine, as_owner), (f"/api/jobs/{ids['running']}/", as_owner), (mine, as_staff), (theirs, as_staff),
        (theirs, as_other), (mine, {**as_owner, "Accept": "application/json"}),
        (mine, {**as_owner, "Accept": "*/*"}),
        ("/api/jobs/", as_owner), ("/api/jobs/?page=2", as_owner), ("/api/jobs/?page=1&status=Exit", as_owner),
        ("/api/jobs/?status=Inferencing", as_owner), ("/api/jobs/", as_staff), ("/api/jobs/?page=2", as_staff),
        ("/api/jobs/", as_other), ("/api/jobs/?status=Exit", as_other),
    ]
    left_to_django = [
        (theirs, as_owner), (mine, as_other),  # another user's job: 404 from Django, not probeable
        ("/api/jobs/999999/", as_owner), (mine, {}), (mine, {"Authorization": "Token nope"}),
        (mine, {"Authorization": f"Token {token_for(inactive)}"}),
        (mine, {"Authorization": f"Bearer {token_for(owner)}"}), (mine, by_cookie),
        ("/api/jobs/", by_cookie), ("/api/jobs/?page=3", as_owner), ("/api/jobs/?page=0", as_owner),
        ("/api/jobs/?page=last", as_owner), ("/api/jobs/?status=Bogus", as_owner), ("/api/jobs/?x=1", as_owner),
        (f"{mine}?format=json", as_owner), ("/api/jobs/?page=1&page=2", as_owner),
        (mine, {**as_owner, "Accept": "text/html"}),
        # a Host not in ALLOWED_HOSTS: Django's 400, every time (the read path remembers its checks per Host)
        (mine, {**as_owner, "Host": "evil.example"}), (mine, {**as_owner, "Host": "evil.example"}),
        ("/api/jobs/", {**as_owner, "Host": "evil.example"}),
    ]
    not_its_urls = [(f"{mine}events/", as_owner), (mine.rstrip("/"), as_owner), ("/api/jobs/x/", as_owner)]
    servers = Servers(processes, media_root)
    for route, cases in (("answered", answered_here), ("passed", left_to_django), ("", not_its_urls)):
        for path, headers in cases:
            fast, reference, seen = servers.both(path, headers)
            case = (path, sorted(headers.keys()))  # keys only: no secrets in the report
            assert seen == route, case
            assert fast.status_code == reference.status_code, case
            if fast.headers["Content-Type"].startswith("text/html"):  # the browsable API: a new CSRF token each time
                assert reference.headers["Content-Type"] == fast.headers["Content-Type"], case
                continue
            assert fast.content == reference.content, case
            assert visible_headers(fast) == visible_headers(reference), case
            if route == "answered":
                assert fast.status_code == 200, case

    host = f"127.0.0.1:{servers.fast}"
    page1 = servers.http.get(f"http://{host}/api/jobs/", headers=as_owner, timeout=10).json()
    page2 = servers.http.get(f"http://{host}/api/jobs/?page=2", headers=as_owner, timeout=10).json()
    # Without a Host header of the client's choosing, the links point at the server as the client reached it.
    assert page1["count"] == page2["count"] == 57
    assert len(page1["results"]) == 50 and len(page2["results"]) == 7
    assert page1["next"] == f"http://{host}/api/jobs/?page=2" and page2["previous"] == f"http://{host}/api/jobs/"
    raw = servers.http.get(f"http://{host}{mine}", headers=as_owner, timeout=10).content
    rich = json.loads(raw)
    assert rich["original_name"] == "rue\u2028de la paix \u00e9t\u00e9.mp4" and rich["version"] == 17
    assert b"\\u2028" in raw  # escaped, as DRF's renderer does


    # A change that leaves version and updated_at as they were (QuerySet.update skips auto_now) is seen at once,
    # in the job and in the page (both rendered before): the rendered JSON is kept per version of the row.
    running = f"/api/jobs/{ids['running']}/"
    page2 = "/api/jobs/?page=2"  # the older jobs: the rich and the running one
    before = servers.both(running, as_owner)[0].content
    page_before = servers.both(page2, as_owner)[0].content
    Job.objects.filter(pk=ids["running"]).update(inference_done=41)
    for path in (page2, running, page2):  # the page first, then the job, then the page again
        fast, reference, seen = servers.both(path, as_owner)
        assert seen == "answered" and fast.content == reference.content, path
        assert b'"inference":41' in fast.content and fast.content not in (before, page_before), path
    Job.objects.filter(pk=ids["rich"]).update(summary={"detections": 1})  # a JSON column, page first
    fast, reference, seen = servers.both(page2, as_owner)
    assert seen == "answered" and fast.content == reference.content and b'"summary":{"detections":1}' in fast.content
    # The owner's name is not in the job's row; a renamed owner is seen at once too.
    type(owner).objects.filter(pk=owner.pk).update(username="renamed-owner")
    for path in (page2, running):
        fast, reference, seen = servers.both(path, as_owner)
        assert seen == "answered" and fast.content == reference.content, path
        assert b'"user":"renamed-owner"' in fast.content, path

    # The reference server, switched off, never answered anything itself.
    text = servers.http.get(f"http://127.0.0.1:{servers.reference}/metrics", timeout=10).text
    answered = re.findall(r'^gedge_api_fast_reads_total\{result="answered"\} (\S+)$', text, re.M)
    assert answered in ([], ["0.0"])


def test_a_fast_read_leaves_no_garbage_for_the_collector(owner):
    """Each request runs in a context of its own (as under Daphne); nothing per request may be left in reference
    cycles, or the web process pays for it in collector pauses that every request waits behind (it once built
    a Django DatabaseWrapper per request, a dozen objects in cycles, 20 ms pauses under load)."""
    import asyncio
    import gc

    job = Job.objects.create(user=owner, path="uploads/a.mp4", original_name="a.mp4")
    app, get, _ = in_process_reads(owner)

    async def run() -> list:
        paths = [f"/api/jobs/{job.pk}/", "/api/jobs/"]
        for path in paths:  # warm: the pool, the statements, the render cache
            await get(path)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                for path in paths:
                    await get(path)
            gc.collect()
            return [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            await app.close()

    assert asyncio.run(run()) == []


def in_process_reads(user):
    """The read path in this process, in front of a Django stub that records the paths passed to it.

    ``get`` runs one request in a task of its own (a context of its own, as under Daphne) with the given Host
    headers and returns the body; a request passed to Django fails the test unless ``must_answer=False``, when
    it returns None."""
    import asyncio

    from jobs.readpath import FastJobReads

    auth = (b"authorization", f"Token {token_for(user)}".encode())
    passed = []

    async def django(scope, receive, send):
        passed.append(scope["path"])

    app = FastJobReads(django)

    async def get(path: str, hosts: tuple[bytes, ...] = (b"127.0.0.1",), must_answer: bool = True) -> bytes | None:
        sent = []

        async def send(message):
            sent.append(message)

        path, _, query = path.partition("?")
        scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(),
                 "headers": [*((b"host", host) for host in hosts), auth],
                 "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000)}
        await asyncio.create_task(app(scope, None, send))
        if not sent:
            assert not must_answer, f"passed to Django: {path}"
            return None
        assert sent[0]["status"] == 200
        return sent[1]["body"]

    return app, get, passed


def recorded(shared, hold=None) -> list[list]:
    """The keys of every statement that ``shared`` (one of the read path's ``_Shared`` reads) sends from now on.
    ``hold(n)``, if given, is awaited after the n-th statement has read its rows, before its answer is given."""
    sent, send = [], shared._send

    async def record(conn, keys):
        sent.append(list(keys))
        rows = await send(conn, keys)
        if hold is not None:
            await hold(len(sent))
        return rows

    shared._send = record
    return sent


def test_requests_together_share_one_read_of_a_changed_job(owner):
    """Clients polling the list together just after a job changed: the changed row is read once for all of
    them, not once per request, and every one of them sees the change."""
    import asyncio

    jobs = [Job.objects.create(user=owner, path=f"uploads/{i}.mp4", original_name=f"{i}.mp4", frame_count=84)
            for i in range(3)]
    app, get, _ = in_process_reads(owner)
    reads = recorded(app._rows)

    async def together(n: int) -> list[bytes]:
        try:
            return await asyncio.gather(*(get("/api/jobs/") for _ in range(n)))
        finally:
            await app.close()

    before = asyncio.run(together(1))[0]
    assert [sorted(ids) for ids in reads] == [sorted(j.pk for j in jobs)]  # the first page: every job read once
    Job.objects.filter(pk=jobs[1].pk).update(inference_done=7)
    reads.clear()
    after = asyncio.run(together(16))
    assert reads == [[jobs[1].pk]]
    assert len(set(after)) == 1 and after[0] != before and b'"inference":7' in after[0]


def test_repeated_host_headers_are_left_to_django(owner):
    """Django joins a repeated Host header ("localhost,evil.example"), which no allowed host matches: 400. The
    read path, which remembers its host checks, must not take the first Host alone."""
    import asyncio

    job = Job.objects.create(user=owner, path="uploads/a.mp4", original_name="a.mp4")
    app, get, passed = in_process_reads(owner)
    path = f"/api/jobs/{job.pk}/"

    async def run() -> list[bool]:
        """Whether the read path answered each (rather than passing it to Django)."""
        try:
            return [await get(path, hosts, must_answer=False) is not None
                    for hosts in ((b"localhost",), (b"localhost", b"evil.example"), (b"localhost",),
                                  (b"evil.example",))]
        finally:
            await app.close()

    assert asyncio.run(run()) == [True, False, True, False]
    assert len(passed) == 2


def test_requests_waiting_together_share_one_statement(owner, other):
    """Many clients polling at once: the requests that arrive together are answered by one statement (for
    every job and viewer among them), each with its own answer."""
    import asyncio

    mine = [Job.objects.create(user=owner, path=f"uploads/{i}.mp4", original_name=f"{i}.mp4", inference_done=i)
            for i in range(2)]
    theirs = Job.objects.create(user=other, path="uploads/t.mp4", original_name="t.mp4")
    app, get, passed = in_process_reads(owner)
    statements = recorded(app._details)
    paths = [f"/api/jobs/{job.pk}/" for job in (*mine, theirs)] * 8

    async def together() -> list[bytes | None]:
        try:
            return await asyncio.gather(*(get(path, must_answer=False) for path in paths))
        finally:
            await app.close()

    answers = asyncio.run(together())
    assert [sorted(job_id for _, job_id in keys) for keys in statements] == [sorted(job.pk for job in (*mine, theirs))]
    for path, answer in zip(paths, answers, strict=True):
        if path.endswith(f"/{theirs.pk}/"):
            assert answer is None  # another user's job: Django's 404
        else:
            job = json.loads(answer)
            assert path.endswith(f"/{job['id']}/") and job["stage_progress"]["inference"] == mine.index(
                next(j for j in mine if j.pk == job["id"]))
    assert passed == [f"/api/jobs/{theirs.pk}/"] * 8


def test_a_request_never_shares_a_statement_sent_before_it_arrived(owner):
    """A request that arrives while a statement is on its way waits for the next one: a change committed before
    it arrived is in its answer, as if it had read alone."""
    import asyncio

    job = Job.objects.create(user=owner, path="uploads/a.mp4", original_name="a.mp4", frame_count=84)
    app, get, _ = in_process_reads(owner)
    path = f"/api/jobs/{job.pk}/"
    read, release = asyncio.Event(), asyncio.Event()

    async def hold(n: int) -> None:  # the second statement has read the row's version; its answer is held
        if n == 2:
            read.set()
            await release.wait()

    statements = recorded(app._details, hold)

    def change() -> None:  # committed from another thread, as another process would
        try:
            Job.objects.filter(pk=job.pk).update(inference_done=9)
        finally:
            connection.close()

    async def run() -> tuple[dict, dict]:
        try:
            await get(path)  # the job as it is now, rendered and remembered
            first = asyncio.ensure_future(get(path))
            await read.wait()
            await asyncio.to_thread(change)
            second = asyncio.ensure_future(get(path))  # arrives after the change, while the first is on its way
            await asyncio.sleep(0.05)
            release.set()
            return json.loads(await first), json.loads(await second)
        finally:
            await app.close()

    first, second = asyncio.run(run())
    assert len(statements) == 3  # the second request's statement went out after the first's
    assert first["stage_progress"]["inference"] == 0  # the version it read (remembered, rendered)
    assert second["stage_progress"]["inference"] == 9


def test_requests_that_arrive_while_a_statement_is_on_its_way_share_the_next(owner):
    """One statement of a kind on its way at a time: the requests that arrive meanwhile, each in a turn of
    the event loop of its own, go out together in the next one."""
    import asyncio

    jobs = [Job.objects.create(user=owner, path=f"uploads/{i}.mp4", original_name=f"{i}.mp4") for i in range(5)]
    app, get, _ = in_process_reads(owner)
    release = asyncio.Event()

    async def hold(n: int) -> None:  # the first statement's answer is held
        if n == 1:
            await release.wait()

    statements = recorded(app._details, hold)

    async def run() -> list[bytes]:
        try:
            first = asyncio.ensure_future(get(f"/api/jobs/{jobs[0].pk}/"))
            for _ in range(5000):  # its statement on its way (the pool's first connection may take a while)
                if statements:
                    break
                await asyncio.sleep(0.001)
            later = []
            for job in jobs[1:]:
                await asyncio.sleep(0.01)
                later.append(asyncio.ensure_future(get(f"/api/jobs/{job.pk}/")))
            release.set()
            return await asyncio.gather(first, *later)
        finally:
            await app.close()

    answers = asyncio.run(run())
    assert [sorted(job_id for _, job_id in keys) for keys in statements] == [[jobs[0].pk],
                                                                            sorted(job.pk for job in jobs[1:])]
    assert [json.loads(answer)["id"] for answer in answers] == [job.pk for job in jobs]


def test_distinct_pages_asked_together_are_answered_together(owner):
    """Several lists at once (other pages, other filters): one batch, pipelined over two connections, and each
    request gets the page it asked for, the same bytes as when it asks alone."""
    import asyncio

    Job.objects.bulk_create([Job(user=owner, path=f"uploads/{i}.mp4", original_name=f"{i}.mp4",
                                 status=Status.EXIT if i % 3 else Status.FAILED) for i in range(70)])
    app, get, _ = in_process_reads(owner)
    batches = recorded(app._pages)
    paths = ["/api/jobs/", "/api/jobs/?page=2", "/api/jobs/?status=Failed", "/api/jobs/?status=Exit",
             "/api/jobs/?status=Enqueue"]

    async def run() -> tuple[list[bytes], list[bytes]]:
        try:
            together = await asyncio.gather(*(get(path) for path in paths))
            alone = [await get(path) for path in paths]
            return together, alone
        finally:
            await app.close()

    together, alone = asyncio.run(run())
    assert [len(keys) for keys in batches] == [len(paths)] + [1] * len(paths)
    assert together == alone
    counts = [json.loads(body)["count"] for body in together]
    assert counts == [70, 70, 24, 46, 0]
    assert [len(json.loads(body)["results"]) for body in together] == [50, 20, 24, 46, 0]


def test_a_request_handed_on_by_the_lane_is_not_asked_again_but_the_next_one_is():
    """The lane asked the read path, got no answer and handed the request to Daphne: Daphne's application task
    for it does not ask again. Twisted starts the next request pipelined on that connection from the reply to
    this one, so that request's task is created in a copy of this one's context: it is asked as usual (it was
    answered by Django, in DRF's own header order, when the mark was a plain flag copied along)."""
    import asyncio

    from jobs.readpath import PASSED_ON, FastJobReads

    asked, reached_django = [], []

    async def django_app(scope, receive, send):
        reached_django.append(scope["path"])
        if scope["path"] == "/api/jobs/1/":  # the reply to the first request starts the pipelined one
            await asyncio.ensure_future(reads({**scope, "path": "/api/jobs/2/"}, receive, send))

    reads = FastJobReads(django_app)

    async def answer(scope):
        asked.append(scope["path"])

    reads.answer = answer

    async def lane_hands_on():
        passed = PASSED_ON.set([True])  # as gedge_site/fast_lane.py does
        try:
            task = asyncio.ensure_future(reads({"type": "http", "path": "/api/jobs/1/"}, None, None))
        finally:
            PASSED_ON.reset(passed)
        await task

    asyncio.run(lane_hands_on())
    assert asked == ["/api/jobs/2/"] and reached_django == ["/api/jobs/1/", "/api/jobs/2/"]
