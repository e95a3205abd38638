"""The embedded SQLite backend of :class:`~vault_service.store.base.Store` (one replica).

Threading. Every sqlite3 call runs on the store's one thread, which owns its only connection
(:mod:`vault_service.store.sqlite_thread`). ``apply``, ``apply_batch``, ``claim_due`` and each
write of a rotation batch are one submission, so they commit or roll back as a whole even when
their caller is cancelled; the other methods are statements that are each atomic alone
(:mod:`vault_service.store.sql_store`). ``close`` lets the units in flight finish first.

Journal and durability. The database is in WAL mode: readers never block the writer and a
commit appends to the ``-wal`` file instead of rewriting pages. ``synchronous`` (a
configuration choice) decides what a commit survives:

* ``NORMAL`` (default): a committed transaction is in the WAL file (the OS page cache) when
  ``apply`` returns, so it survives the process crashing or being SIGKILLed, which is what a
  container restart does. Power loss or a kernel crash can lose the last commits (never corrupt
  the database), because the WAL is only fsynced at checkpoints.
* ``FULL``: the WAL is fsynced at every commit, so a commit also survives power loss, at a
  throughput cost set by the disk's fsync latency (``bench/results/store.md``).

Multiple processes. Writes take the write lock (at ``BEGIN IMMEDIATE``, or the statement's own)
and wait up to ``busy_timeout`` for another process (an operator's ``vault-service migrate``, a
sqlite3 shell) to release it, instead of failing half-way through a transaction. ``claim_due``
reads and moves the schedule in one such transaction, so two stores on one file never claim one
record.

Space. Retention deletes rows with ``secure_delete`` on (their bytes are overwritten) and then
runs an incremental vacuum, which gives the freed pages back to the file system, and a WAL
checkpoint that truncates the WAL. Incremental vacuum needs ``auto_vacuum = INCREMENTAL``,
which SQLite only sets on a database without tables: a new database gets it at creation, and
``vault-service migrate`` (or a start with auto-migration) converts an older one with one
``VACUUM``, a full rewrite that needs as much free disk as the database's size.

One serving process. SQLite is the single-replica backend: one ``vault-service serve`` owns the
file. ``creation_lock`` is therefore an in-process asyncio lock keyed by (database file, id),
which also covers several stores opened on one file in one process (tests do that); it needs
no database round trip and nothing can be left locked by a crash. A second serving process on
the same file is not a supported deployment (use PostgreSQL for replicas): it would still
store one record per id, but could make a second Antom call for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, ParamSpec, TypeVar

from vault_service.domain import Event, Observation, SessionRequest, VaultingRecord
from vault_service.store.base import Applied
from vault_service.store.codec import RECORD_COLUMNS, RecordRow, decode_instant, encode_instant
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.keyed_locks import KeyedLocks
from vault_service.store.migrations import SQLITE_MIGRATIONS
from vault_service.store.migrator import Schema, open_schema, schema_migrations_table
from vault_service.store.pruning import RecordBatch
from vault_service.store.sealer import Sealer
from vault_service.store.sealing import LegacyRows, SealedColumn, mark_plaintext_free_sql
from vault_service.store.sql import Dialect, Row, Session, no_schema_lock, numbered_qmarks
from vault_service.store.sql_store import (
    KEEP_SESSION_REQUEST,
    SELECT_RECORD,
    UPDATE_RECORD,
    Change,
    SQLStore,
    upgrade_statement,
)
from vault_service.store.sqlite_thread import StoreThread, Synchronous, transaction

__all__ = ["SQLiteStore", "StorePath", "Synchronous", "migrate"]

StorePath = str | os.PathLike[str]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The statements below are built from the codec's constant RecordRow fields, never from input.
_SELECT_DUE: Final = (
    f"SELECT {', '.join(RECORD_COLUMNS)} FROM records WHERE next_check_at <= ? "  # noqa: S608
    "ORDER BY next_check_at, vaulting_request_id LIMIT ?"
)
_SELECT_RECORDS: Final = (
    f"SELECT {', '.join(RECORD_COLUMNS)} FROM records "  # noqa: S608
    "WHERE vaulting_request_id IN (SELECT value FROM json_each(?))"
)
"""The records of a batch's ids, given as one JSON array (no variable-count limit)."""
_LEASE: Final = "UPDATE records SET next_check_at = ? WHERE vaulting_request_id = ?"
_INSERT_EVENTS: Final = (
    "INSERT INTO events "
    "(vaulting_request_id, owner, source, occurred_at, snapshot, card_token, sealed) "
    "VALUES {rows}"
)
_EVENT_ROW: Final = "(?, ?, ?, ?, ?, ?, ?)"
_EVENTS_PER_INSERT: Final = 128
"""Rows per events INSERT: 7 parameters each stay below 999, the oldest SQLite's limit."""
_INCREMENTAL_VACUUM: Final = 2
"""``PRAGMA auto_vacuum``'s value for INCREMENTAL."""
# (absolute database path, vaulting request id): shared by every store of this process.
_CREATION_LOCKS: Final[KeyedLocks[tuple[Path, str]]] = KeyedLocks()

