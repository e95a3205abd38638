"""What is particular to the SQLite backend: its thread, its pragmas, and cancellation.

Some tests reach into the store (``_run``, ``_connection``) to act on its thread: that is the
only way to pause a transaction half-way or to read the connection's settings.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.grpc_api.support import eventually
from tests.store.strategies import T0, new_record, observe
from vault_service.domain import VaultingStatus
from vault_service.store import SchemaVersionError, sqlite_thread
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.migrations import SQLITE_MIGRATIONS
from vault_service.store.sqlite import SQLiteStore, Synchronous, migrate

SQLITE_VERSIONS = [migration.version for migration in SQLITE_MIGRATIONS]


@pytest.fixture
async def sqlite_store(tmp_path: Path, data_keys: DataKeyRing) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(
        tmp_path / "vault.sqlite3", auto_migrate=True, data_keys=data_keys
    )
    await store.insert(new_record("vr-1"), next_check_at=T0)
    yield store
    await store.close()


async def _pragma(store: SQLiteStore, name: str) -> Any:
    connection = store._connection
    return await store._run(lambda: connection.execute(f"PRAGMA {name}").fetchone()[0])


@pytest.mark.parametrize(("level", "value"), [("NORMAL", 1), ("FULL", 2)])
async def test_connection_settings(
    tmp_path: Path, data_keys: DataKeyRing, level: Synchronous, value: int
) -> None:
    store = await SQLiteStore.open(
        tmp_path / "db", auto_migrate=True, data_keys=data_keys, synchronous=level
    )
    try:
        assert await _pragma(store, "journal_mode") == "wal"
        assert await _pragma(store, "synchronous") == value
        assert await _pragma(store, "foreign_keys") == 1
        assert await _pragma(store, "busy_timeout") == 5000
    finally:
        await store.close()


async def test_an_unknown_synchronous_level_is_refused(tmp_path: Path) -> None:
    """Guards against a config typo silently running with SQLite's default durability."""
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        await SQLiteStore.open(
            tmp_path / "db",
            auto_migrate=True,
            data_keys=DataKeyRing.generate(),
            synchronous="OFF",  # type: ignore[arg-type]
        )


async def test_opening_a_missing_database_creates_no_file(tmp_path: Path) -> None:
    """Guards against a mistyped path silently becoming a new, empty database."""
    path = tmp_path / "typo.sqlite3"
    with pytest.raises(SchemaVersionError, match=r"no database at .*run `vault-service migrate`"):
        await SQLiteStore.open(path, auto_migrate=False, data_keys=DataKeyRing.generate())
    assert not path.exists()


def _store_threads() -> set[threading.Thread]:
    """The store threads running now (those of earlier tests included)."""
    return {t for t in threading.enumerate() if t.name == "vault-store-sqlite"}


async def test_closing_the_store_ends_its_thread(tmp_path: Path) -> None:
    """Guards the store thread's lifetime: ``close`` ends the thread it started (no thread is
    left behind per store opened, e.g. by tests or ``migrate``).

    Regression: it compared counts of every store thread, so an earlier test's thread that was
    still running at the first count and ended before the second made CI's count one short.
    It now follows the thread this store started."""
    before = _store_threads()
    store = await SQLiteStore.open(
        tmp_path / "db", auto_migrate=True, data_keys=DataKeyRing.generate()
    )
    started = _store_threads() - before
    assert len(started) == 1
    await store.close()
    assert not any(thread.is_alive() for thread in started)


async def test_a_failed_open_ends_its_thread(tmp_path: Path) -> None:
    """Guards the failed start: the thread that tried to connect ends with it."""
    before = _store_threads()
    with pytest.raises(SchemaVersionError):
        await SQLiteStore.open(
            tmp_path / "missing", auto_migrate=False, data_keys=DataKeyRing.generate()
        )
    for thread in _store_threads() - before:
        await asyncio.to_thread(thread.join, 10)
    assert _store_threads() <= before


async def test_work_that_raises_hands_its_error_to_the_caller(sqlite_store: SQLiteStore) -> None:
    """Guards the thread's answer path: an error raised on the thread reaches the awaiting
    task as itself, and the thread goes on serving."""

    def fail() -> None:
        raise LookupError("on the store thread")

    with pytest.raises(LookupError, match="on the store thread"):
        await sqlite_store._run(fail)
    assert await sqlite_store.get("vr-unknown") is None


async def test_migrate_records_its_versions(tmp_path: Path) -> None:
    path = tmp_path / "db"
    assert await migrate(path) == SQLITE_VERSIONS
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT version, description FROM schema_migrations").fetchall()
        log_id = connection.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]
    connection.close()
    assert [version for version, _ in rows] == SQLITE_VERSIONS
    assert len(log_id) == 32


