"""The embedded SQLite backend of :class:`~vault_service.store.base.Store` (one replica).

Threading. Every sqlite3 call runs on one dedicated thread (a single-worker executor) that owns
the store's only connection, so the event loop never blocks on disk and the connection is only
ever touched by the thread that created it (sqlite3's ``check_same_thread`` stays on). One
writer thread also serialises transactions without lock contention. On the 2-core target
machine this design runs 21k-27k small commits/s, where aiosqlite (a queue hop per statement)
managed about 4.4k; a whole ``apply`` (read, update, event, commit) runs 4k-5.5k/s, bounded by
the codec and the ~6 pages each commit writes. A unit of work (one call of a public
method) runs start to finish on that thread; if the awaiting task is cancelled meanwhile, the
unit still commits or rolls back as a whole, and the task sees ``CancelledError``. A unit that
has not started when its task is cancelled never runs.

Journal and durability. The database is in WAL mode: readers never block the writer and a
commit appends to the ``-wal`` file instead of rewriting pages. ``synchronous`` (a
configuration choice) decides what a commit survives:

* ``NORMAL`` (default): a committed transaction is in the WAL file (the OS page cache) when
  ``apply`` returns, so it survives the process crashing or being SIGKILLed, which is what a
  container restart does. Power loss or a kernel crash can lose the last commits (never corrupt
  the database), because the WAL is only fsynced at checkpoints.
* ``FULL``: the WAL is fsynced at every commit, so a commit also survives power loss, at a
  throughput cost set by the disk's fsync latency: on the target machine's virtual disk, about
  5k small commits/s instead of 26k, and 2.3k-3k ``apply`` calls/s instead of 4k-5.5k.

Multiple processes. Writes take the write lock at ``BEGIN IMMEDIATE`` and wait up to
``busy_timeout`` for another process (an operator's ``vault-service migrate``, a sqlite3 shell)
to release it, instead of failing half-way through a transaction. ``claim_due`` reads and
moves the schedule in one such transaction, so two stores on one file never claim one record.

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
import functools
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, ParamSpec, TypeVar

from vault_service.domain import (
    Event,
    Observation,
    SessionRequest,
    VaultingRecord,
    apply_observation,
)
from vault_service.store.base import (
    LogEntry,
    OrphanNotification,
    RecordExistsError,
    RecordNotFoundError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    UnreadableRecord,
    check_lease,
    check_limit,
)
from vault_service.store.codec import (
    RECORD_COLUMNS,
    RecordRow,
    decode_instant,
    decode_parameters,
    encode_instant,
    encode_parameters,
    encode_snapshot,
    record_from_row,
    record_to_row,
)
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.event_rows import SELECT_EVENTS, EventRow, ReportedEvents, log_entries
from vault_service.store.keyed_locks import KeyedLocks
from vault_service.store.migrations import SQLITE_MIGRATIONS, Migration, check_schema_version
from vault_service.store.sealing import (
    EVENT_SEALED,
    EVENT_TOKEN,
    LEGACY_ROWS,
    MARK_NEW_DATABASE,
    SELECT_PLAINTEXT_STATE,
    LegacyRows,
    ResealedBatch,
    Rotation,
    SealedColumn,
    allows_plaintext,
    mark_plaintext_free_sql,
    open_body,
    open_record_row,
    plan_reseal,
    plan_upgrade,
    read_claimed_row,
    reseal_columns,
    seal_body,
    seal_record_row,
    seal_token,
)

Synchronous = Literal["NORMAL", "FULL"]
StorePath = str | os.PathLike[str]

_P = ParamSpec("_P")
_T = TypeVar("_T")

BUSY_TIMEOUT_SECONDS: Final = 5.0
_THREAD_NAME: Final = "vault-store-sqlite"
_LATEST_VERSION: Final = SQLITE_MIGRATIONS[-1].version

# The column lists below are built from the codec's constant RecordRow fields, never from input.
_COLUMNS: Final = ", ".join(RECORD_COLUMNS)
_SELECT_RECORD: Final = f"SELECT {_COLUMNS} FROM records WHERE vaulting_request_id = ?"  # noqa: S608
_INSERT_RECORD: Final = (
    f"INSERT INTO records ({_COLUMNS}, next_check_at) "  # noqa: S608
    f"VALUES ({', '.join('?' * (len(RECORD_COLUMNS) + 1))}) "
    "ON CONFLICT (vaulting_request_id) DO NOTHING"
)
_UPDATE_RECORD: Final = (
    "UPDATE records SET "  # noqa: S608
    + ", ".join(f"{column} = ?" for column in RECORD_COLUMNS[1:])
    + ", next_check_at = CASE WHEN ? THEN NULL ELSE coalesce(next_check_at, ?) END"
    + " WHERE vaulting_request_id = ?"
)
_SELECT_DUE: Final = (
    f"SELECT {_COLUMNS} FROM records WHERE next_check_at <= ? "  # noqa: S608
    "ORDER BY next_check_at, vaulting_request_id LIMIT ?"
)
_LEASE: Final = "UPDATE records SET next_check_at = ? WHERE vaulting_request_id = ?"
_INSERT_EVENT: Final = (
    "INSERT INTO events "
    "(vaulting_request_id, owner, source, occurred_at, snapshot, card_token, sealed) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_MARK_PLAINTEXT_FREE: Final = mark_plaintext_free_sql("CAST({} AS BLOB)")
# (absolute database path, vaulting request id): shared by every store of this process.
_CREATION_LOCKS: Final[KeyedLocks[tuple[Path, str]]] = KeyedLocks()
_SCHEMA_MIGRATIONS_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version     INTEGER PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at  INTEGER NOT NULL
    ) STRICT
"""