SQLITE: Final = Dialect(
    name="SQLite",
    migrations=SQLITE_MIGRATIONS,
    schema_migrations_table=schema_migrations_table(
        integer="INTEGER", text="TEXT", applied_at="INTEGER NOT NULL", options="STRICT"
    ),
    schema_migrations_exists=(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'"
    ),
    mark_plaintext_free=mark_plaintext_free_sql("CAST({} AS BLOB)"),
    # BEGIN IMMEDIATE already makes one migrating process wait for another.
    hold_schema=no_schema_lock,
    # One JSON parameter instead of one placeholder per id: no variable-count limit.
    in_texts="{column} IN (SELECT value FROM json_each({values}))",
    texts=lambda texts: json.dumps(sorted(texts)),
    # Without it, a filtered stream's read walked the owner's whole history in events_by_owner.
    unindexed="+{column}",
    # Labels are [key, value] pairs in the parameters' JSON (the codec).
    has_label=(
        "EXISTS (SELECT 1 FROM json_each(records.parameters, '$.labels') AS label"
        " WHERE json_extract(label.value, '$[0]') = {key}"
        " AND json_extract(label.value, '$[1]') = {value})"
    ),
    instant=encode_instant,
    read_instant=decode_instant,
    record_row=lambda row: RecordRow(*row),
    record_values=list,
)


async def migrate(path: StorePath) -> list[int]:
    """Create or upgrade the database at ``path``; the versions applied, oldest first.

    Backs ``vault-service migrate``. Safe to run again and concurrently with itself: versions
    already applied are skipped.
    """
    # FULL: schema changes are rare, so they may as well survive a power loss too.
    thread, schema = await _start(Path(path), migrate=True, synchronous="FULL")
    await thread.shut_down()
    return schema.applied


