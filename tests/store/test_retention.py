"""Retention on every backend: the event log pruned as a prefix under a floor that refuses
readers below it, orphans pruned, old final records deleted with their card data, down to the
raw database files, and SQLite's space given back."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.store.backends import Backend
from tests.store.strategies import T0, full_card, new_record, observe
from tests.store.test_data_at_rest import raw_database, raw_values, save_card
from vault_service.domain import Event, SessionRequest, VaultingStatus
from vault_service.store import EventsPrunedError, Pruned, Store
from vault_service.store.advisory_locks import PRUNER_LOCK
from vault_service.store.pruning import RecordBatch

S = VaultingStatus


async def events_at(store: Store, count: int, *, start: int = 0) -> None:
    """``count`` records, each with one event, one minute apart from T0 + ``start`` minutes."""
    for index in range(start, start + count):
        rid = f"vr-{index:03d}"
        await store.insert(new_record(rid), next_check_at=T0)
        await store.apply(rid, observe(S.PROCESSING, at=T0 + timedelta(minutes=index)))


async def test_events_are_pruned_as_a_prefix_under_a_floor(store: Store) -> None:
    """Events older than the cut-off go, in batches, and the floor says up to where: a read
    from below the floor is refused, from the floor on it is complete."""
    await events_at(store, 25)
    pruned = await store.prune(
        events_before=T0 + timedelta(minutes=12), records_before=None, batch_size=5
    )
    assert pruned == Pruned(events=12)
    floor = await store.events_floor()
    kept = await store.events_after(floor, limit=100)
    assert [e.occurred_at for e in kept if isinstance(e, Event)] == [
        T0 + timedelta(minutes=m) for m in range(12, 25)
    ]
    with pytest.raises(EventsPrunedError):
        await store.events_after(floor - 1, limit=100)
    # Nothing more to prune: the same pass again deletes nothing.
    again = await store.prune(
        events_before=T0 + timedelta(minutes=12), records_before=None, batch_size=5
    )
    assert again == Pruned()


async def test_a_log_pruned_empty_stands_at_its_floor(store: Store) -> None:
    """Every event pruned: the head is the floor (not 0), so "from now" and a token at the
    head still read, and the next event is after it."""
    await events_at(store, 3)
    head = await store.last_event_id()
    await store.prune(events_before=T0 + timedelta(days=1), records_before=None, batch_size=100)
    assert await store.events_floor() == head
    assert await store.last_event_id() == head
    assert await store.events_after(head, limit=10) == []
    await events_at(store, 1, start=3)
    (event,) = await store.events_after(head, limit=10)
    assert event.event_id > head


async def test_orphans_older_than_the_event_retention_are_pruned(store: Store) -> None:
    await store.record_orphan("lost-1", b"old", T0)
    await store.record_orphan("lost-2", b"new", T0 + timedelta(days=2))
    pruned = await store.prune(
        events_before=T0 + timedelta(days=1), records_before=None, batch_size=100
    )
    assert pruned == Pruned(orphans=1)
    assert [o.vaulting_request_id for o in await store.list_orphans(limit=10)] == ["lost-2"]


async def test_old_final_records_go_with_their_events_and_card_data(
    backend: Backend, store: Store
) -> None:
    """Record retention deletes final records unchanged since the cut-off, their events and
    their kept session request; a record still open, or changed since, stays. The deleted
    card's sealed values are gone from the raw database (SQLite's file and WAL byte for byte,
    every PostgreSQL row), and reading the record finds nothing."""
    for rid in ("old-a", "old-b"):
        await save_card(store, rid)  # SUCCEEDED at T0 + 1 min
    await store.insert(new_record("open"), next_check_at=T0)
    await store.insert(new_record("recent"), next_check_at=T0)
    await store.apply("recent", observe(S.SUCCEEDED, at=T0 + timedelta(days=5)))
    sealed_before = {
        value if isinstance(value, bytes) else value.encode() for value in await raw_values(backend)
    }
    # Their events are pruned first (the floor passes them): a record goes only then.
    pruned = await store.prune(
        events_before=T0 + timedelta(days=1), records_before=T0 + timedelta(days=1), batch_size=1
    )
    assert pruned.records == 2
    assert await store.get("old-a") is None
    assert await store.get("old-b") is None
    assert await store.get("open") is not None
    assert await store.get("recent") is not None
    remaining = await store.events_after(await store.events_floor(), limit=10)
    assert {e.record.vaulting_request_id for e in remaining if isinstance(e, Event)} == {"recent"}
    sealed_after = {
        value if isinstance(value, bytes) else value.encode() for value in await raw_values(backend)
    }
    gone = sealed_before - sealed_after
    assert len(gone) >= 4  # each old record's token and sealed document, in records and events
    raw = await raw_database(backend)
    assert [value for value in gone if value in raw] == []
    assert b"old-a" not in raw
    assert b"old-b" not in raw


async def test_record_retention_never_deletes_an_event_above_the_floor(store: Store) -> None:
    """Broke: record retention deleted an old final record's events whatever their id, but
    only the prefix prune raises the floor, and ``occurred_at`` is not monotonic in id order:
    an event after a newer one that the prefix kept went, leaving a hole above the floor that
    a reader skipped without being refused. A record with an event above the floor now waits
    until the prefix prune has passed it."""
    await store.insert(new_record("newer"), next_check_at=T0)
    await store.apply("newer", observe(S.PROCESSING, at=T0 + timedelta(days=5)))
    await save_card(store, "older")  # SUCCEEDED at T0 + 1 min, logged after "newer"'s event
    cutoff = T0 + timedelta(days=1)
    assert await store.prune(events_before=cutoff, records_before=cutoff, batch_size=10) == Pruned()
    assert await store.events_floor() == 0
    logged = await store.events_after(0, limit=10)
    assert [e.record.vaulting_request_id for e in logged if isinstance(e, Event)] == [
        "newer",
        "older",
    ]
    assert await store.get("older") is not None
    # Once the prefix prune has passed its event, the record goes.
    later = T0 + timedelta(days=6)
    pruned = await store.prune(events_before=later, records_before=cutoff, batch_size=10)
    assert pruned == Pruned(events=2, records=1)
    assert await store.get("older") is None


async def test_a_record_changed_during_its_deletion_keeps_its_event_and_request(
    backend: Backend, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broke: record retention deleted the chosen records' events and kept
    createVaultingSession request each in a statement of its own, re-checking only before the
    record's own delete: an EXPIRED record that learned its card between the selection and the
    deletes lost its new event (above the floor, so streams skipped it) and its request, and
    kept its row. The batch is one transaction now, its records locked and checked again: an
    apply landing between selection and deletion keeps the record, its event and its
    request."""
    record = new_record("late")
    kept = SessionRequest(record.owner, record.parameters, b'{"first": true}')
    await store.record_or_request("late", kept, T0)
    await store.insert(record, next_check_at=T0)
    await store.apply("late", observe(S.EXPIRED, at=T0 + timedelta(minutes=1)))
    learned = observe(S.SUCCEEDED, at=T0 + timedelta(days=3), card=full_card())
    news: list[Event | None] = []
    delete_records = store._delete_records  # type: ignore[attr-defined]

    async def card_arrives_first(db: object, batch: RecordBatch) -> int:
        """The seam between choosing the batch and deleting it: a GetResult lands there."""
        news.append(await store.apply("late", learned))
        deleted: int = await delete_records(db, batch)
        return deleted

    monkeypatch.setattr(store, "_delete_records", card_arrives_first)
    cutoff = T0 + timedelta(days=1)
    pruned = await store.prune(events_before=cutoff, records_before=cutoff, batch_size=10)
    assert pruned == Pruned(events=1)
    [event] = news
    assert event is not None
    assert event.event_id > await store.events_floor()
    survivor = await store.get("late")
    assert survivor is not None
    assert survivor.status is S.SUCCEEDED
    logged = await store.events_after(await store.events_floor(), limit=10)
    assert [e.event_id for e in logged] == [event.event_id]
    assert await backend.query("SELECT vaulting_request_id FROM session_requests") == [("late",)]
    # The pass's own connection (PostgreSQL) or thread (SQLite) is left as it was: the next
    # pass prunes normally.
    monkeypatch.undo()
    assert await store.prune(events_before=cutoff, records_before=cutoff, batch_size=10) == Pruned()


