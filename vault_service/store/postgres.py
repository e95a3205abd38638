"""The PostgreSQL backend of :class:`~vault_service.store.base.Store`: many replicas, one database.

Driver: asyncpg rather than psycopg 3. Measured on the 2-core target machine against the local
PostgreSQL 15, 2,000 ``apply`` transactions then 2,000 ``get`` calls at concurrency 16, the same
SQL and codec on both sides (psycopg 3.3.9 with its C extension and psycopg_pool 3.3.3; medians
of five rounds, in two runs): asyncpg ran 1,600-2,260 applies/s and 11,200-12,400 gets/s,
psycopg 1,080-1,770 and 9,500-9,700; asyncpg spent 310-350 us of client CPU per apply against
480-500, and 73-79 us per get against 98-101. Wall-clock rates swing with the disk (every apply
is a commit); the CPU per call, which is what a replica's core spends, is steadily 20-35% lower.
asyncpg also brings LISTEN callbacks on a plain connection (the wake-up listener uses them), a
pool that can reset connections with ``pg_advisory_unlock_all()`` (the lock pool below relies on
it), and maintained type stubs (asyncpg-stubs). Its one trap, prepared statements through a
transaction-mode pooler, does not apply: replicas connect to PostgreSQL directly (or through a
session-mode pooler, which LISTEN needs anyway). The main pool skips asyncpg's default reset
query on release (see :func:`_keep_session`): it cost a round trip per call.

Event ordering: appends are serialised. An event id comes from an identity sequence when the
row is inserted, but sequences hand out ids at insert time, not at commit: with two concurrent
writers, id 8 can commit and be read before id 7 commits, and a reader resuming after 8 would
never see 7. ``apply`` therefore takes one transaction-scoped advisory lock
(:data:`EVENT_APPEND_LOCK`) in the statement that inserts the event, after the record update,
and keeps it until commit. Appends then get their ids in commit order, and a reader that has
seen id N can never later see a new id below N, so a cursor stays a single integer, ``max(id)``
is a safe resume point, and ``events_after`` is a plain index range scan. The alternative, a
commit-safe horizon (read only ids below the oldest in-flight ``xid8``), keeps appends
parallel but makes every cursor two-dimensional and holds readers back behind any slow
transaction. The price is a serialisation point of one statement and one commit per event:
saturated by 16 concurrent applies on the target machine, appends ran at 1,000-1,800/s against
1,100-2,800/s unserialised (commits can no longer share an fsync), whereas vaulting results
are low-volume (a few events per saved card), orders of magnitude below either. The same
statement NOTIFYs :data:`EVENTS_CHANNEL` with the event id (a hint only; readers read the log),
which PostgreSQL delivers exactly when, and only if, the transaction commits.

Reconciliation: ``claim_due`` picks due records with ``FOR UPDATE SKIP LOCKED`` and moves their
next check out by the lease in the same statement, so concurrent replicas take disjoint sets
without waiting for each other.

CreateSession across replicas: ``creation_lock`` holds a session-level advisory lock on the id,
on a connection from a separate lock pool held for the whole block. Its key is the two-int4
form ``(CREATION_LOCK_SPACE, hashtext(id))``, a key space of its own: PostgreSQL keeps two-int4
keys apart from the single-bigint keys of the append and migration locks, so no caller-chosen id
can hash onto the append lock and stall every append for the length of an Antom call (two ids
sharing a 32-bit hash only serialise their own creations; while a rollout mixes builds,
replicas on the old key space do not exclude new ones, which costs at most a second Antom call
for an id created on both at once, the insert still arbitrating). A
separate pool, because the holder calls Antom and the store while holding it: if lock holders
could take every connection of the main pool, their own ``get``/``insert`` would wait for
ever. A lock is released explicitly on exit; asyncpg's reset on release (which runs
``pg_advisory_unlock_all()``) also drops one that a cancelled ``pg_advisory_lock`` call took
just before its cancellation arrived, a connection that cannot be reset is terminated, and the
server drops the locks of a dead replica's connections with them.

Pool sizes and the acquire timeout are settings: a call that gets no connection within
``acquire_timeout`` (every one busy) raises :class:`~vault_service.store.base.StoreBusyError`,
retryable, instead of queueing without bound behind a slow Antom or a burst. The timeout
covers waiting for a free connection (and opening one), not the creation lock's own wait.

Connections are opened with ``application_name`` and timeouts in the startup packet (no extra
round trip per connection): a statement running longer than :data:`STATEMENT_TIMEOUT` or a
transaction idle longer than :data:`IDLE_IN_TRANSACTION_TIMEOUT` (a frozen replica holding the
append lock) is ended by the server. The lock pool has no statement timeout: waiting for a
creation lock is bounded by the caller's deadline, which cancels the wait.

Requires PostgreSQL 13 or newer (``gen_random_uuid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final, NamedTuple, TypeAlias

import asyncpg
from asyncpg.pool import Pool, PoolConnectionProxy

from vault_service.database_url import redact_dsn
from vault_service.domain import (
    Event,
    Observation,
    SessionRequest,
    VaultingRecord,
    apply_observation,
)
from vault_service.store.base import (
    DatabaseUnavailableError,
    LogEntry,
    OrphanNotification,
    RecordExistsError,
    RecordNotFoundError,
    StoreBusyError,
    StoreClosedError,
    StoreUnavailableError,
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
from vault_service.store.migrations import POSTGRES_MIGRATIONS, Migration, check_schema_version
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

log = logging.getLogger(__name__)

# A string: asyncpg's classes are generic only in its type stubs.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key, unlikely to collide with another program's."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


EVENTS_CHANNEL: Final = "vault_events"
"""The NOTIFY channel of event appends; the payload is the new event's id (a hint only)."""

