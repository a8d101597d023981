"""The job socket /ws/jobs/ through the real ASGI application (origin check, session auth, routing) and the
configured channel layer (Redis under `make test`, as in production)."""
from __future__ import annotations

import time

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.db.models import F
from django.test import Client
from rest_framework.test import APIClient

from gedge_site.asgi import application
from jobs.lifecycle.broadcast import push_job
from jobs.lifecycle.transitions import transition
from jobs.models import Job, Status

pytestmark = pytest.mark.django_db(transaction=True)  # the consumer reads the database from another thread

ORIGIN = b"http://127.0.0.1"
TIMEOUT = 5


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def socket(user=None, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if user is not None:
        headers.append((b"cookie", session_cookie(user)))
    return WebsocketCommunicator(application, "/ws/jobs/", headers=headers)


def make_job(user, **fields) -> Job:
    return Job.objects.create(user=user, path="uploads/a.mp4", type="mp4/mp4", original_name="a.mp4",
                              frame_count=84, **fields)


async def connect(communicator: WebsocketCommunicator) -> list[dict]:
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    snapshot = await communicator.receive_json_from(timeout=TIMEOUT)
    assert snapshot["type"] == "snapshot"
    return snapshot["jobs"]


def test_anonymous_connection_is_refused():
    communicator = socket(None)

    async def scenario():
        connected, code = await communicator.connect(timeout=TIMEOUT)
        assert not connected and code == 4401
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_connection_from_a_foreign_origin_is_refused(owner):
    communicator = socket(owner, origin=b"http://evil.example")

    async def scenario():
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert not connected
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_bad_messages_are_answered_and_snapshots_are_rationed(owner, redis_clean):
    """What a page (or anyone with a session) sends that is not a snapshot request gets an error message, and
    the socket stays open; snapshot requests past one a second are refused, not answered."""
    make_job(owner)
    communicator = socket(owner)

    async def scenario():
        await connect(communicator)
        for frame, code in (({"text_data": "not json"}, "bad_message"), ({"text_data": "[1, 2]"}, "bad_message"),
                            ({"text_data": "7"}, "bad_message"), ({"bytes_data": b"\x00\x01"}, "bad_message"),
                            ({"text_data": '{"type": "delete_everything"}'}, "unknown_type")):
            await communicator.send_to(**frame)
            answer = await communicator.receive_json_from(timeout=TIMEOUT)
            assert answer["type"] == "error" and answer["error"]["code"] == code, frame
        await communicator.send_json_to({"type": "snapshot"})
        assert len((await communicator.receive_json_from(timeout=TIMEOUT))["jobs"]) == 1
        for _ in range(20):  # a flood
            await communicator.send_json_to({"type": "snapshot"})
        answers = [await communicator.receive_json_from(timeout=TIMEOUT) for _ in range(20)]
        assert {a["type"] for a in answers} == {"error"}
        assert {a["error"]["code"] for a in answers} == {"too_many_snapshots"}
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_snapshot_on_connect_holds_the_users_jobs_in_the_api_shape(owner, other, redis_clean):
    mine = [make_job(owner), make_job(owner, status=Status.FAILED, error="boom")]
    make_job(other)
    api = APIClient()
    api.force_authenticate(owner)
    expected = [api.get(f"/api/jobs/{job.pk}/").json() for job in reversed(mine)]

    communicator = socket(owner)

    async def scenario():
        jobs = await connect(communicator)
        assert jobs == expected  # newest first, exactly what GET /api/jobs/{id}/ answers, version included
        # A page that suspects it missed pushes asks again and gets the same truth.
        await communicator.send_json_to({"type": "snapshot"})
        again = await communicator.receive_json_from(timeout=TIMEOUT)
        assert again == {"type": "snapshot", "jobs": expected}
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_updates_reach_the_owner_and_staff_only(owner, other, staff, redis_clean):
    owners_job, others_job = make_job(owner), make_job(other)

    sockets = {name: socket(user) for name, user in (("owner", owner), ("other", other), ("staff", staff))}

    async def scenario():
        snapshots = {name: await connect(s) for name, s in sockets.items()}
        assert [j["id"] for j in snapshots["owner"]] == [owners_job.pk]
        assert [j["id"] for j in snapshots["other"]] == [others_job.pk]
        assert [j["id"] for j in snapshots["staff"]] == [others_job.pk, owners_job.pk]

        # A real transition, pushed after commit as the workers do.
        await sync_to_async(transition)(owners_job.pk, Status.ENQUEUE, Status.PREPROCESSING)
        for name in ("owner", "staff"):
            message = await sockets[name].receive_json_from(timeout=TIMEOUT)
            assert message["type"] == "job.update"
            assert message["job"]["id"] == owners_job.pk and message["job"]["status"] == "Preprocessing"
            assert message["job"]["version"] == owners_job.version + 1
            assert 0 <= time.time() - message["committed_at"] < TIMEOUT  # stamped after the commit
        assert await sockets["other"].receive_nothing(timeout=1)

        await sync_to_async(transition)(others_job.pk, Status.ENQUEUE, Status.CANCELLED)
        assert (await sockets["other"].receive_json_from(timeout=TIMEOUT))["job"]["status"] == "Cancelled"
        assert (await sockets["staff"].receive_json_from(timeout=TIMEOUT))["job"]["id"] == others_job.pk
        assert await sockets["owner"].receive_nothing(timeout=1)
        for s in sockets.values():
            await s.disconnect()

    async_to_sync(scenario)()


def test_progress_pushes_carry_growing_versions(owner, redis_clean):
    job = make_job(owner, status=Status.INFERENCING)

    def progress(done: int) -> None:  # what a stage's progress callback stores and pushes
        Job.objects.filter(pk=job.pk).update(inference_done=done, version=F("version") + 1)
        push_job(Job.objects.get(pk=job.pk))

    communicator = socket(owner)

    async def scenario():
        await connect(communicator)
        versions = []
        for done in (8, 16, 24):
            await sync_to_async(progress)(done)
            message = await communicator.receive_json_from(timeout=TIMEOUT)
            assert message["job"]["stage_progress"]["inference"] == done
            versions.append(message["job"]["version"])
        assert versions == sorted(versions) and len(set(versions)) == 3
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_the_process_stays_subscribed_between_sockets(owner, redis_clean):
    """The last socket of a process closes (a user going from one page to the next), then the next one opens:
    the process's Redis pub/sub connection keeps a subscription in between (jobs/web/channel_layer.py), so
    channels_redis's receiver goes on waiting on Redis instead of looking every 100 ms, and the next socket's
    first pushes are not held back. Redis's own view is asked: PUBSUB CHANNELS and NUMSUB."""
    from django.conf import settings

    if settings.GEDGE_CHANNEL_LAYER != "pubsub":
        pytest.skip("the core layer blocks on Redis lists, it has no pub/sub receiver")
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    job = make_job(owner)
    watcher = redis.Redis.from_url(settings.REDIS_URL)

    def ours() -> list[bytes]:  # this process's channels_redis subscriptions, as Redis lists them
        return sorted(watcher.pubsub_channels(f"{prefix}*"))

    first, second, third = socket(owner), socket(owner), socket(owner)

    async def scenario():
        await connect(first)
        subscribed = await sync_to_async(ours)()
        kept = [name for name in subscribed if name.startswith(f"{prefix}kept.".encode())]
        assert len(kept) == 1 and len(subscribed) == 3  # the kept channel, the socket's own, the user's group
        await first.disconnect()
        assert await sync_to_async(ours)() == kept
        assert await sync_to_async(watcher.pubsub_numsub)(kept[0]) == [(kept[0], 1)]

        await connect(second)
        await connect(third)  # later sockets on the same loop keep no further channel
        assert len(await sync_to_async(ours)()) == 4  # kept, two sockets, the group
        await sync_to_async(transition)(job.pk, Status.ENQUEUE, Status.CANCELLED)
        for communicator in (second, third):
            assert (await communicator.receive_json_from(timeout=TIMEOUT))["job"]["status"] == "Cancelled"
            await communicator.disconnect()
        assert await sync_to_async(ours)() == kept

    async_to_sync(scenario)()


def _wait_past_recheck():
    from jobs.web.consumers import RECHECK_EVERY_S

    time.sleep(RECHECK_EVERY_S + 0.1)


@pytest.mark.parametrize("change", ["logout", "deactivated", "lost_view_job"])
def test_pushes_stop_when_the_session_or_the_permission_goes(owner, other, staff, redis_clean, change):
    """Permissions are checked again at pushes (at most once a second): a logged-out or deactivated user's socket
    is closed; one whose user lost jobs.view_job gets only their own jobs from then on."""
    from django.contrib.auth.models import Permission
    from django.contrib.sessions.models import Session

    theirs, mine = make_job(other), make_job(staff)
    communicator = socket(staff)

    async def scenario():
        await connect(communicator)
        await sync_to_async(push_job)(theirs)
        assert (await communicator.receive_json_from(timeout=TIMEOUT))["job"]["id"] == theirs.pk  # sees all
        if change == "logout":
            await sync_to_async(Session.objects.all().delete)()
        elif change == "deactivated":
            await sync_to_async(type(staff).objects.filter(pk=staff.pk).update)(is_active=False)
        else:
            view = await sync_to_async(Permission.objects.get)(codename="view_job")
            await sync_to_async(staff.user_permissions.remove)(view)
        await sync_to_async(_wait_past_recheck)()
        await sync_to_async(push_job)(theirs)
        if change == "lost_view_job":
            await sync_to_async(push_job)(mine)
            update = await communicator.receive_json_from(timeout=TIMEOUT)
            assert update["job"]["id"] == mine.pk, "another user's job after the permission went"
            await sync_to_async(push_job)(theirs)
            assert await communicator.receive_nothing(timeout=1)
        else:
            closed = await communicator.receive_output(timeout=TIMEOUT)
            assert closed == {"type": "websocket.close", "code": 4401}, closed
        await communicator.disconnect()

    async_to_sync(scenario)()