async def test_the_switch_to_wal_waits_for_another_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards concurrent ``migrate`` runs creating one database: SQLite refused the switch to
    WAL at once ("database is locked") while another connection held the still-rollback
    database's write lock, instead of waiting like any other lock, and a migrate failed at random.

    The lock is released only once the switch has been refused and retried, whatever the
    machine's speed, so the test always exercises the wait."""
    retried = threading.Event()

    def sleep_noting_the_retry(seconds: float) -> None:
        retried.set()
        time.sleep(seconds)

    monkeypatch.setattr(
        sqlite_thread,
        "time",
        SimpleNamespace(monotonic=time.monotonic, sleep=sleep_noting_the_retry),
    )
    path = tmp_path / "db"
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("CREATE TABLE other_writer (x INTEGER)")
        writer.execute("BEGIN IMMEDIATE")
        migrating = asyncio.ensure_future(migrate(path))
        await eventually(lambda: retried.is_set() or migrating.done(), within=10)
        writer.execute("COMMIT")
        assert await migrating == SQLITE_VERSIONS
        assert retried.is_set()
    finally:
        writer.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


async def test_all_work_runs_on_one_thread(sqlite_store: SQLiteStore) -> None:
    """Guards the single-connection design: sqlite3 objects never cross threads."""
    threads = await asyncio.gather(
        *(sqlite_store._run(threading.get_ident) for _ in range(20)),
        sqlite_store.get("vr-1"),
    )
    assert len(set(threads[:-1])) == 1
    assert threads[0] != threading.get_ident()


def _hold_inside_apply(store: SQLiteStore, hold: Callable[[], None]) -> None:
    """Make the store's next event insert call ``hold`` mid-transaction (store thread only)."""
    connection = store._connection
    connection.create_function("hold", 0, hold)
    connection.execute(
        "CREATE TEMP TRIGGER hold_after_event AFTER INSERT ON main.events BEGIN SELECT hold(); END"
    )


@pytest.mark.parametrize("outcome", ["commits", "fails"])
async def test_cancelling_apply_mid_transaction_keeps_it_atomic(
    sqlite_store: SQLiteStore, outcome: str
) -> None:
    """Guards the outbox when a caller's deadline cancels apply while its transaction runs on
    the store thread: the awaiting task is cancelled at once, and the transaction still
    commits both the record update and its event, or (when it fails) neither."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(10)
        if outcome == "fails":
            raise OSError("disk on fire")

    await sqlite_store._run(_hold_inside_apply, sqlite_store, hold)
    task = asyncio.create_task(sqlite_store.apply("vr-1", observe(VaultingStatus.SUCCEEDED)))
    # Once entered, the record is updated and the event inserted, neither committed yet.
    assert await asyncio.to_thread(entered.wait, 10)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not release.is_set()  # the task ended while the transaction was still open

    release.set()
    record = await sqlite_store.get("vr-1")  # queued behind the held transaction
    events = await sqlite_store.events_after(0, limit=10)
    assert record is not None
    if outcome == "commits":
        assert record.status is VaultingStatus.SUCCEEDED
        assert [e.record for e in events] == [record]
    else:
        assert record == new_record("vr-1")
        assert events == []


async def test_cancelling_apply_before_it_starts_means_it_never_runs(
    sqlite_store: SQLiteStore,
) -> None:
    """Guards against a cancelled, still-queued apply committing after its caller gave up."""
    release = threading.Event()
    busy = asyncio.create_task(sqlite_store._run(release.wait, 10))
    task = asyncio.create_task(sqlite_store.apply("vr-1", observe(VaultingStatus.SUCCEEDED)))
    await asyncio.sleep(0)  # both submitted; the thread is busy with the first
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await busy
    assert await sqlite_store.get("vr-1") == new_record("vr-1")
    assert await sqlite_store.last_event_id() == 0


async def test_close_waits_for_queued_work_and_then_refuses_more(sqlite_store: SQLiteStore) -> None:
    """Guards a shutdown racing in-flight calls: submitted work completes, later calls fail."""
    inflight = (
        asyncio.create_task(sqlite_store.apply("vr-1", observe(VaultingStatus.PROCESSING))),
        asyncio.create_task(sqlite_store.get("vr-1")),
    )
    await asyncio.sleep(0)
    await sqlite_store.close()
    event, record = await inflight[0], await inflight[1]
    assert event is not None
    assert record == event.record