async def migrate(path: StorePath) -> list[int]:
    """Create or upgrade the database at ``path``; the versions applied, oldest first.

    Backs ``vault-service migrate``. Safe to run again and concurrently with itself: versions
    already applied are skipped.
    """
    # FULL: schema changes are rare, so they may as well survive a power loss too.
    opened = await _start(Path(path), migrate=True, synchronous="FULL")
    await _shut_down(opened.executor, opened.connection)
    return opened.applied


class _Opened(NamedTuple):
    """A connection opened, checked (or migrated) on its own thread: a store's makings."""

    executor: ThreadPoolExecutor
    connection: sqlite3.Connection
    log_id: str
    path: Path
    applied: list[int]
    plaintext: bool


class SQLiteStore:
    """A :class:`~vault_service.store.base.Store` in one SQLite database file.

    Create it with :meth:`open`, which checks (or migrates) the schema before returning.
    """

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        connection: sqlite3.Connection,
        log_id: str,
        path: Path,
        data_keys: DataKeyRing,
        *,
        plaintext: bool,
    ) -> None:
        self._executor = executor
        self._connection = connection
        self._log_id = log_id
        self._path = path
        self._keys = data_keys
        # Whether legacy plaintext card data reads (sealing module docstring), as of open.
        self._plaintext = plaintext
        self._unreadable_events = ReportedEvents()
        self._closed = False

    @property
    def log_id(self) -> str:
        return self._log_id

    @property
    def allows_plaintext(self) -> bool:
        """Whether legacy plaintext card data reads (the database records no plaintext state)."""
        return self._plaintext

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
        :class:`SchemaVersionError`, and no file is created; a database migrated by a newer
        build is always refused. ``synchronous`` is the durability level (module docstring).
        Card data is sealed with ``data_keys`` (:mod:`vault_service.store.sealing`).
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        opened = await _start(Path(path), migrate=auto_migrate, synchronous=synchronous)
        return cls(
            opened.executor,
            opened.connection,
            opened.log_id,
            opened.path,
            data_keys,
            plaintext=opened.plaintext,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await _shut_down(self._executor, self._connection)

    async def get(self, vaulting_request_id: str) -> VaultingRecord | None:
        return await self._run(self._select_record, self._connection, vaulting_request_id)

    async def insert(self, record: VaultingRecord, *, next_check_at: datetime) -> None:
        await self._run(self._insert, record, next_check_at)

    async def keep_session_request(
        self, vaulting_request_id: str, request: SessionRequest, at: datetime
    ) -> SessionRequest:
        return await self._run(self._keep_session_request, vaulting_request_id, request, at)

    async def apply(self, vaulting_request_id: str, observation: Observation) -> Event | None:
        return await self._run(self._apply, vaulting_request_id, observation)

    async def record_orphan(
        self, vaulting_request_id: str, body: bytes, received_at: datetime
    ) -> None:
        await self._run(self._record_orphan, vaulting_request_id, body, received_at)

    async def list_orphans(self, *, limit: int) -> list[OrphanNotification]:
        check_limit(limit)
        return await self._run(self._list_orphans, limit)

    async def events_after(
        self,
        after_event_id: int,
        *,
        limit: int,
        owner: str | None = None,
        vaulting_request_ids: frozenset[str] | None = None,
    ) -> list[LogEntry]:
        check_limit(limit)
        if vaulting_request_ids is not None and not vaulting_request_ids:
            self._check_open()
            return []
        return await self._run(
            self._events_after, after_event_id, limit, owner, vaulting_request_ids
        )

    async def last_event_id(self) -> int:
        return await self._run(self._last_event_id)

    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta
    ) -> list[VaultingRecord | UnreadableRecord]:
        check_limit(limit)
        check_lease(lease)
        rows = await self._run(self._claim_due, now, limit, lease)
        # Decoded after the lease committed: a row that does not decode must not roll it back.
        return [read_claimed_row(self._keys, row, plaintext=self._plaintext) for row in rows]

    async def reschedule(self, vaulting_request_id: str, next_check_at: datetime) -> None:
        await self._run(self._reschedule, vaulting_request_id, next_check_at)

    async def reseal(self, *, batch_size: int) -> Rotation:
        """Seal every card value that is not under the active data key again under it (one
        pass per column); backs ``vault-service rotate-data-key``.

        Each batch of ``batch_size`` rows is its own short write transaction, so the pass can
        be interrupted at any point and run again, and a serving process waits at most one
        batch for the write lock. A row is only replaced if it still holds the value that was
        read (compare and swap), which the write lock already guarantees here. A value that
        cannot be opened is left as it is and reported; when there is none, the database
        records that it holds no plaintext (sealing module docstring).
        """
        check_limit(batch_size)

        async def batch(column: SealedColumn, after: object) -> ResealedBatch:
            return await self._run(self._reseal_batch, column, after, batch_size)

        async def upgrade(column: SealedColumn, after: object) -> ResealedBatch:
            return await self._run(self._upgrade_batch, LEGACY_ROWS[column], after, batch_size)

        async def mark() -> bool:
            return await self._run(_mark_plaintext_free, self._connection)

        return await reseal_columns(
            batch, upgrade=upgrade, batch_size=batch_size, mark_plaintext_free=mark
        )

    @contextlib.asynccontextmanager
    async def creation_lock(self, vaulting_request_id: str) -> AsyncIterator[None]:
        """See the module docstring ("One serving process") for why in-process is enough."""
        self._check_open()
        async with _CREATION_LOCKS.hold((self._path, vaulting_request_id)):
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the SQLite store is closed")

    async def _run(self, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``work(*args, **kwargs)`` on the store's thread, awaited without blocking the loop."""
        self._check_open()
        return await asyncio.wrap_future(self._executor.submit(work, *args, **kwargs))

    # Everything below runs on the store's thread.

    def _insert(self, record: VaultingRecord, next_check_at: datetime) -> None:
        row = seal_record_row(self._keys, record_to_row(record))
        check_at = None if record.reconciled else encode_instant(next_check_at)

        def work(connection: sqlite3.Connection) -> None:
            if connection.execute(_INSERT_RECORD, (*row, check_at)).rowcount == 0:
                existing = self._select_record(connection, record.vaulting_request_id)
                assert existing is not None  # records are never deleted
                raise RecordExistsError(existing)

        _transaction(self._connection, work)

    def _keep_session_request(
        self, vaulting_request_id: str, request: SessionRequest, at: datetime
    ) -> SessionRequest:
        def work(connection: sqlite3.Connection) -> SessionRequest:
            connection.execute(
                "INSERT INTO session_requests "
                "(vaulting_request_id, owner, parameters, body, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (vaulting_request_id) DO NOTHING",
                (
                    vaulting_request_id,
                    request.owner,
                    encode_parameters(request.parameters),
                    request.body,
                    encode_instant(at),
                ),
            )
            owner, parameters, body = connection.execute(
                "SELECT owner, parameters, body FROM session_requests "
                "WHERE vaulting_request_id = ?",
                (vaulting_request_id,),
            ).fetchone()
            return SessionRequest(owner, decode_parameters(parameters), bytes(body))

        return _transaction(self._connection, work)

    def _apply(self, vaulting_request_id: str, observation: Observation) -> Event | None:
        def work(connection: sqlite3.Connection) -> Event | None:
            record = self._select_record(connection, vaulting_request_id)
            if record is None:
                raise RecordNotFoundError(vaulting_request_id)
            changed = apply_observation(record, observation)
            if changed is None:
                return None
            row = seal_record_row(self._keys, record_to_row(changed))
            occurred_at = encode_instant(observation.observed_at)
            connection.execute(
                _UPDATE_RECORD,
                (*row[1:], changed.reconciled, occurred_at, row.vaulting_request_id),
            )
            snapshot, card_token, sealed = encode_snapshot(changed)
            cursor = connection.execute(
                _INSERT_EVENT,
                (
                    vaulting_request_id,
                    changed.owner,
                    observation.source.value,
                    occurred_at,
                    snapshot,
                    seal_token(self._keys, EVENT_TOKEN, vaulting_request_id, card_token),
                    seal_token(self._keys, EVENT_SEALED, vaulting_request_id, sealed),
                ),
            )
            assert cursor.lastrowid is not None
            return Event(cursor.lastrowid, observation.source, decode_instant(occurred_at), changed)

        return _transaction(self._connection, work)

    def _record_orphan(self, vaulting_request_id: str, body: bytes, received_at: datetime) -> None:
        self._connection.execute(
            "INSERT INTO orphan_notifications "
            "(vaulting_request_id, body, body_sha256, received_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (vaulting_request_id, body_sha256) DO NOTHING",
            (
                vaulting_request_id,
                seal_body(self._keys, vaulting_request_id, body),
                # Of the plaintext: a retried copy seals to a new ciphertext but is the same body.
                hashlib.sha256(body).digest(),
                encode_instant(received_at),
            ),
        )

    def _list_orphans(self, limit: int) -> list[OrphanNotification]:
        rows = self._connection.execute(
            "SELECT vaulting_request_id, body, received_at FROM orphan_notifications "
            "ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            OrphanNotification(
                vaulting_request_id,
                open_body(self._keys, vaulting_request_id, body, plaintext=self._plaintext),
                decode_instant(received_at),
            )
            for vaulting_request_id, body, received_at in rows
        ]

    def _events_after(
        self,
        after_event_id: int,
        limit: int,
        owner: str | None,
        vaulting_request_ids: frozenset[str] | None,
    ) -> list[LogEntry]:
        conditions = ["id > ?"]
        parameters: list[object] = [after_event_id]
        if owner is not None:
            conditions.append("owner = ?")
            parameters.append(owner)
        if vaulting_request_ids is not None:
            # One JSON parameter instead of one placeholder per id: no variable-count limit.
            conditions.append("vaulting_request_id IN (SELECT value FROM json_each(?))")
            parameters.append(json.dumps(sorted(vaulting_request_ids)))
        sql = SELECT_EVENTS + " AND ".join(conditions) + " ORDER BY id LIMIT ?"
        rows = [
            EventRow(event_id, request_id, owner, source, decode_instant(occurred_at), *rest)
            for event_id, request_id, owner, source, occurred_at, *rest in (
                self._connection.execute(sql, [*parameters, limit])
            )
        ]
        return log_entries(rows, self._keys, self._unreadable_events, plaintext=self._plaintext)

    def _last_event_id(self) -> int:
        last: int = _scalar(self._connection, "SELECT coalesce(max(id), 0) FROM events")
        return last

    def _claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[RecordRow]:
        due_at, leased_until = encode_instant(now), encode_instant(now + lease)

        def work(connection: sqlite3.Connection) -> list[RecordRow]:
            rows = [RecordRow(*row) for row in connection.execute(_SELECT_DUE, (due_at, limit))]
            connection.executemany(
                _LEASE, [(leased_until, row.vaulting_request_id) for row in rows]
            )
            return rows

        return _transaction(self._connection, work)

    def _reschedule(self, vaulting_request_id: str, next_check_at: datetime) -> None:
        # Reconciled records have no next check (a CHECK constraint says so): they stay
        # unscheduled.
        cursor = self._connection.execute(
            "UPDATE records SET next_check_at = ? "
            "WHERE vaulting_request_id = ? AND next_check_at IS NOT NULL",
            (encode_instant(next_check_at), vaulting_request_id),
        )
        if cursor.rowcount == 0 and not _exists(self._connection, vaulting_request_id):
            raise RecordNotFoundError(vaulting_request_id)

    def _reseal_batch(self, column: SealedColumn, after: object, limit: int) -> ResealedBatch:
        # Table and column names come from the constant SEALED_COLUMNS, never from input.
        select = (
            f"SELECT {column.key}, vaulting_request_id, {column.column} FROM {column.table} "  # noqa: S608
            f"WHERE {column.key} > ? AND {column.column} IS NOT NULL ORDER BY {column.key} LIMIT ?"
        )
        update = (
            f"UPDATE {column.table} SET {column.column} = ? "  # noqa: S608
            f"WHERE {column.key} = ? AND {column.column} = ?"
        )

        def work(connection: sqlite3.Connection) -> ResealedBatch:
            rows = connection.execute(select, (after, limit)).fetchall()
            plan = plan_reseal(self._keys, column, rows, plaintext=self._plaintext)
            swapped = sum(
                connection.execute(update, (new, key, old)).rowcount for key, old, new in plan.swaps
            )
            last = rows[-1][0] if rows else None
            return ResealedBatch(len(rows), last, len(plan.swaps), swapped, plan.unreadable)

        return _transaction(self._connection, work)

    def _upgrade_batch(self, legacy: LegacyRows, after: object, limit: int) -> ResealedBatch:
        table, key, sealed = legacy.sealed.table, legacy.sealed.key, legacy.sealed.column
        # Names come from the constant LEGACY_ROWS, never from input.
        select = (
            f"SELECT {key}, vaulting_request_id, {', '.join(legacy.columns)} FROM {table} "  # noqa: S608
            f"WHERE {key} > ? AND {sealed} IS NULL ORDER BY {key} LIMIT ?"
        )
        update = (
            f"UPDATE {table} SET "  # noqa: S608
            + ", ".join(f"{column} = ?" for column in (*legacy.columns, sealed))
            + f" WHERE {key} = ? AND {sealed} IS NULL"
        )

        def work(connection: sqlite3.Connection) -> ResealedBatch:
            rows = connection.execute(select, (after, limit)).fetchall()
            plan = plan_upgrade(self._keys, legacy, ((r[0], r[1], tuple(r[2:])) for r in rows))
            swapped = sum(
                connection.execute(update, (*values, new, row_key)).rowcount
                for row_key, values, new in plan.writes
            )
            last = rows[-1][0] if rows else None
            return ResealedBatch(len(rows), last, len(plan.writes), swapped, plan.unreadable)

        return _transaction(self._connection, work)

    def _select_record(
        self, connection: sqlite3.Connection, vaulting_request_id: str
    ) -> VaultingRecord | None:
        row = connection.execute(_SELECT_RECORD, (vaulting_request_id,)).fetchone()
        if row is None:
            return None
        return record_from_row(
            open_record_row(self._keys, RecordRow(*row), plaintext=self._plaintext)
        )


