"""Property: with writers on three replicas at once, every reader resuming anywhere from any
token sees every later event exactly once, in log order.

Below gRPC, so that many rounds fit in a few seconds: each replica is what ``app.start``
wires for PostgreSQL (a store with its own pools, a hub, a LISTEN connection feeding the hub,
and ``ResultStreams`` over both). Writers do what the webhook, the inquiry path and the
reconciler do: ``apply`` an observation on some replica, then wake that replica's hub.

Each round is generated from its seed (printed in every failure): records, a shuffled pile of
observations per record (notifications, inquiries and expiries; duplicates; news that arrives
late or out of order, such as PROCESSING after a final result, a result after EXPIRED, or the
card of a success that was first learned without it), writers taking from it concurrently on
random replicas, and readers that open at random moments on random replicas from random
tokens. Once the writers are done, one last "sentinel" event marks the end of the round. Every
reader must then hold exactly the events the log (read directly) has after its token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from tests.fixtures.records import new_record
from tests.replicas.conftest import assert_no_replica_connections, read_log
from vault_service.database_url import parse_database_url
from vault_service.domain import (
    AntomResult,
    Card,
    Event,
    EventSource,
    Observation,
    VaultingStatus,
    encode_resume_token,
)
from vault_service.events import EventHub, PostgresWakeups
from vault_service.secret import Secret
from vault_service.service import ResultStreams, StreamedEvent, StreamItem
from vault_service.store import DataKeyRing, PostgresStore

REPLICAS = 3
READERS = 5
WRITERS = 8
RECORDS_PER_ROUND = 12
MIN_ROUNDS = 10
MAX_ROUNDS = 40
TIME_BUDGET = 12.0  # seconds: after MIN_ROUNDS, stop starting rounds once it is spent
SEED = 20261125
ROUND_TIMEOUT = 10.0
CHECKPOINT_INTERVAL = 30.0  # readers must be woken by the hubs, never by a checkpoint timer

T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
OWNER = "checkout"


@dataclass
class Replica:
    store: PostgresStore
    hub: EventHub
    wakeups: PostgresWakeups
    streams: ResultStreams

    async def publish(self, rid: str, news: Observation) -> Event | None:
        """What the service does with news: apply it, and wake this replica's streams."""
        event = await self.store.apply(rid, news)
        if event is not None:
            self.hub.notify()
        return event


@pytest.fixture
async def replicas(postgres_dsn: str, data_keys: DataKeyRing) -> AsyncIterator[list[Replica]]:
    """Three replicas on the test's database; closed at teardown, leaving no connection."""
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for _ in range(REPLICAS):
            store = await PostgresStore.open(
                parse_database_url(postgres_dsn), auto_migrate=True, data_keys=data_keys
            )
            stack.push_async_callback(store.close)
            hub = EventHub()
            wakeups = PostgresWakeups(postgres_dsn, hub)
            await wakeups.start()
            stack.push_async_callback(wakeups.close)
            streams = ResultStreams(store, hub, checkpoint_interval=CHECKPOINT_INTERVAL)
            started.append(Replica(store, hub, wakeups, streams))
        yield started
    await assert_no_replica_connections(postgres_dsn)


def observations(rng: random.Random, rid: str) -> list[Observation]:
    """A shuffled pile of news about one record: a plausible story plus noise."""
    at = T0 + timedelta(seconds=rng.randint(1, 600))
    card = Card(card_token=Secret(f"ALIPAY-{rid}"), brand="VISA", last_four="1111")

    def news(
        status: VaultingStatus,
        source: EventSource,
        card: Card | None = None,
        antom_result: AntomResult | None = None,
    ) -> Observation:
        observed_at = at + timedelta(seconds=rng.randint(0, 120))
        return Observation(status, source, observed_at, card=card, antom_result=antom_result)

    notified = EventSource.NOTIFICATION
    inquired = EventSource.INQUIRY
    pile = [
        news(VaultingStatus.PROCESSING, rng.choice([notified, inquired])),
        news(VaultingStatus.SESSION_CREATED, inquired),  # an inquiry before the buyer acts
    ]
    ending = rng.choice(["success", "success-card-later", "failure", "expired", "expired-late"])
    if ending == "success":
        pile.append(news(VaultingStatus.SUCCEEDED, notified, card=card))
    elif ending == "success-card-later":
        pile.append(news(VaultingStatus.SUCCEEDED, inquired))
        pile.append(news(VaultingStatus.SUCCEEDED, notified, card=card))
    elif ending == "failure":
        result = AntomResult("DO_NOT_HONOR", "F", "declined")
        pile.append(news(VaultingStatus.FAILED, notified, antom_result=result))
    else:
        pile.append(news(VaultingStatus.EXPIRED, EventSource.EXPIRY))
        if ending == "expired-late":  # Antom's final word after our expiry still counts
            pile.append(news(VaultingStatus.SUCCEEDED, notified, card=card))
    for _ in range(rng.randint(1, 4)):  # Antom's retries, inquiries racing notifications
        copy = rng.choice(pile)
        pile.append(replace(copy, source=rng.choice([copy.source, inquired])))
    rng.shuffle(pile)
    return pile


