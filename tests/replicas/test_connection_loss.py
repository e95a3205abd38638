"""Losing database connections under load: streams go on, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest

from tests.fixtures.antom import buyer_submits
from tests.fixtures.records import new_record
from tests.replicas.cards import DECLINED, FINAL_STATUS, THREE_DS, VISA
from tests.replicas.conftest import (
    LISTEN_APPLICATION_NAME,
    OpenStub,
    StartReplica,
    Stub,
    Subscriber,
    assert_received_exactly,
    read_log,
    subscribed,
    wait_for_listeners,
    wait_until,
)
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.database_url import parse_database_url
from vault_service.domain import (
    EventSource,
    Observation,
    VaultingStatus,
)
from vault_service.emulator import EmulatorServer, Outcome
from vault_service.grpc_api import mapping
from vault_service.store import DataKeyRing, PostgresStore
from vault_service.store.postgres_pool import APPLICATION_NAME

SESSIONS = 36
CHAOS_SECONDS = 3.0
TERMINATE_EVERY = 0.1
CARDS = (VISA, DECLINED, THREE_DS)
RETRIES = 50

_TERMINATE = """
    SELECT application_name, pg_terminate_backend(pid) AS ended FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = ANY($1::text[])
"""


async def terminate_repeatedly(dsn: str, stop: asyncio.Event) -> Counter[str]:
    """``pg_terminate_backend`` on every replica connection (pools and LISTEN) every
    TERMINATE_EVERY seconds until ``stop``; how many of each kind were ended."""
    ended: Counter[str] = Counter()
    admin = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            for row in await admin.fetch(_TERMINATE, [APPLICATION_NAME, LISTEN_APPLICATION_NAME]):
                ended[row["application_name"]] += row["ended"]
            await asyncio.sleep(TERMINATE_EVERY)
    finally:
        await admin.close()
    return ended


async def get_result(stub: Stub, rid: str) -> pb.VaultingResult:
    """GetResult(refresh) as a well-behaved client calls it: retried on UNAVAILABLE only."""
    for _ in range(RETRIES):
        try:
            answer = await stub.GetResult(
                pb.GetResultRequest(vaulting_request_id=rid, refresh=True), timeout=10
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE:
                raise AssertionError(
                    f"GetResult({rid!r}) failed with {error.code().name} ({error.details()!r}):"
                    " a lost database connection must leave the caller a retryable UNAVAILABLE"
                ) from error
            await asyncio.sleep(0.05)
            continue
        return answer.result
    raise AssertionError(f"GetResult({rid!r}) still UNAVAILABLE after {RETRIES} tries")


async def test_streams_survive_terminated_pool_and_listen_connections_under_load(
    start_replica: StartReplica,
    open_stub: OpenStub,
    emulator: EmulatorServer,
    postgres_dsn: str,
    data_keys: DataKeyRing,
) -> None:
    """For three seconds every connection of three replicas (their pools and their LISTEN
    connections) is terminated ten times a second, while buyers save cards (Antom notifies
    the replica each session was created on, some notifications twice, and retries what was
    not acknowledged) and callers ask GetResult with refresh (inquiries).

    Guards: a StreamResults stream whose replica loses its connection ends, if at all, with
    UNAVAILABLE (resumable); a client resuming from its last token on any replica then gets
    every event once, in order; a notification whose write failed is not acknowledged and
    its retry is stored once; every replica's LISTEN connection comes back and wakes its
    streams (checkpoints are 30 s apart, so only wake-ups deliver the last event in time)."""
    rng = random.Random(7)
    replicas = [await start_replica() for _ in range(3)]
    stubs = [open_stub(r.grpc_port) for r in replicas]
    subscribers = [Subscriber([*stubs[n:], *stubs[:n]]) for n in range(len(stubs))]
    cards = dict(zip((f"chaos-{n}" for n in range(SESSIONS)), itertools.cycle(CARDS)))
    sessions = {}
    for n, rid in enumerate(cards):
        created = await stubs[n % 3].CreateSession(
            pb.CreateSessionRequest(vaulting_request_id=rid), timeout=10
        )
        sessions[rid] = created.session_data
    emulator.state.faults.update({"duplicate_notifications": SESSIONS // 4})

    async def buyers() -> None:
        for rid, card in cards.items():
            await buyer_submits(emulator, sessions[rid], card)
            await asyncio.sleep(CHAOS_SECONDS / SESSIONS)

    async def inquirers() -> None:
        deadline = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < deadline:
            await get_result(rng.choice(stubs), rng.choice(list(cards)))
            await asyncio.sleep(0.03)

    async with subscribed(subscribers):
        stop = asyncio.Event()
        terminator = asyncio.create_task(terminate_repeatedly(postgres_dsn, stop))
        try:
            async with asyncio.timeout(CHAOS_SECONDS + 20):
                await asyncio.gather(buyers(), inquirers())
        finally:
            stop.set()
            ended = await terminator
        async with asyncio.timeout(20):
            await emulator.state.notifier.wait_idle()
        await wait_for_listeners(postgres_dsn, len(replicas))
        created = await stubs[0].CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="after-chaos"), timeout=10
        )
        await buyer_submits(emulator, created.session_data, VISA)
        async with asyncio.timeout(10):
            await emulator.state.notifier.wait_idle()
        log = await read_log(postgres_dsn, data_keys)
        await wait_until(
            lambda: all(s.caught_up(len(log.events)) for s in subscribers),
            within=5,
            what="every subscriber to reach the end of the log",
        )
        await asyncio.sleep(0.2)  # room for a doubled event to show up

    assert ended[APPLICATION_NAME] > 0, ended
    assert ended[LISTEN_APPLICATION_NAME] > 0, ended
    for rid in [*cards, "after-chaos"]:
        outcomes = [a.outcome for a in emulator.state.notifier.attempts(rid)]
        assert Outcome.ACKNOWLEDGED in outcomes, f"{rid}: {outcomes}"
    final = {e.record.vaulting_request_id: e.record for e in log.events}
    for rid, card in cards.items():
        assert mapping.vaulting_result(final[rid]).status == FINAL_STATUS[card], rid
    for n, subscriber in enumerate(subscribers):
        assert_received_exactly(subscriber, log, after=0, name=f"subscriber {n}")


NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    "failure",
    [
        # What asyncpg raised in the test above when a new LISTEN connection was terminated
        # before LISTEN went through, and what it raises once it has noticed the close.
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    ],
    ids=lambda failure: type(failure).__name__,
)
async def test_a_replica_gets_its_listen_connection_back_however_a_reconnect_fails(
    start_replica: StartReplica,
    open_stub: OpenStub,
    postgres_dsn: str,
    data_keys: DataKeyRing,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    """The replica's LISTEN connection is terminated and its first attempt to LISTEN again
    fails. Guards: the replica keeps trying until it listens again, so its streams hear of
    another replica's event at once; a reconnect loop that stops on an unexpected driver
    error leaves the replica deaf to every other replica for the rest of its life."""
    replica = await start_replica()
    subscriber = Subscriber([open_stub(replica.grpc_port)])
    failures = [failure]
    add_listener = asyncpg.Connection.add_listener

    async def failing_once(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await add_listener(self, *args, **kwargs)

    # Another replica's store.
    other = await PostgresStore.open(
        parse_database_url(postgres_dsn), auto_migrate=False, data_keys=data_keys
    )
    try:
        await other.insert(
            new_record("deaf-1", created_at=NOW), next_check_at=NOW + timedelta(hours=1)
        )
        async with subscribed([subscriber]):
            monkeypatch.setattr(asyncpg.Connection, "add_listener", failing_once)
            admin = await asyncpg.connect(postgres_dsn)
            try:
                await admin.execute(_TERMINATE, [LISTEN_APPLICATION_NAME])
            finally:
                await admin.close()
            await wait_until(lambda: not failures, within=5, what="a reconnect attempt")
            await wait_for_listeners(postgres_dsn, 1)
            news = Observation(VaultingStatus.SUCCEEDED, EventSource.NOTIFICATION, NOW)
            assert await other.apply("deaf-1", news) is not None
            await wait_until(
                lambda: subscriber.caught_up(1), within=5, what="the other replica's event"
            )
    finally:
        await other.close()
    assert [event.result.vaulting_request_id for event in subscriber.events] == ["deaf-1"]