def _scalar(connection: sqlite3.Connection, sql: str) -> Any:
    """The first column of the first row of ``sql`` (which always returns a row)."""
    return connection.execute(sql).fetchone()[0]


def _scalar_or_none(connection: sqlite3.Connection, sql: str) -> Any:
    """The first column of the first row of ``sql``, ``None`` when it returns no row."""
    row = connection.execute(sql).fetchone()
    return None if row is None else row[0]


def _mark_plaintext_free(connection: sqlite3.Connection) -> bool:
    """Record "no plaintext" unless some value still lacks an envelope; whether it is."""
    connection.execute(_MARK_PLAINTEXT_FREE)
    return not allows_plaintext(_scalar_or_none(connection, SELECT_PLAINTEXT_STATE))


def _exists(connection: sqlite3.Connection, vaulting_request_id: str) -> bool:
    found = connection.execute(
        "SELECT 1 FROM records WHERE vaulting_request_id = ?", (vaulting_request_id,)
    ).fetchone()
    return found is not None


async def _start(path: Path, *, migrate: bool, synchronous: Synchronous) -> _Opened:
    """Connect and check (or migrate) on a new store thread, which owns the connection."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_THREAD_NAME)
    connecting = executor.submit(_connect, path, migrate=migrate, synchronous=synchronous)
    try:
        connection, log_id, applied, resolved, plaintext = await asyncio.wrap_future(connecting)
    except BaseException:
        # Cancelled or failed: queued behind the connect, this closes a connection that it
        # may still have opened, and the thread exits once it has.
        executor.submit(_close_opened, connecting)
        executor.shutdown(wait=False)
        raise
    return _Opened(executor, connection, log_id, resolved, applied, plaintext)


async def _shut_down(executor: ThreadPoolExecutor, connection: sqlite3.Connection) -> None:
    """Close ``connection`` on its thread after the work queued before, then end the thread."""
    closing = executor.submit(connection.close)
    executor.shutdown(wait=False)
    # Shielded so that a cancelled close still closes the connection after queued work.
    await asyncio.shield(asyncio.wrap_future(closing))
    # The thread has nothing left to do: joining it does not hold up the loop.
    executor.shutdown(wait=True)


def _transaction(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """``work`` inside one write transaction: all of it commits, or none of it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work(connection)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return result


