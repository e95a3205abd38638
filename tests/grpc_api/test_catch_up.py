"""Event retention seen by a consumer, on each backend: a resume token whose events were pruned
is refused as too old, and the documented recovery (a stream from now, then ListResults from
the last processed event's time) loses no change, while results keep changing."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import StatusCode

from tests.fixtures.records import new_record
from tests.grpc_api.support import CALLER_METADATA_KEY, bad_request
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import (
    AntomResult,
    EventSource,
    Observation,
)
from vault_service.service.vaulting import VaultingService
from vault_service.store import Store

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

ALICE = ((CALLER_METADATA_KEY, "alice"),)
RECORDS = 12
SEEDS = range(8)


@pytest.fixture
def vault_store(each_backend_store: Store) -> Store:
    """The server's store: every test here runs on each backend."""
    return each_backend_store


class World:
    """Alice's open records, and changes to them: each one a real change (a new Antom word on
    an open record: a new update time and an event)."""

    def __init__(self, store: Store, vaulting: VaultingService, seed: int) -> None:
        self.store = store
        self.vaulting = vaulting
        self.rng = random.Random(seed)
        self.ids = [f"vr-{seed}-{index:02d}" for index in range(RECORDS)]
        self.changes = 0

    async def create(self) -> None:
        now = datetime.now(UTC)
        for rid in self.ids:
            record = new_record(
                rid, created_at=now, owner="alice", session_lifetime=timedelta(days=1)
            )
            await self.store.insert(record, next_check_at=now + timedelta(days=1))

    async def change(self, count: int) -> None:
        for _ in range(count):
            self.changes += 1
            word = AntomResult("PROCESSING", "U", f"change {self.changes}", f"WORD{self.changes}")
            observation = Observation(None, EventSource.INQUIRY, datetime.now(UTC), None, word)
            assert await self.vaulting.apply(self.rng.choice(self.ids), observation) is not None
            await asyncio.sleep(0)

    async def current(self) -> dict[str, datetime]:
        found = {rid: await self.store.get(rid) for rid in self.ids}
        return {rid: record.updated_at for rid, record in found.items() if record is not None}


async def read_events(
    stream: grpc.aio.UnaryStreamCall[pb.StreamResultsRequest, pb.StreamResultsResponse],
    count: int,
) -> list[pb.ResultEvent]:
    events: list[pb.ResultEvent] = []
    while len(events) < count:
        message = await asyncio.wait_for(stream.read(), timeout=10)
        assert message is not grpc.aio.EOF
        if message.HasField("event"):
            events.append(message.event)
    return events


def saw(newest: dict[str, datetime], result: pb.VaultingResult) -> None:
    """Keep the newest update time seen per request (a change may arrive twice)."""
    at = result.update_time.ToDatetime(tzinfo=UTC)
    newest[result.vaulting_request_id] = max(at, newest.get(result.vaulting_request_id, at))


async def test_a_pruned_token_is_refused_and_list_then_stream_recovers_every_change(
    stub: VaultServiceAsyncStub, vault_store: Store, vaulting: VaultingService
) -> None:
    """Property, over random interleavings: a consumer processes some events, goes away while
    more happen, and the events after its token are pruned. Resuming is refused with
    INVALID_ARGUMENT naming resume_token (too old). It then opens a stream from now and lists
    from its last processed event's time while results keep changing: for every record, the
    newest state it has seen (from the list or the stream) is the record's current one."""
    for seed in SEEDS:
        world = World(vault_store, vaulting, seed)
        await world.create()
        stream = stub.StreamResults(
            pb.StreamResultsRequest(vaulting_request_ids=world.ids), metadata=ALICE
        )
        opened = await stream.read()  # its first checkpoint: it is open
        assert opened is not grpc.aio.EOF
        processed = world.rng.randint(1, 10)
        await world.change(processed)
        seen = await read_events(stream, processed)
        stream.cancel()
        token, checkpoint = seen[-1].resume_token, seen[-1].event_time
        await world.change(world.rng.randint(1, 10))  # while the consumer is away
        pruned = await vault_store.prune(
            events_before=datetime.now(UTC) + timedelta(seconds=1),
            records_before=None,
            batch_size=world.rng.randint(1, 7),
        )
        assert pruned is not None
        assert pruned.events > 0

        resumed = stub.StreamResults(pb.StreamResultsRequest(resume_token=token), metadata=ALICE)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await resumed.read()
        assert refused.value.code() is StatusCode.INVALID_ARGUMENT
        assert "too old" in bad_request(refused.value)["resume_token"]

        # The recovery: a stream from now first, then the list, while results keep changing.
        live = stub.StreamResults(
            pb.StreamResultsRequest(vaulting_request_ids=world.ids), metadata=ALICE
        )
        first = await live.read()
        assert first is not grpc.aio.EOF
        assert first.HasField("checkpoint")
        during = world.rng.randint(0, 10)
        changing = asyncio.create_task(world.change(during))
        newest: dict[str, datetime] = {}

        request = pb.ListResultsRequest(page_size=world.rng.randint(1, 5))
        request.update_time_start.CopyFrom(checkpoint)
        while True:
            page = await stub.ListResults(request, metadata=ALICE)
            for result in page.results:
                if result.vaulting_request_id in world.ids:
                    saw(newest, result)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        await changing
        for event in await read_events(live, during):
            saw(newest, event.result)
        live.cancel()
        current = await world.current()
        changed_since = {
            rid: at for rid, at in current.items() if at >= checkpoint.ToDatetime(tzinfo=UTC)
        }
        assert {rid: newest.get(rid) for rid in changed_since} == changed_since, seed