EVENT_APPEND_LOCK: Final = _advisory_key("vault-service:event-append")
MIGRATION_LOCK: Final = _advisory_key("vault-service:migrate")
CREATION_LOCK_SPACE: Final = _advisory_key("vault-service:create-session") >> 32
"""The first int4 of every creation lock's two-int4 advisory key (module docstring): the
service's fixed locks are single bigint keys, a key space creation locks never enter."""

CONNECTION_LOST: Final = (
    asyncpg.PostgresConnectionError,  # class 08, and "connection closed in the middle of operation"
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin/crash shutdown, cancels
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.exceptions.InternalClientError,  # a terminated connection used before its EOF is read
    OSError,  # includes TimeoutError
)
"""What asyncpg raises when a connection is lost or cannot be made."""

APPLICATION_NAME: Final = "vault-service"
STATEMENT_TIMEOUT: Final = "30s"
IDLE_IN_TRANSACTION_TIMEOUT: Final = "30s"
CONNECT_TIMEOUT: Final = 10.0
DEFAULT_ACQUIRE_TIMEOUT: Final = 5.0

_LATEST_VERSION: Final = POSTGRES_MIGRATIONS[-1].version
_INSTANT_COLUMNS: Final = frozenset({"session_expires_at", "created_at", "updated_at", "final_at"})