class SQLiteStore(SQLStore):
    """A :class:`~vault_service.store.base.Store` in one SQLite database file.

    Create it with :meth:`open`, which checks (or migrates) the schema before returning.
    """

    dialect = SQLITE

    def __init__(self, thread: StoreThread, log_id: str, sealer: Sealer) -> None:
        super().__init__(log_id, sealer)
        self._thread = thread
        self._connection = thread.connection
        self._sessions = 0
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self._pruning = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: StorePath,
        *,
        auto_migrate: bool,
        data_keys: DataKeyRing,
        synchronous: Synchronous = "NORMAL",
    ) -> SQLiteStore:
        """Open the database at ``path``, migrating it first when ``auto_migrate``.

        Without ``auto_migrate`` a missing, unmigrated or outdated database is refused with
        :class:`~vault_service.store.base.SchemaVersionError`, and no file is created; a
        database migrated by a newer build is always refused. ``synchronous`` is the
        durability level (module docstring). Card data is sealed with ``data_keys``
        (:mod:`vault_service.store.sealing`).
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        thread, schema = await _start(Path(path), migrate=auto_migrate, synchronous=synchronous)
        return cls(thread, schema.log_id, Sealer(data_keys, plaintext=schema.plaintext))

    async def close(self) -> None:
        """Close the connection once the units of work in flight are done."""
        if self._closed:
            return
        self._closed = True
        # Shielded so that a cancelled close still closes the connection after queued work.
        await asyncio.shield(self._shut_down())

    async def apply(self, vaulting_request_id: str, observation: Observation) -> Event | None:
        def work(connection: sqlite3.Connection) -> Event | None:
            return self._apply_on(connection, vaulting_request_id, observation)

        return await self._run(transaction, self._connection, work)

    async def record_or_request(
        self, vaulting_request_id: str, request: SessionRequest, at: datetime
    ) -> VaultingRecord | SessionRequest:
        """Both statements in one submission: one trip to the store thread, not two."""
        kept_values = self._kept_values(vaulting_request_id, request, at)

        def work(connection: sqlite3.Connection) -> tuple[Row | None, Row | None]:
            row = connection.execute(numbered_qmarks(SELECT_RECORD), (vaulting_request_id,))
            record: Row | None = row.fetchone()
            if record is not None:
                return record, None
            kept = connection.execute(numbered_qmarks(KEEP_SESSION_REQUEST), kept_values)
            return None, kept.fetchone()

        return self._record_or_request(*await self._run(work, self._connection))

    async def apply_batch(self, applies: Sequence[tuple[str, Observation]]) -> list[Applied]:
        """One write transaction: the batch's records read in one statement, the applies
        planned together (:meth:`_plan_batch`), then the changes' updates and their events
        (:func:`_write_all`).

        Each sqlite3 statement step releases the GIL, and on the store's thread every release
        waits for the busy event loop to hand it back; planned together, an apply takes about
        two steps (its share of the read, its update; the events are one INSERT per 128)
        instead of six (a savepoint, a read and its end, the update, the event, the release).

        Should a write fail, the batch's writes are rolled back to a savepoint and the applies
        run again one by one, each in a SAVEPOINT of its own, so that the failure is the
        outcome of its apply alone and undoes none of the others (as the PostgreSQL backend
        does). A failed read fails the whole batch, as one would fail every apply in it.
        """

        def work(connection: sqlite3.Connection) -> list[Applied]:
            ids = json.dumps(sorted({rid for rid, _ in applies}))
            rows = connection.execute(_SELECT_RECORDS, (ids,)).fetchall()
            plan = self._plan_batch(applies, {row[0]: row for row in rows})
            connection.execute("SAVEPOINT batch")
            try:
                outcomes = _write_all(connection, plan)
            except Exception:  # a refused write: each apply on its own
                connection.execute("ROLLBACK TO batch")
                outcomes = [self._apply_alone(connection, rid, obs) for rid, obs in applies]
            connection.execute("RELEASE batch")
            return outcomes

        return await self._run(transaction, self._connection, work) if applies else []

    def _apply_alone(
        self, connection: sqlite3.Connection, vaulting_request_id: str, observation: Observation
    ) -> Applied:
        """One apply of a batch in a SAVEPOINT: should it raise, it is rolled back and its
        exception is its outcome."""
        connection.execute("SAVEPOINT apply")
        try:
            outcome: Applied = self._apply_on(connection, vaulting_request_id, observation)
        except Exception as exc:  # the outcome of this apply alone
            connection.execute("ROLLBACK TO apply")
            outcome = exc
        connection.execute("RELEASE apply")
        return outcome

    def _apply_on(
        self, connection: sqlite3.Connection, vaulting_request_id: str, observation: Observation
    ) -> Event | None:
        """One apply's statements, on the store thread, inside the caller's transaction."""
        row = connection.execute(numbered_qmarks(SELECT_RECORD), (vaulting_request_id,))
        change = self._change(vaulting_request_id, observation, row.fetchone())
        return None if change is None else _write(connection, change)

    @contextlib.asynccontextmanager
    async def creation_lock(self, vaulting_request_id: str) -> AsyncIterator[None]:
        """See the module docstring ("One serving process") for why in-process is enough."""
        self._check_open()
        async with _CREATION_LOCKS.hold((self._thread.path, vaulting_request_id)):
            yield

    async def _run(self, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``work(*args, **kwargs)`` on the store's thread, as one unit of work."""
        self._check_open()
        return await self._thread.run(work, *args, **kwargs)

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Session]:
        self._check_open()
        self._sessions += 1
        self._no_sessions.clear()
        try:
            yield self._thread
        finally:
            self._sessions -= 1
            if not self._sessions:
                self._no_sessions.set()

    @contextlib.asynccontextmanager
    async def _pruner(self) -> AsyncIterator[Session | None]:
        """One serving process per file (module docstring): an in-process lock suffices."""
        if self._pruning.locked():
            yield None
            return
        async with self._pruning, self._session() as db:
            yield db

    async def _reclaim(self, db: Session) -> None:
        """Return the freed pages to the file system (incremental vacuum) and checkpoint the
        WAL into the database and truncate it, so that deleted rows, already overwritten by
        ``secure_delete``, leave no copy in either file."""
        del db  # a script, on the connection itself
        await self._run(_reclaim_space, self._connection)

    async def _shut_down(self) -> None:
        await self._no_sessions.wait()
        await self._thread.shut_down()

    async def _delete_records(self, db: Session, batch: RecordBatch) -> int:
        del db  # one write transaction on the store thread, which no apply can interleave
        check, parameters = batch.lock(self.dialect)

        def work(connection: sqlite3.Connection) -> int:
            locked = [rid for (rid,) in connection.execute(numbered_qmarks(check), parameters)]
            deleted = 0
            for sql, arguments in batch.deletes(self.dialect, locked) if locked else []:
                deleted = connection.execute(numbered_qmarks(sql), arguments).rowcount
            return deleted

        return await self._run(transaction, self._connection, work)

    async def _claim(self, now: datetime, limit: int, lease: timedelta) -> list[Row]:
        due_at, leased_until = encode_instant(now), encode_instant(now + lease)

        def work(connection: sqlite3.Connection) -> list[Row]:
            rows: list[Row] = connection.execute(_SELECT_DUE, (due_at, limit)).fetchall()
            connection.executemany(_LEASE, [(leased_until, row[0]) for row in rows])
            return rows

        return await self._run(transaction, self._connection, work)

    async def _swap(
        self, column: SealedColumn, swaps: list[tuple[str | int, str | bytes, str | bytes]]
    ) -> int:
        # Names come from the constant SEALED_COLUMNS, never from input.
        update = (
            f"UPDATE {column.table} SET {column.column} = ? "  # noqa: S608
            f"WHERE {column.key} = ? AND {column.column} = ?"
        )
        return await self._run(_each, self._connection, update, [(n, k, o) for k, o, n in swaps])

    async def _upgrade(
        self, legacy: LegacyRows, writes: list[tuple[str | int, tuple[str | None, ...], str]]
    ) -> int:
        update = numbered_qmarks(upgrade_statement(legacy))
        rows = [(key, *values, sealed) for key, values, sealed in writes]
        return await self._run(_each, self._connection, update, rows)


