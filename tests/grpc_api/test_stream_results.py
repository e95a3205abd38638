"""StreamResults over a real gRPC channel: checkpoints, live events, resume, filters, refusals,
cancellation and bursts of stream opens."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import StatusCode

from tests.fixtures.data_keys import ring_with_new_key
from tests.grpc_api.conftest import RunningServer
from tests.grpc_api.support import (
    CALLER_METADATA_KEY,
    bad_request,
    error_info,
    eventually,
    notification,
    notify,
    retry_info,
)
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.domain import decode_resume_token, encode_resume_token, utc_now
from vault_service.events import EventHub
from vault_service.grpc_api.servicer import VaultServicer
from vault_service.service import VaultingService
from vault_service.service.observations import from_notification
from vault_service.store import SQLiteStore

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

Stream = grpc.aio.UnaryStreamCall[pb.StreamResultsRequest, pb.StreamResultsResponse]


def open_stream(
    stub: VaultServiceAsyncStub, resume_token: str = "", ids: tuple[str, ...] = ()
) -> Stream:
    return stub.StreamResults(
        pb.StreamResultsRequest(resume_token=resume_token, vaulting_request_ids=ids)
    )


async def read(stream: Stream) -> pb.StreamResultsResponse:
    async with asyncio.timeout(5):
        message = await stream.read()
    assert isinstance(message, pb.StreamResultsResponse)
    return message


async def checkpoint(stream: Stream) -> pb.Checkpoint:
    message = await read(stream)
    assert message.WhichOneof("kind") == "checkpoint"
    return message.checkpoint


async def events(stream: Stream, count: int) -> list[pb.ResultEvent]:
    """The next ``count`` events of a stream, skipping checkpoints."""
    found: list[pb.ResultEvent] = []
    while len(found) < count:
        message = await read(stream)
        if message.WhichOneof("kind") == "event":
            found.append(message.event)
    return found


async def collect(stream: Stream, into: list[pb.StreamResultsResponse]) -> None:
    """Every message of a stream until it ends, kept in ``into`` even when it fails."""
    async for message in stream:
        into.append(message)


async def assert_quiet(stream: Stream) -> None:
    """Nothing more arrives for a moment (the stream's checkpoint interval is 30 s)."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await stream.read()


async def create(stub: VaultServiceAsyncStub, *ids: str, caller: str = "anonymous") -> None:
    for vaulting_request_id in ids:
        await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id=vaulting_request_id, labels={"k": "v"}),
            metadata=((CALLER_METADATA_KEY, caller),),
        )


def ids_of(found: list[pb.ResultEvent]) -> list[str]:
    return [event.result.vaulting_request_id for event in found]


async def test_first_message_is_a_checkpoint(stub: VaultServiceAsyncStub) -> None:
    """A stream from now opens with a checkpoint, so the client holds a cursor at once."""
    stream = open_stream(stub)
    first = await checkpoint(stream)
    assert first.resume_token
    assert first.HasField("checkpoint_time")
    stream.cancel()


async def test_live_events_arrive_in_order_with_full_results(
    stub: VaultServiceAsyncStub, vaulting: VaultingService
) -> None:
    """Events recorded while a stream is open arrive in recording order, each with its own
    token, its source and the full result (labels included)."""
    await create(stub, "vr-a", "vr-b")
    stream = open_stream(stub)
    await checkpoint(stream)
    await notify(vaulting, "vr-b", succeeded=False)
    await notify(vaulting, "vr-a")
    found = await events(stream, 2)
    assert ids_of(found) == ["vr-b", "vr-a"]
    assert [e.result.status for e in found] == [
        pb.VAULTING_STATUS_FAILED,
        pb.VAULTING_STATUS_SUCCEEDED,
    ]
    assert {e.source for e in found} == {pb.EVENT_SOURCE_NOTIFICATION}
    assert all(dict(e.result.labels) == {"k": "v"} for e in found)
    assert len({e.resume_token for e in found}) == 2
    stream.cancel()


async def test_resuming_from_an_event_replays_exactly_the_later_events(
    stub: VaultServiceAsyncStub, vaulting: VaultingService
) -> None:
    """From an event's token a new stream replays every later event once, in order, then
    continues live with no gap and no repeat at the seam."""
    await create(stub, "vr-1", "vr-2", "vr-3", "vr-4")
    live = open_stream(stub)
    await checkpoint(live)
    for vaulting_request_id in ("vr-1", "vr-2", "vr-3"):
        await notify(vaulting, vaulting_request_id)
    first, *_ = await events(live, 3)
    live.cancel()

    resumed = open_stream(stub, first.resume_token)
    await checkpoint(resumed)
    assert ids_of(await events(resumed, 2)) == ["vr-2", "vr-3"]
    await notify(vaulting, "vr-4")
    assert ids_of(await events(resumed, 1)) == ["vr-4"]
    await assert_quiet(resumed)