@pytest.mark.parametrize("new_backend", ["sqlite"], indirect=True)
async def test_sqlite_gives_the_space_back(backend: Backend, store: Store) -> None:
    """After pruning many rows, SQLite's file shrinks (incremental vacuum) and its WAL is
    truncated; a database created before incremental vacuum is converted by migrate."""
    # PostgreSQL leaves dead rows to autovacuum (docs/operations.md): nothing to check there.
    path = Path(backend.location)
    await events_at(store, 400)
    for index in range(400):
        await store.record_orphan(f"o-{index}", b"x" * 2000, T0)
    await backend.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    big = (await asyncio.to_thread(path.stat)).st_size
    assert big > 400 * 2000
    pruned = await store.prune(
        events_before=T0 + timedelta(days=1), records_before=None, batch_size=50
    )
    assert pruned == Pruned(events=400, orphans=400)
    assert (await asyncio.to_thread(path.stat)).st_size < big / 4
    wal = Path(f"{backend.location}-wal")
    assert (await asyncio.to_thread(wal.stat)).st_size == 0
    [(mode,)] = await backend.query("PRAGMA auto_vacuum")
    assert mode == 2  # INCREMENTAL


def without_auto_vacuum(path: Path) -> None:
    """Rewrite the database as a build before incremental vacuum created it."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.executescript("PRAGMA auto_vacuum = NONE; VACUUM;")
    finally:
        connection.close()


@pytest.mark.parametrize("new_backend", ["sqlite"], indirect=True)
async def test_migrate_converts_an_older_sqlite_database_to_incremental_vacuum(
    backend: Backend,
) -> None:
    """A database created without auto_vacuum (before this build) is rewritten once by
    migrate, keeping its rows."""
    await backend.migrate()
    await asyncio.to_thread(without_auto_vacuum, Path(backend.location))
    [(mode,)] = await backend.query("PRAGMA auto_vacuum")
    assert mode == 0
    store = await backend.open()
    await events_at(store, 2)
    await store.close()
    await backend.migrate()
    [(mode,)] = await backend.query("PRAGMA auto_vacuum")
    assert mode == 2
    store = await backend.open()
    try:
        assert len(await store.events_after(0, limit=10)) == 2
    finally:
        await store.close()


async def test_one_pruner_at_a_time_in_a_process(store: Store) -> None:
    """Two passes started together on one store: one prunes, the other skips its turn (or
    finds nothing left) — never both deleting the same rows."""
    await events_at(store, 50)
    results = await asyncio.gather(
        *(
            store.prune(events_before=T0 + timedelta(days=1), records_before=None, batch_size=5)
            for _ in range(2)
        )
    )
    assert sum(r.events for r in results if r is not None) == 50


@pytest.mark.parametrize("new_backend", ["postgresql"], indirect=True)  # SQLite has one replica
async def test_three_postgres_replicas_prune_one_at_a_time(backend: Backend, store: Store) -> None:
    """Three replicas' pruners, started together and again and again with a tiny retention,
    prune every old event between them, and never two at once: a trigger makes any delete
    from the log fail unless its own session holds the pruner's lock (PostgreSQL's advisory
    locks being exclusive, two deleting sessions cannot both hold it). While another session
    holds the lock, every replica skips its turn."""
    key = PRUNER_LOCK & 0xFFFF_FFFF_FFFF_FFFF
    await backend.execute(f"""
        CREATE FUNCTION only_the_pruner() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (
                SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                AND pid = pg_backend_pid() AND classid = {key >> 32}
                AND objid = {key & 0xFFFF_FFFF} AND objsubid = 1
            ) THEN
                RAISE EXCEPTION 'an event was deleted without the pruner lock';
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER only_the_pruner BEFORE DELETE ON events
            FOR EACH STATEMENT EXECUTE FUNCTION only_the_pruner();
    """)
    with pytest.raises(asyncpg.RaiseError):  # the trigger bites a delete without the lock
        await backend.execute("DELETE FROM events")
    replicas = [store, await backend.open(), await backend.open()]
    try:
        await events_at(store, 60)

        def passes(minute: int) -> list[asyncio.Future[Pruned | None]]:
            return [
                asyncio.ensure_future(
                    replica.prune(
                        events_before=T0 + timedelta(minutes=minute),
                        records_before=None,
                        batch_size=3,
                    )
                )
                for replica in replicas
            ]

        holder = await asyncpg.connect(backend.url)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", PRUNER_LOCK)
            assert await asyncio.gather(*passes(60)) == [None, None, None]
        finally:
            await holder.close()
        pruned = 0
        for minute in range(10, 61, 10):
            results = await asyncio.gather(*passes(minute))
            pruned += sum(r.events for r in results if r is not None)
            assert await store.events_floor() > 0
        assert pruned == 60
        assert await store.events_after(await store.events_floor(), limit=10) == []
    finally:
        for replica in replicas[1:]:
            await replica.close()