def _write(connection: sqlite3.Connection, change: Change) -> Event:
    """``change``'s record update and appended event, on the store thread."""
    connection.execute(numbered_qmarks(UPDATE_RECORD), change.update)
    (appended,) = _append_events(connection, [change])
    return change.event(appended)


def _write_all(
    connection: sqlite3.Connection, plan: list[Change | Exception | None]
) -> list[Applied]:
    """The planned changes' record updates, then their events a chunk of rows per statement
    (one step instead of one per event); each outcome of ``plan``, a change replaced by its
    event."""
    changes = [change for change in plan if isinstance(change, Change)]
    connection.executemany(numbered_qmarks(UPDATE_RECORD), [change.update for change in changes])
    event_ids: list[int] = []
    for start in range(0, len(changes), _EVENTS_PER_INSERT):
        event_ids += _append_events(connection, changes[start : start + _EVENTS_PER_INSERT])
    appended = iter(event_ids)
    return [
        change.event(next(appended)) if isinstance(change, Change) else change for change in plan
    ]


def _append_events(connection: sqlite3.Connection, changes: list[Change]) -> range:
    """The events of ``changes`` in one INSERT; their ids, in order.

    The rows get consecutive ids in the statement's order, ending at its ``lastrowid``:
    AUTOINCREMENT gives each new row one more than the highest id the table ever held, and
    the transaction holds the database's only write lock.
    """
    cursor = connection.execute(
        _INSERT_EVENTS.format(rows=",".join([_EVENT_ROW] * len(changes))),
        [value for change in changes for value in change.event_columns],
    )
    last = cursor.lastrowid
    assert last is not None
    assert cursor.rowcount == len(changes)
    return range(last - len(changes) + 1, last + 1)


def _reclaim_space(connection: sqlite3.Connection) -> None:
    # As a script: incremental_vacuum frees one page per step, and a script steps it to the
    # end where execute() steps once.
    connection.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")


def _each(connection: sqlite3.Connection, sql: str, rows: Sequence[Sequence[object]]) -> int:
    """``sql`` once per row in one write transaction; how many rows it changed in all."""
    return transaction(connection, lambda c: sum(c.execute(sql, row).rowcount for row in rows))


async def _start(
    path: Path, *, migrate: bool, synchronous: Synchronous
) -> tuple[StoreThread, Schema]:
    """The store's thread on a checked (or migrated) database, and what the check found."""
    thread = await StoreThread.start(path, create=migrate, synchronous=synchronous)
    try:
        schema = await open_schema(thread, SQLITE, where=str(path), migrate=migrate)
        if migrate and await thread.fetchval("PRAGMA auto_vacuum") != _INCREMENTAL_VACUUM:
            # A database created before incremental vacuum: one full rewrite turns it on.
            await thread.execute("VACUUM")
    except BaseException:
        await asyncio.shield(thread.shut_down())
        raise
    return thread, schema
