"""``Store.apply_batch``, the group commit's one transaction, on every backend: each apply's
outcome is what its own ``apply`` would have given, in order, and one apply that fails neither
fails nor undoes the others."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from tests.store.backends import Backend
from tests.store.strategies import T0, full_card, new_record, observe
from vault_service.domain import Event, VaultingStatus
from vault_service.store import EVENTS_CHANNEL, RecordNotFoundError, Store

SUCCEEDED = VaultingStatus.SUCCEEDED
PROCESSING = VaultingStatus.PROCESSING
FAILED = VaultingStatus.FAILED

_REFUSE_BAD_SQLITE = (
    "CREATE TRIGGER refuse_bad BEFORE INSERT ON events "
    "WHEN NEW.vaulting_request_id = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END"
)
_REFUSE_BAD_POSTGRES = (
    "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.vaulting_request_id = 'bad' THEN RAISE EXCEPTION 'refused'; END IF; "
    "RETURN NEW; END $$",
    "CREATE TRIGGER refuse_bad BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_bad()",
)


async def _insert(store: Store, *ids: str) -> None:
    for rid in ids:
        await store.insert(new_record(rid), next_check_at=T0)


async def test_outcomes_come_back_in_order_each_as_its_own_apply_would_give_it(
    store: Store,
) -> None:
    await _insert(store, "a", "b", "c")
    outcomes = await store.apply_batch(
        [
            ("a", observe(SUCCEEDED, card=full_card("token-a"))),
            ("b", observe(PROCESSING)),
            ("unknown", observe(SUCCEEDED)),
            ("a", observe(SUCCEEDED, card=full_card("token-a"))),  # Antom's retry
            ("c", observe(FAILED)),
        ]
    )

    first, second, unknown, duplicate, last = outcomes
    assert isinstance(unknown, RecordNotFoundError)
    assert duplicate is None
    events = [first, second, last]
    assert all(isinstance(event, Event) for event in events)
    assert [e.record.vaulting_request_id for e in events if isinstance(e, Event)] == ["a", "b", "c"]
    assert await store.events_after(0, limit=10) == events
    ids = [e.event_id for e in events if isinstance(e, Event)]
    assert ids == sorted(ids)
    for rid, status in (("a", SUCCEEDED), ("b", PROCESSING), ("c", FAILED)):
        stored = await store.get(rid)
        assert stored is not None
        assert stored.status == status
    assert await store.get("unknown") is None


async def test_applies_to_one_id_see_each_other_in_order(store: Store) -> None:
    await _insert(store, "a")
    processing, succeeded, late = await store.apply_batch(
        [
            ("a", observe(PROCESSING)),
            ("a", observe(SUCCEEDED, card=full_card("token-a"))),
            ("a", observe(PROCESSING)),  # older news after a final state: nothing changes
        ]
    )
    assert isinstance(processing, Event)
    assert isinstance(succeeded, Event)
    assert late is None
    assert processing.record.status == PROCESSING
    assert succeeded.record.status == SUCCEEDED
    assert succeeded.event_id > processing.event_id
    assert await store.events_after(0, limit=10) == [processing, succeeded]


async def test_a_large_batch_gets_each_event_its_stored_id(store: Store) -> None:
    """Guards the ids of events appended many rows per statement (SQLite), across chunks: each
    outcome is the event as stored, ids ascending in the batch's order."""
    ids = [f"r{n:03d}" for n in range(300)]
    await _insert(store, *ids)
    await store.apply_batch([(ids[0], observe(PROCESSING))])  # the log does not start at 1
    outcomes = await store.apply_batch(
        [(rid, observe(SUCCEEDED, card=full_card(f"token-{rid}"))) for rid in ids]
    )
    assert await store.events_after(1, limit=1000) == outcomes
    assert [e.record.vaulting_request_id for e in outcomes if isinstance(e, Event)] == ids


async def test_an_empty_batch_commits_nothing(store: Store) -> None:
    assert await store.apply_batch([]) == []
    assert await store.last_event_id() == 0


async def test_a_write_the_database_refuses_fails_that_apply_alone(
    backend: Backend, store: Store
) -> None:
    """The database refuses the event of ``bad`` (a trigger) after its record update ran: on
    SQLite the batch's writes are rolled back to a savepoint and the applies run again each in
    a savepoint of its own, on PostgreSQL the batch is applied again one transaction per apply.
    Either way ``bad`` stays as it was and the others commit, in order, each seeing the one
    before it on the same record."""
    await _insert(store, "a", "bad", "c")
    if backend.name == "sqlite":
        await backend.execute(_REFUSE_BAD_SQLITE)
    else:
        for statement in _REFUSE_BAD_POSTGRES:
            await backend.execute(statement)

    first, refused, last, duplicate = await store.apply_batch(
        [
            ("a", observe(SUCCEEDED, card=full_card("token-a"))),
            ("bad", observe(SUCCEEDED, card=full_card("token-bad"))),
            ("c", observe(FAILED)),
            ("a", observe(SUCCEEDED, card=full_card("token-a"))),  # Antom's retry
        ]
    )

    assert isinstance(refused, Exception)
    assert isinstance(first, Event)
    assert isinstance(last, Event)
    assert duplicate is None
    assert await store.events_after(0, limit=10) == [first, last]
    bad = await store.get("bad")
    assert bad is not None
    assert bad.status == VaultingStatus.SESSION_CREATED
    assert bad.card is None


@pytest.mark.parametrize("new_backend", ["postgresql"], indirect=True)
async def test_postgres_announces_a_batch_with_one_notify(backend: Backend, store: Store) -> None:
    await _insert(store, "a", "b", "c")
    heard: list[str] = []
    first_heard = asyncio.Event()

    def hear(*args: object) -> None:
        heard.append(str(args[3]))
        first_heard.set()

    listener = await asyncpg.connect(backend.location)
    try:
        await listener.add_listener(EVENTS_CHANNEL, hear)
        outcomes = await store.apply_batch([(rid, observe(SUCCEEDED)) for rid in "abc"])
        last = outcomes[-1]
        assert isinstance(last, Event)
        async with asyncio.timeout(5):
            await first_heard.wait()
        await listener.execute("SELECT 1")  # a round trip: any later NOTIFY has arrived
    finally:
        await listener.close()
    assert heard == [str(last.event_id)]


@pytest.mark.parametrize("new_backend", ["postgresql"], indirect=True)
async def test_replicas_batching_the_same_ids_in_opposite_orders_never_deadlock(
    backend: Backend, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas commit batches over the same records, listed in opposite orders: their
    records are locked in id order, so neither batch is refused as a deadlock (which would
    show as the one-by-one fallback's warning) and every event is appended once."""
    ids = [f"r{n:02}" for n in range(20)]
    await _insert(store, *ids)
    other = await backend.open()
    caplog.set_level(logging.WARNING, logger="vault_service.store")
    try:
        for status in (PROCESSING, SUCCEEDED):
            forward = [(rid, observe(status)) for rid in ids]
            backward = list(reversed(forward))
            done = await asyncio.gather(store.apply_batch(forward), other.apply_batch(backward))
            applied = [o for outcomes in done for o in outcomes if isinstance(o, Event)]
            assert len(applied) == len(ids)
            assert not [o for outcomes in done for o in outcomes if isinstance(o, Exception)]
    finally:
        await other.close()
    assert "one by one" not in caplog.text
    assert len(await store.events_after(0, limit=100)) == 2 * len(ids)