async def run_round(replicas: list[Replica], dsn: str, data_keys: DataKeyRing, seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"r{seed}-{n}" for n in range(RECORDS_PER_ROUND)]
    sentinel = f"r{seed}-sentinel"
    for rid in [*ids, sentinel]:
        await rng.choice(replicas).store.insert(
            new_record(rid, created_at=T0, owner=OWNER), next_check_at=T0
        )
    # Everything random is drawn here, before the tasks run, so that a seed replays the
    # same inputs (the interleaving is up to the scheduler and the database).
    pile = [
        (rid, news, rng.randrange(REPLICAS), rng.random() / 400)
        for rid in ids
        for news in observations(rng, rid)
    ]
    rng.shuffle(pile)
    plans = [(rng.random() / 20, rng.randrange(REPLICAS), rng.random()) for _ in range(READERS)]
    closing = replicas[rng.randrange(REPLICAS)]

    async def writer(batch: list[tuple[str, Observation, int, float]]) -> None:
        for rid, news, replica, pause in batch:
            await replicas[replica].publish(rid, news)
            await asyncio.sleep(pause)

    async def reader(delay: float, replica: Replica, where: float) -> tuple[int, list[Event]]:
        await asyncio.sleep(delay)
        start = round(where * await replica.store.last_event_id())
        position = await replica.streams.start_position(
            encode_resume_token(replica.store.log_id, start)
        )
        seen: list[Event] = []
        items = cast(  # follow() is an async generator: close it when done
            "AsyncGenerator[StreamItem, None]",
            replica.streams.follow(position, owner=OWNER, vaulting_request_ids=None),
        )
        try:
            async for item in items:
                if isinstance(item, StreamedEvent):
                    seen.append(item.event)
                    if item.event.record.vaulting_request_id == sentinel:
                        return start, seen
        finally:
            await items.aclose()
        raise AssertionError("follow() ended")

    readers = [
        asyncio.create_task(reader(delay, replicas[replica], where))
        for delay, replica, where in plans
    ]
    try:
        async with asyncio.timeout(ROUND_TIMEOUT):
            await asyncio.gather(*(writer(pile[n::WRITERS]) for n in range(WRITERS)))
            # Every write has committed: the sentinel's event is the last of the round.
            final = Observation(VaultingStatus.FAILED, EventSource.NOTIFICATION, T0)
            assert await closing.publish(sentinel, final) is not None
            results = await asyncio.gather(*readers)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    log = await read_log(dsn, data_keys)
    for start, seen in results:
        expected = [summary(e) for e in log.after(start)]
        assert [summary(e) for e in seen] == expected, f"reader from {start}"
    for n, rid in enumerate(ids):
        await check_record_history(replicas[n % REPLICAS].store, rid, log.events)


def summary(event: Event) -> tuple[int, str, str, str, str]:
    record = event.record
    token = record.card.card_token.reveal() if record.card else ""
    return event.event_id, record.vaulting_request_id, record.status, event.source, token


async def check_record_history(store: PostgresStore, rid: str, log: list[Event]) -> None:
    """The record's events are its real history: each one a change the domain allows from
    the one before, never a repeat, and the last one is the stored record."""
    history = [e.record for e in log if e.record.vaulting_request_id == rid]
    stored = await store.get(rid)
    assert history, f"{rid}: no event"
    assert stored == history[-1], rid
    for before, after in itertools.pairwise(history):
        assert (before.status, before.card) != (after.status, after.card), f"{rid}: repeat"
        if before.status.is_antom_final:  # only the missing card may still arrive
            assert after.status is before.status, f"{rid}: {before.status} -> {after.status}"
            assert before.card is None or not before.card.card_token, rid
        if before.status is VaultingStatus.EXPIRED:
            assert after.status.is_antom_final, f"{rid}: EXPIRED -> {after.status}"
        assert after.status is not VaultingStatus.SESSION_CREATED, rid


async def test_resuming_readers_on_any_replica_see_every_later_event_exactly_once_in_order(
    replicas: list[Replica], postgres_dsn: str, data_keys: DataKeyRing
) -> None:
    """Guards cross-replica StreamResults: appends from several replicas must reach every
    reader (wake-ups through LISTEN/NOTIFY), and a reader resuming from any token must never
    skip an event that commits after one with a higher id, nor see one twice. Also guards the
    store's monotonic transitions under concurrent duplicate and out-of-order news."""
    started = time.monotonic()
    rounds = 0
    while rounds < MIN_ROUNDS or (rounds < MAX_ROUNDS and time.monotonic() - started < TIME_BUDGET):
        seed = SEED + rounds
        try:
            await run_round(replicas, postgres_dsn, data_keys, seed)
        except (AssertionError, TimeoutError) as failure:
            raise AssertionError(f"round with seed {seed} failed: {failure!r}") from failure
        rounds += 1
    log = await read_log(postgres_dsn, data_keys)
    assert len(log.events) >= rounds * (RECORDS_PER_ROUND + 1)