# The SQL below is built from the codec's constant RecordRow fields, never from input.
_COLUMNS: Final = ", ".join(RECORD_COLUMNS)
_SELECT_RECORD: Final = f"SELECT {_COLUMNS} FROM records WHERE vaulting_request_id = $1"  # noqa: S608
# FOR NO KEY UPDATE: serialises applies to one record without blocking the foreign-key checks
# of event inserts (which take KEY SHARE on the record).
_SELECT_RECORD_FOR_UPDATE: Final = _SELECT_RECORD + " FOR NO KEY UPDATE"
_INSERT_RECORD: Final = (
    f"INSERT INTO records ({_COLUMNS}, next_check_at) "  # noqa: S608
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(RECORD_COLUMNS) + 2))}) "
    "ON CONFLICT (vaulting_request_id) DO NOTHING RETURNING true"
)
_UPDATE_RECORD: Final = (
    "UPDATE records SET "  # noqa: S608
    + ", ".join(f"{column} = ${n}" for n, column in enumerate(RECORD_COLUMNS[1:], start=1))
    + f", next_check_at = CASE WHEN ${len(RECORD_COLUMNS)}::boolean THEN NULL"
    + f" ELSE coalesce(next_check_at, ${len(RECORD_COLUMNS) + 1}::timestamptz) END"
    + f" WHERE vaulting_request_id = ${len(RECORD_COLUMNS) + 2}"
)
# One statement takes the append lock, then inserts (the identity default is evaluated for the
# row the locked CTE produces, so the id is drawn under the lock), then NOTIFYs. The lock is
# transaction-scoped: it is released only after COMMIT has made the event visible.
_APPEND_EVENT: Final = f"""
    WITH serialised AS MATERIALIZED (SELECT pg_advisory_xact_lock($1::bigint)),
    appended AS (
        INSERT INTO events
            (vaulting_request_id, owner, source, occurred_at, snapshot, card_token, sealed)
        SELECT $2::text, $3::text, $4::text, $5::timestamptz, $6::jsonb, $7::text, $8::text
        FROM serialised
        RETURNING id
    )
    SELECT id, pg_notify('{EVENTS_CHANNEL}', id::text) FROM appended
"""  # noqa: S608
_MARK_PLAINTEXT_FREE: Final = mark_plaintext_free_sql("{}::bytea")
_CLAIM_DUE: Final = f"""
    WITH due AS (
        SELECT vaulting_request_id, next_check_at FROM records
        WHERE next_check_at <= $1
        ORDER BY next_check_at, vaulting_request_id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
        UPDATE records SET next_check_at = $3
        FROM due WHERE records.vaulting_request_id = due.vaulting_request_id
        RETURNING {", ".join(f"records.{column}" for column in RECORD_COLUMNS)},
                  due.next_check_at AS was_due
    )
    SELECT {_COLUMNS} FROM claimed ORDER BY was_due, vaulting_request_id
"""  # noqa: S608
_RESCHEDULE: Final = (
    "UPDATE records SET next_check_at = $2 "
    "WHERE vaulting_request_id = $1 AND next_check_at IS NOT NULL"
)
_LOCK_ID: Final = f"SELECT pg_advisory_lock({CREATION_LOCK_SPACE}, hashtext($1))"
_UNLOCK_ID: Final = f"SELECT pg_advisory_unlock({CREATION_LOCK_SPACE}, hashtext($1))"
_SCHEMA_MIGRATIONS_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version     integer PRIMARY KEY,
        description text NOT NULL,
        applied_at  timestamptz NOT NULL DEFAULT now()
    )
"""


async def migrate(dsn: str) -> list[int]:
    """Create or upgrade the database at ``dsn``; the versions applied, oldest first.

    Backs ``vault-service migrate``. Safe to run again, and concurrently from several replicas
    (an advisory lock serialises them): versions already applied are skipped.
    """
    opened = await _start(dsn, migrate=True, min_size=1, max_size=1, lock_pool_size=1)
    await _close_pools(opened.pool, opened.lock_pool)
    return opened.applied


class _Opened(NamedTuple):
    """Both pools open on a checked (or migrated) database: a store's makings."""

    pool: Pool[asyncpg.Record]
    lock_pool: Pool[asyncpg.Record]
    log_id: str
    applied: list[int]
    plaintext: bool