def _connect(
    path: Path, *, migrate: bool, synchronous: Synchronous
) -> tuple[sqlite3.Connection, str, list[int], Path, bool]:
    """Open, configure and version-check (or migrate) the database; runs on the store thread.

    Also returns the file's resolved path, which names it in ``creation_lock``'s keys, and
    whether the database may hold legacy plaintext card data.
    """
    # mode=rw: only migrating may create the file, so a mistyped path is not silently an empty
    # new database.
    uri = f"{path.absolute().as_uri()}?mode={'rwc' if migrate else 'rw'}"
    try:
        connection = sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS
        )
    except sqlite3.OperationalError:
        if not migrate and not path.exists():
            raise SchemaVersionError(
                f"there is no database at {path}: run `vault-service migrate`"
            ) from None
        raise
    try:
        _configure(connection, path, synchronous)
        check_schema_version(
            _schema_version(connection),
            known=_LATEST_VERSION,
            where=str(path),
            will_migrate=migrate,
        )
        applied = _apply_migrations(connection) if migrate else []
        log_id: str = _scalar(connection, "SELECT value FROM meta WHERE key = 'log_id'")
        plaintext = allows_plaintext(_scalar_or_none(connection, SELECT_PLAINTEXT_STATE))
        if migrate and plaintext:
            # Migrated before the state existed: marked as soon as it holds no plaintext, not
            # only by a rotation (a scan of the sealed columns, until the mark is set).
            plaintext = not _mark_plaintext_free(connection)
        resolved = path.resolve()
    except BaseException:
        connection.close()
        raise
    return connection, log_id, applied, resolved, plaintext