async def test_a_checkpoint_token_resumes_after_it(
    stub: VaultServiceAsyncStub, vaulting: VaultingService
) -> None:
    """A checkpoint's token is a cursor too: resuming from it gives what came after it."""
    await create(stub, "vr-before", "vr-after")
    await notify(vaulting, "vr-before")
    cursor = await checkpoint(open_stream(stub))
    await notify(vaulting, "vr-after")
    resumed = open_stream(stub, cursor.resume_token)
    await checkpoint(resumed)
    assert ids_of(await events(resumed, 1)) == ["vr-after"]
    await assert_quiet(resumed)


async def test_a_filtered_stream_only_sees_its_ids_and_its_callers(
    stub: VaultServiceAsyncStub, vaulting: VaultingService
) -> None:
    """A stream filtered on ids sees only those ids' events, and never another caller's."""
    await create(stub, "vr-wanted", "vr-other")
    await create(stub, "vr-theirs", caller="billing")
    filtered = open_stream(stub, ids=("vr-wanted", "vr-theirs"))
    everything = open_stream(stub)
    await checkpoint(filtered)
    await checkpoint(everything)
    for vaulting_request_id in ("vr-other", "vr-theirs", "vr-wanted"):
        await notify(vaulting, vaulting_request_id)
    assert ids_of(await events(filtered, 1)) == ["vr-wanted"]
    assert ids_of(await events(everything, 2)) == ["vr-other", "vr-wanted"]
    await assert_quiet(filtered)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        encode_resume_token("another-deployment", 1),
        "v1." + "A" * 300,
    ],
)
async def test_malformed_and_foreign_tokens_are_refused_before_any_message(
    stub: VaultServiceAsyncStub, token: str
) -> None:
    """A token that is not ours is INVALID_ARGUMENT naming resume_token, with no message sent
    first: never a silent start "from now"."""
    stream = open_stream(stub, token)
    received: list[pb.StreamResultsResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await collect(stream, received)
    assert received == []
    assert refused.value.code() is StatusCode.INVALID_ARGUMENT
    assert set(bad_request(refused.value)) == {"resume_token"}


async def test_a_token_from_the_future_is_refused(
    stub: VaultServiceAsyncStub, sqlite_store: SQLiteStore
) -> None:
    """A token of this log but past its end (say, from a restored backup) is refused too."""
    stream = open_stream(stub, encode_resume_token(sqlite_store.log_id, 99))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stream.read()
    assert refused.value.code() is StatusCode.INVALID_ARGUMENT
    assert set(bad_request(refused.value)) == {"resume_token"}


async def test_invalid_filters_are_refused_with_their_index(stub: VaultServiceAsyncStub) -> None:
    """Bad ids are named by their position; more than 100 ids is refused as a whole."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await open_stream(stub, ids=("vr-ok", "has space", "")).read()
    assert refused.value.code() is StatusCode.INVALID_ARGUMENT
    assert set(bad_request(refused.value)) == {"vaulting_request_ids[1]", "vaulting_request_ids[2]"}
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await open_stream(stub, ids=tuple(f"vr-{n}" for n in range(101))).read()
    assert set(bad_request(too_many.value)) == {"vaulting_request_ids"}


async def test_client_cancel_ends_the_server_side_stream(
    stub: VaultServiceAsyncStub, servicer: VaultServicer, vaulting: VaultingService
) -> None:
    """When clients cancel, their server-side streams finish (nothing keeps waiting on the
    log for a client that is gone), and the server keeps serving others."""
    streams = [open_stream(stub) for _ in range(3)]
    for stream in streams:
        await checkpoint(stream)
    assert servicer.active_streams == 3
    for stream in streams:
        stream.cancel()
    await eventually(lambda: servicer.active_streams == 0, within=2)
    await create(stub, "vr-after-cancel")
    survivor = open_stream(stub)
    await checkpoint(survivor)
    await notify(vaulting, "vr-after-cancel")
    assert ids_of(await events(survivor, 1)) == ["vr-after-cancel"]


BURST = 3000


async def test_a_burst_of_stream_opens_all_get_their_first_checkpoint(
    stub: VaultServiceAsyncStub, servicer: VaultServicer
) -> None:
    """Thousands of StreamResults opened at once on one channel all get their first
    checkpoint. With grpc's default pending-request limits (soft 1,000, hard 3,000) part of
    such a burst is cancelled by the server before the application sees it."""
    streams = [open_stream(stub) for _ in range(BURST)]
    try:
        async with asyncio.timeout(20):
            firsts = await asyncio.gather(*(stream.read() for stream in streams))
        assert all(
            isinstance(m, pb.StreamResultsResponse) and m.WhichOneof("kind") == "checkpoint"
            for m in firsts
        )
        assert servicer.active_streams == BURST
    finally:
        for stream in streams:
            stream.cancel()
    await eventually(lambda: servicer.active_streams == 0, within=5)


async def test_a_client_that_stops_reading_stalls_nobody_and_loses_nothing(
    stub: VaultServiceAsyncStub, vaulting: VaultingService, grpc_server: RunningServer
) -> None:
    """A subscriber that stops reading (far more events than HTTP/2 flow control lets the
    server buffer for it) must not hold back another subscriber, and when it reads again it
    gets every event, in order: the server waits on it instead of dropping or queueing."""
    ids = [f"vr-slow-{n:03}" for n in range(300)]
    await create(stub, *ids)
    slow = open_stream(stub)
    await checkpoint(slow)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as other:
        fast = pb_grpc.VaultServiceStub(other).StreamResults(pb.StreamResultsRequest())
        await checkpoint(fast)
        for vaulting_request_id in ids:
            await notify(vaulting, vaulting_request_id)
        assert ids_of(await events(fast, len(ids))) == ids
        fast.cancel()
    assert ids_of(await events(slow, len(ids))) == ids
    slow.cancel()


async def test_an_event_this_server_cannot_decrypt_ends_the_stream_unavailable_before_it(
    stub: VaultServiceAsyncStub,
    vaulting: VaultingService,
    sqlite_store: SQLiteStore,
    hub: EventHub,
    data_key_file: Path,
    tmp_path: Path,
) -> None:
    """Regression (issue 9 #2): an event sealed under a data key this server lacked was left
    out, and the stream's next checkpoint moved past it for good. The stream now ends with
    UNAVAILABLE, RetryInfo and ErrorInfo DATA_KEY_MISSING whose resume_token is the position
    just before the event, and a message that names the key and what to do."""
    await create(stub, "vr-1", "vr-2")
    stream = open_stream(stub)
    await checkpoint(stream)
    await notify(vaulting, "vr-1")
    [delivered] = await events(stream, 1)
    ring = await asyncio.to_thread(ring_with_new_key, data_key_file, tmp_path, "newer")
    replica = await SQLiteStore.open(tmp_path / "vault.db", auto_migrate=False, data_keys=ring)
    try:  # another replica, whose key file already has a newer key, records vr-2's result
        event = await replica.apply("vr-2", from_notification(notification("vr-2"), utc_now()))
    finally:
        await replica.close()
    assert event is not None
    hub.notify()

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await events(stream, 1)
    assert ended.value.code() == StatusCode.UNAVAILABLE
    assert "data key 'newer'" in (ended.value.details() or "")
    assert retry_info(ended.value) is not None
    info = error_info(ended.value)
    assert info is not None
    assert (info.domain, info.reason) == ("vault", "DATA_KEY_MISSING")
    before = decode_resume_token(info.metadata["resume_token"], sqlite_store.log_id)
    assert before == event.event_id - 1
    assert before >= decode_resume_token(delivered.resume_token, sqlite_store.log_id)


async def test_a_corrupt_event_is_sent_as_an_unreadable_event(
    stub: VaultServiceAsyncStub, vaulting: VaultingService, tmp_path: Path
) -> None:
    """Regression (issue 9 #2): a corrupt event was skipped in silence. Its owner's stream now
    gets an UnreadableEvent (its token, its request id, a reason) in its place, then the next
    event; another caller's stream sees neither."""
    await create(stub, "vr-1", "vr-2")
    await create(stub, "vr-other", caller="other")
    stream = open_stream(stub)
    origin = await checkpoint(stream)
    stream.cancel()
    await notify(vaulting, "vr-1")
    await notify(vaulting, "vr-other")
    await notify(vaulting, "vr-2")
    await asyncio.to_thread(tamper_event, tmp_path / "vault.db", "vr-1", taken_from="vr-2")

    resumed = open_stream(stub, origin.resume_token)
    await checkpoint(resumed)
    unreadable = await read(resumed)
    assert unreadable.WhichOneof("kind") == "unreadable_event"
    assert unreadable.unreadable_event.vaulting_request_id == "vr-1"
    assert unreadable.unreadable_event.reason
    assert ids_of(await events(resumed, 1)) == ["vr-2"]
    resumed.cancel()
    after = open_stream(stub, unreadable.unreadable_event.resume_token)
    await checkpoint(after)
    assert ids_of(await events(after, 1)) == ["vr-2"]
    after.cancel()

    others = stub.StreamResults(
        pb.StreamResultsRequest(resume_token=origin.resume_token),
        metadata=((CALLER_METADATA_KEY, "other"),),
    )
    await checkpoint(others)
    assert ids_of(await events(others, 1)) == ["vr-other"]
    await assert_quiet(others)
    others.cancel()


def tamper_event(database: Path, vaulting_request_id: str, *, taken_from: str) -> None:
    """Give the event another event's sealed card token, as an attacker with SQL access might:
    it fails authentication under a key the server holds, so it is corrupt for good."""
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute(
            "UPDATE events SET card_token = (SELECT card_token FROM events"
            " WHERE vaulting_request_id = ?) WHERE vaulting_request_id = ?",
            (taken_from, vaulting_request_id),
        )