class PostgresStore:
    """A :class:`~vault_service.store.base.Store` in one PostgreSQL database, shared by any
    number of replicas.

    Create it with :meth:`open`, which checks (or migrates) the schema before returning.
    """

    def __init__(
        self,
        pool: Pool[asyncpg.Record],
        lock_pool: Pool[asyncpg.Record],
        log_id: str,
        data_keys: DataKeyRing,
        *,
        plaintext: bool,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    ) -> None:
        self._pool = pool
        self._lock_pool = lock_pool
        self._acquire_timeout = acquire_timeout
        self._log_id = log_id
        self._keys = data_keys
        # Whether legacy plaintext card data reads (sealing module docstring), as of open.
        self._plaintext = plaintext
        self._unreadable_events = ReportedEvents()
        self._creating: KeyedLocks[str] = KeyedLocks()
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
        dsn: str,
        *,
        auto_migrate: bool,
        data_keys: DataKeyRing,
        min_size: int = 1,
        max_size: int = 10,
        lock_pool_size: int = 20,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    ) -> PostgresStore:
        """Open a pool on ``dsn``, migrating the database first when ``auto_migrate``.

        Without ``auto_migrate`` an unmigrated or outdated database is refused with
        :class:`~vault_service.store.base.SchemaVersionError`; a database migrated by a newer
        build is always refused. ``min_size``/``max_size`` bound the main pool;
        ``lock_pool_size`` bounds how many sessions this replica creates at once (each holds
        a lock connection while it calls Antom); a call waits at most ``acquire_timeout``
        seconds for a connection of either pool. Card data is sealed with ``data_keys``
        (:mod:`vault_service.store.sealing`).
        """
        opened = await _start(
            dsn,
            migrate=auto_migrate,
            min_size=min_size,
            max_size=max_size,
            lock_pool_size=lock_pool_size,
        )
        return cls(
            opened.pool,
            opened.lock_pool,
            opened.log_id,
            data_keys,
            plaintext=opened.plaintext,
            acquire_timeout=acquire_timeout,
        )

    async def close(self) -> None:
        """Close both pools, after the connections in use are released (calls in flight
        finish); a cancelled close terminates them instead."""
        if self._closed:
            return
        self._closed = True
        await _close_pools(self._lock_pool, self._pool)

    async def get(self, vaulting_request_id: str) -> VaultingRecord | None:
        async with self._connection() as connection:
            return await self._select_record(connection, _SELECT_RECORD, vaulting_request_id)

    async def insert(self, record: VaultingRecord, *, next_check_at: datetime) -> None:
        row = seal_record_row(self._keys, record_to_row(record))
        check_at = None if record.reconciled else _utc(next_check_at)
        async with self._connection() as connection:
            if await connection.fetchval(_INSERT_RECORD, *_record_parameters(row), check_at):
                return
            # The conflicting insert has committed (ON CONFLICT waits for it): read it back.
            existing = await self._select_record(
                connection, _SELECT_RECORD, record.vaulting_request_id
            )
        assert existing is not None  # records are never deleted
        raise RecordExistsError(existing)

    async def apply(self, vaulting_request_id: str, observation: Observation) -> Event | None:
        async with self._connection() as connection, connection.transaction():
            record = await self._select_record(
                connection, _SELECT_RECORD_FOR_UPDATE, vaulting_request_id
            )
            if record is None:
                raise RecordNotFoundError(vaulting_request_id)
            changed = apply_observation(record, observation)
            if changed is None:
                return None
            row = seal_record_row(self._keys, record_to_row(changed))
            occurred_at = _utc(observation.observed_at)
            await connection.execute(
                _UPDATE_RECORD,
                *_record_parameters(row)[1:],
                changed.reconciled,
                occurred_at,
                vaulting_request_id,
            )
            snapshot, card_token, sealed = encode_snapshot(changed)
            appended = await connection.fetchrow(
                _APPEND_EVENT,
                EVENT_APPEND_LOCK,
                vaulting_request_id,
                changed.owner,
                observation.source.value,
                occurred_at,
                snapshot,
                seal_token(self._keys, EVENT_TOKEN, vaulting_request_id, card_token),
                seal_token(self._keys, EVENT_SEALED, vaulting_request_id, sealed),
            )
            assert appended is not None
            event_id: int = appended["id"]
        return Event(event_id, observation.source, occurred_at, changed)

    async def keep_session_request(
        self, vaulting_request_id: str, request: SessionRequest, at: datetime
    ) -> SessionRequest:
        async with self._connection() as connection:
            # A conflicting insert has committed when ON CONFLICT lets this one go: the
            # SELECT after it sees the first request.
            await connection.execute(
                "INSERT INTO session_requests "
                "(vaulting_request_id, owner, parameters, body, created_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (vaulting_request_id) DO NOTHING",
                vaulting_request_id,
                request.owner,
                encode_parameters(request.parameters),
                request.body,
                _utc(at),
            )
            kept = await connection.fetchrow(
                "SELECT owner, parameters, body FROM session_requests "
                "WHERE vaulting_request_id = $1",
                vaulting_request_id,
            )
        assert kept is not None  # never deleted
        return SessionRequest(
            kept["owner"], decode_parameters(kept["parameters"]), bytes(kept["body"])
        )

    async def record_orphan(
        self, vaulting_request_id: str, body: bytes, received_at: datetime
    ) -> None:
        async with self._connection() as connection:
            await connection.execute(
                "INSERT INTO orphan_notifications "
                "(vaulting_request_id, body, body_sha256, received_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (vaulting_request_id, body_sha256) DO NOTHING",
                vaulting_request_id,
                seal_body(self._keys, vaulting_request_id, body),
                # Of the plaintext: a retried copy seals to a new ciphertext but is the same body.
                hashlib.sha256(body).digest(),
                _utc(received_at),
            )

    async def list_orphans(self, *, limit: int) -> list[OrphanNotification]:
        check_limit(limit)
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT vaulting_request_id, body, received_at FROM orphan_notifications "
                "ORDER BY id LIMIT $1",
                limit,
            )
        return [
            OrphanNotification(
                row["vaulting_request_id"],
                open_body(
                    self._keys, row["vaulting_request_id"], row["body"], plaintext=self._plaintext
                ),
                _utc(row["received_at"]),
            )
            for row in rows
        ]

    async def events_after(
        self,
        after_event_id: int,
        *,
        limit: int,
        owner: str | None = None,
        vaulting_request_ids: frozenset[str] | None = None,
    ) -> list[LogEntry]:
        check_limit(limit)
        self._check_open()
        if vaulting_request_ids is not None and not vaulting_request_ids:
            return []
        # One statement text per combination of filters (not "$2 IS NULL OR ..."), so that
        # each prepared statement gets a plan for the filters it really has.
        conditions = ["id > $1"]
        parameters: list[object] = [after_event_id]
        if owner is not None:
            parameters.append(owner)
            conditions.append(f"owner = ${len(parameters)}")
        if vaulting_request_ids is not None:
            parameters.append(sorted(vaulting_request_ids))
            conditions.append(f"vaulting_request_id = ANY(${len(parameters)}::text[])")
        sql = (
            SELECT_EVENTS + " AND ".join(conditions) + f" ORDER BY id LIMIT ${len(parameters) + 1}"
        )
        async with self._connection() as connection:
            rows = [
                EventRow(
                    row["id"],
                    row["vaulting_request_id"],
                    row["owner"],
                    row["source"],
                    _utc(row["occurred_at"]),
                    row["snapshot"],
                    row["card_token"],
                    row["sealed"],
                )
                for row in await connection.fetch(sql, *parameters, limit)
            ]
        return log_entries(rows, self._keys, self._unreadable_events, plaintext=self._plaintext)

    async def last_event_id(self) -> int:
        # Appends are serialised in commit order (module docstring): max(id) is commit-safe.
        async with self._connection() as connection:
            last: int = await connection.fetchval("SELECT coalesce(max(id), 0) FROM events")
        return last

    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta
    ) -> list[VaultingRecord | UnreadableRecord]:
        check_limit(limit)
        check_lease(lease)
        async with self._connection() as connection:
            rows = await connection.fetch(_CLAIM_DUE, _utc(now), limit, _utc(now + lease))
        return [
            read_claimed_row(self._keys, _record_row(row), plaintext=self._plaintext)
            for row in rows
        ]

    async def reschedule(self, vaulting_request_id: str, next_check_at: datetime) -> None:
        async with self._connection() as connection:
            # Final records have no next check (a CHECK constraint says so): they stay off.
            status = await connection.execute(_RESCHEDULE, vaulting_request_id, _utc(next_check_at))
            if status == "UPDATE 0" and not await connection.fetchval(
                "SELECT true FROM records WHERE vaulting_request_id = $1", vaulting_request_id
            ):
                raise RecordNotFoundError(vaulting_request_id)

    async def reseal(self, *, batch_size: int) -> Rotation:
        """Seal every card value that is not under the active data key again under it (one
        pass per column); backs ``vault-service rotate-data-key``.

        Safe while replicas serve, and to interrupt and run again: each batch of
        ``batch_size`` rows is read without locks and written back in one statement that
        replaces a row only if it still holds the value read (compare and swap). A concurrent
        ``apply`` that rewrote the row meanwhile wins (it sealed the token itself) and the row
        counts as ``changed``. A value that cannot be opened is left as it is and reported;
        when there is none, the database records that it holds no plaintext (sealing module
        docstring).
        """
        check_limit(batch_size)

        async def mark() -> bool:
            async with self._connection() as connection:
                return await _mark_plaintext_free(connection)

        async def batch(column: SealedColumn, after: object) -> ResealedBatch:
            return await self._reseal_batch(column, after, batch_size)

        async def upgrade(column: SealedColumn, after: object) -> ResealedBatch:
            return await self._upgrade_batch(LEGACY_ROWS[column], after, batch_size)

        return await reseal_columns(
            batch, upgrade=upgrade, batch_size=batch_size, mark_plaintext_free=mark
        )

    @contextlib.asynccontextmanager
    async def creation_lock(self, vaulting_request_id: str) -> AsyncIterator[None]:
        """The id's advisory lock, held on a lock-pool connection (module docstring).

        An in-process lock is taken first, so that this replica's callers of one id queue here
        and hold one connection between them instead of one each.
        """
        self._check_open()
        async with self._creating.hold(vaulting_request_id):
            try:
                connection = await self._acquire(self._lock_pool)
            except CONNECTION_LOST as exc:
                self._check_open()
                raise StoreUnavailableError("database connection lost") from exc
            locked = False
            try:
                try:
                    await connection.execute(_LOCK_ID, vaulting_request_id)
                except CONNECTION_LOST as exc:
                    raise StoreUnavailableError("database connection lost") from exc
                locked = True
                yield
            finally:
                # Shielded: a second cancellation must not leave the connection checked out.
                await asyncio.shield(self._unlock(connection, vaulting_request_id, locked=locked))

    async def _unlock(
        self, connection: Connection, vaulting_request_id: str, *, locked: bool
    ) -> None:
        try:
            if locked:
                await connection.execute(_UNLOCK_ID, vaulting_request_id)
        except (asyncpg.PostgresError, *CONNECTION_LOST):
            # The session cannot be trusted to have unlocked: end it, which releases its locks.
            log.warning("creation lock release failed; closing its connection", exc_info=True)
            # Raises InterfaceError when the connection has closed already (the pool then
            # detached it): its session, and the lock, are gone then too.
            with contextlib.suppress(asyncpg.InterfaceError):
                connection.terminate()
        finally:
            # The reset on release also runs pg_advisory_unlock_all(): it drops a lock that a
            # cancelled pg_advisory_lock obtained just before its cancellation arrived.
            await self._lock_pool.release(connection)

    async def _reseal_batch(
        self, column: SealedColumn, after: object, batch_size: int
    ) -> ResealedBatch:
        select, swap = _reseal_statements(column)
        async with self._connection() as connection:
            rows = await connection.fetch(select, after, batch_size)
            plan = plan_reseal(
                self._keys,
                column,
                ((row["key"], row["vaulting_request_id"], row["stored"]) for row in rows),
                plaintext=self._plaintext,
            )
            swapped = 0
            if plan.swaps:
                keys, olds, news = (list(values) for values in zip(*plan.swaps, strict=True))
                status = await connection.execute(swap, keys, olds, news)
                swapped = int(status.rpartition(" ")[2])  # "UPDATE <rows>"
        last = rows[-1]["key"] if rows else None
        return ResealedBatch(len(rows), last, len(plan.swaps), swapped, plan.unreadable)

    async def _upgrade_batch(
        self, legacy: LegacyRows, after: object, batch_size: int
    ) -> ResealedBatch:
        select, update = _upgrade_statements(legacy)
        async with self._connection() as connection:
            rows = await connection.fetch(select, after, batch_size)
            plan = plan_upgrade(
                self._keys,
                legacy,
                ((row[0], row[1], tuple(row[2:])) for row in rows),
            )
            swapped = 0
            for key, values, sealed in plan.writes:
                # One statement a row: a rotation is rare and an upgrade happens once.
                status = await connection.execute(update, key, *values, sealed)
                swapped += int(status.rpartition(" ")[2])  # "UPDATE <rows>"
        last = rows[-1][0] if rows else None
        return ResealedBatch(len(rows), last, len(plan.writes), swapped, plan.unreadable)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the PostgreSQL store is closed")

    async def _select_record(
        self, connection: Connection, sql: str, vaulting_request_id: str
    ) -> VaultingRecord | None:
        row = await connection.fetchrow(sql, vaulting_request_id)
        if row is None:
            return None
        return record_from_row(
            open_record_row(self._keys, _record_row(row), plaintext=self._plaintext)
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A connection of the main pool for one unit of work; losing it, or failing to get
        one, raises :class:`StoreUnavailableError` (retryable)."""
        try:
            connection = await self._acquire(self._pool)
            try:
                yield connection
            finally:
                await self._pool.release(connection)
        except CONNECTION_LOST as exc:
            self._check_open()
            raise StoreUnavailableError(f"database connection lost ({type(exc).__name__})") from exc

    async def _acquire(self, pool: Pool[asyncpg.Record]) -> Connection:
        self._check_open()
        try:
            return await pool.acquire(timeout=self._acquire_timeout)
        except TimeoutError:
            raise StoreBusyError(
                f"no database connection became free within {self._acquire_timeout:g} s"
            ) from None
        except asyncpg.InterfaceError:
            # The pool is closing: a call raced close().
            self._check_open()
            raise


async def _start(
    dsn: str, *, migrate: bool, min_size: int, max_size: int, lock_pool_size: int
) -> _Opened:
    """Open the main pool, check (or migrate) the schema through it, then open the lock pool."""
    settings = {
        "application_name": APPLICATION_NAME,
        "statement_timeout": STATEMENT_TIMEOUT,
        "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT,
    }
    where = redact_dsn(dsn)
    pool = await _create_pool(
        dsn,
        where,
        min_size=max(min_size, 1),
        max_size=max_size,
        settings=settings,
        reset=_keep_session,
    )
    try:
        async with pool.acquire() as connection:
            applied = await _prepare_schema(connection, where, migrate=migrate)
            log_id: str = await connection.fetchval("SELECT value FROM meta WHERE key = 'log_id'")
            plaintext = allows_plaintext(await connection.fetchval(SELECT_PLAINTEXT_STATE))
            if migrate and plaintext:
                # Migrated before the state existed: marked as soon as it holds no plaintext,
                # not only by a rotation (a scan of the sealed columns, until the mark is set).
                plaintext = not await _mark_plaintext_free(connection)
        lock_pool = await _create_pool(
            dsn,
            where,
            min_size=0,
            max_size=lock_pool_size,
            settings={**settings, "statement_timeout": "0"},
            reset=None,
        )
    except BaseException:
        pool.terminate()
        raise
    return _Opened(pool, lock_pool, log_id, applied, plaintext)


async def _close_pools(*pools: Pool[asyncpg.Record]) -> None:
    """Close ``pools`` in order once their connections are released; a cancelled or failed
    close terminates them all instead."""
    try:
        for pool in pools:
            await pool.close()
    except BaseException:
        for pool in pools:
            pool.terminate()
        raise


async def _create_pool(
    dsn: str,
    where: str,
    *,
    min_size: int,
    max_size: int,
    settings: dict[str, str],
    reset: Callable[[asyncpg.Connection[asyncpg.Record]], Awaitable[None]] | None,
) -> Pool[asyncpg.Record]:
    """A pool whose first ``min_size`` connections are open; connection failures become
    :class:`DatabaseUnavailableError` naming ``where`` (the DSN without its password).

    ``reset`` runs when a connection returns to the pool, after asyncpg has rolled back any
    open transaction; ``None`` is asyncpg's full reset (one more round trip).
    """
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT,
            server_settings=settings,
            reset=reset,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise DatabaseUnavailableError(
            f"cannot connect to the database {where}: {error or type(error).__name__}"
        ) from error


async def _keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """The main pool's reset: nothing beyond asyncpg's rollback of an open transaction.

    Units of work on the main pool leave no session state (no SET, LISTEN, cursor or
    session-level lock; ``_start``, the one user of a session lock, terminates the pool if it
    fails), so asyncpg's default reset query, ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN
    *; RESET ALL``, would only add a round trip to every call: it halved ``get`` throughput.
    """
    del connection


async def _prepare_schema(connection: Connection, where: str, *, migrate: bool) -> list[int]:
    """Check the schema version, migrating first when ``migrate``; the versions applied.

    Holds the migration advisory lock throughout (shared when only checking), so replicas
    migrating at once apply each version once, and a replica opening during a migration waits
    for its end state instead of refusing a half-migrated database.
    """
    mode = "" if migrate else "_shared"
    await connection.execute(f"SELECT pg_advisory_lock{mode}($1)", MIGRATION_LOCK)
    try:
        if migrate:
            await connection.execute(_SCHEMA_MIGRATIONS_TABLE)
        check_schema_version(
            await _schema_version(connection),
            known=_LATEST_VERSION,
            where=where,
            will_migrate=migrate,
        )
        if not migrate:
            return []
        return [
            migration.version
            for migration in POSTGRES_MIGRATIONS
            if await _apply_migration(connection, migration)
        ]
    finally:
        await connection.execute(f"SELECT pg_advisory_unlock{mode}($1)", MIGRATION_LOCK)


async def _mark_plaintext_free(connection: Connection) -> bool:
    """Record "no plaintext" unless some value still lacks an envelope; whether it is."""
    await connection.execute(_MARK_PLAINTEXT_FREE)
    return not allows_plaintext(await connection.fetchval(SELECT_PLAINTEXT_STATE))


async def _schema_version(connection: Connection) -> int:
    if await connection.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return 0
    version: int = await connection.fetchval(
        "SELECT coalesce(max(version), 0) FROM schema_migrations"
    )
    return version


async def _apply_migration(connection: Connection, migration: Migration) -> bool:
    """Apply ``migration`` and record it in one transaction, unless it is already applied."""
    async with connection.transaction():
        if await connection.fetchval(
            "SELECT true FROM schema_migrations WHERE version = $1", migration.version
        ):
            return False
        for statement in migration.statements:
            await connection.execute(statement)
        if migration is POSTGRES_MIGRATIONS[0]:
            await connection.execute(MARK_NEW_DATABASE)
        await connection.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
            migration.version,
            migration.description,
        )
    return True


def _reseal_statements(column: SealedColumn) -> tuple[str, str]:
    """A batch read of ``column`` in key order, and its compare-and-swap write-back."""
    key_type = "text" if isinstance(column.first, str) else "bigint"
    value_type = "bytea" if column.binary else "text"
    # Names and types come from the constant SEALED_COLUMNS, never from input.
    select = (
        f"SELECT {column.key} AS key, vaulting_request_id, {column.column} AS stored "  # noqa: S608
        f"FROM {column.table} WHERE {column.key} > $1 AND {column.column} IS NOT NULL "
        f"ORDER BY {column.key} LIMIT $2"
    )
    swap = (
        f"UPDATE {column.table} AS t SET {column.column} = v.new "  # noqa: S608
        f"FROM unnest($1::{key_type}[], $2::{value_type}[], $3::{value_type}[]) "
        "AS v(key, old, new) "
        f"WHERE t.{column.key} = v.key AND t.{column.column} = v.old"
    )
    return select, swap


def _upgrade_statements(legacy: LegacyRows) -> tuple[str, str]:
    """A batch read of ``legacy``'s rows in key order, and the write-back of one, which only
    takes if the row is still legacy (a replica rewrote it otherwise)."""
    table, key, sealed = legacy.sealed.table, legacy.sealed.key, legacy.sealed.column
    # Names come from the constant LEGACY_ROWS, never from input.
    select = (
        f"SELECT {key}, vaulting_request_id, {', '.join(legacy.columns)} FROM {table} "  # noqa: S608
        f"WHERE {key} > $1 AND {sealed} IS NULL ORDER BY {key} LIMIT $2"
    )
    assignments = ", ".join(
        f"{column} = ${n}" for n, column in enumerate((*legacy.columns, sealed), start=2)
    )
    update = f"UPDATE {table} SET {assignments} WHERE {key} = $1 AND {sealed} IS NULL"  # noqa: S608
    return select, update


def _record_parameters(row: RecordRow) -> list[object]:
    """The codec's columns as PostgreSQL parameters: instants become ``timestamptz``."""
    values = row._asdict()
    for column in _INSTANT_COLUMNS:
        if values[column] is not None:
            values[column] = decode_instant(values[column])
    return list(values.values())


def _record_row(values: asyncpg.Record) -> RecordRow:
    """A ``records`` row read from PostgreSQL as the codec's columns (instants as integers)."""
    columns = dict(values.items())
    for column in _INSTANT_COLUMNS:
        if columns[column] is not None:
            columns[column] = encode_instant(columns[column])
    return RecordRow(**columns)


def _utc(value: datetime) -> datetime:
    """``value`` as the codec's aware UTC datetime, for a ``timestamptz`` going in or coming
    out; refuses naive datetimes, which asyncpg would take as local time."""
    return decode_instant(encode_instant(value))