def _configure(connection: sqlite3.Connection, path: Path, synchronous: Synchronous) -> None:
    mode = _scalar(connection, "PRAGMA journal_mode = WAL")
    if mode != "wal":
        raise StoreError(
            f"the database {path} cannot use write-ahead logging (journal mode {mode!r}); "
            "put it on a local filesystem"
        )
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    connection.execute("PRAGMA foreign_keys = ON")


def _close_opened(
    connecting: Future[tuple[sqlite3.Connection, str, list[int], Path, bool]],
) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result()[0].close()


def _schema_version(connection: sqlite3.Connection) -> int:
    table = connection.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if table is None:
        return 0
    version: int = _scalar(connection, "SELECT coalesce(max(version), 0) FROM schema_migrations")
    return version


def _apply_migrations(connection: sqlite3.Connection) -> list[int]:
    """Apply the migrations the database lacks, each in its own transaction."""
    return [
        migration.version
        for migration in SQLITE_MIGRATIONS
        if _transaction(connection, functools.partial(_apply_migration, migration=migration))
    ]


def _apply_migration(connection: sqlite3.Connection, migration: Migration) -> bool:
    """Apply ``migration`` unless already applied (a concurrent migrate may have done it)."""
    connection.execute(_SCHEMA_MIGRATIONS_TABLE)
    done = connection.execute(
        "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
    ).fetchone()
    if done is not None:
        return False
    for statement in migration.statements:
        connection.execute(statement)
    if migration is SQLITE_MIGRATIONS[0]:
        connection.execute(MARK_NEW_DATABASE)
    connection.execute(
        "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.description, encode_instant(datetime.now(UTC))),
    )
    return True
