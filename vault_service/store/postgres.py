"""The PostgreSQL backend of :class:`~vault_service.store.base.Store`: many replicas, one database.

Driver: asyncpg rather than psycopg 3, for lower client CPU per call (measured:
``bench/results/store.md``), LISTEN callbacks on a plain connection (the wake-up listener uses
them), a pool that can reset connections with ``pg_advisory_unlock_all()`` (the lock pool relies
on it), and maintained type stubs (asyncpg-stubs). Its one trap, prepared statements through a
transaction-mode pooler, does not apply: replicas connect to PostgreSQL directly (or through a
session-mode pooler, which LISTEN needs anyway). Pools and connections:
:mod:`vault_service.store.postgres_pool`.

Event ordering: appends are serialised in commit order and NOTIFY the events channel
(:mod:`vault_service.store.event_append`), so a cursor is one integer and ``max(id)`` is a safe
resume point.

Reconciliation: ``claim_due`` picks due records with ``FOR UPDATE SKIP LOCKED`` and moves their
next check out by the lease in the same statement, so concurrent replicas take disjoint sets
without waiting for each other.

CreateSession across replicas: ``creation_lock`` holds a session-level advisory lock on the id
(in a key space of its own: :mod:`vault_service.store.advisory_locks`), on a connection from a
separate lock pool held for the whole block. While a rollout mixes builds, replicas on the old
key space do not exclude new ones, which costs at most a second Antom call for an id created on
both at once, the insert still arbitrating. A separate pool, because the holder calls Antom and
the store while holding it: if lock holders could take every connection of the main pool, their
own ``get``/``insert`` would wait for ever. A lock is released explicitly on exit; asyncpg's
reset on release (which runs ``pg_advisory_unlock_all()``) also drops one that a cancelled
``pg_advisory_lock`` call took just before its cancellation arrived, a connection that cannot be
reset is terminated, and the server drops the locks of a dead replica's connections with them.

Requires PostgreSQL 13 or newer (``gen_random_uuid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

import asyncpg
from asyncpg.pool import Pool

from vault_service.database_url import DatabaseURL
from vault_service.domain import Event, Observation
from vault_service.metrics import PoolUse
from vault_service.store.advisory_locks import (
    CREATION_LOCK_SPACE,
    EVENT_APPEND_LOCK,
    MIGRATION_LOCK,
    PRUNER_LOCK,
)
from vault_service.store.base import Applied, StoreUnavailableError
from vault_service.store.codec import RECORD_COLUMNS, RecordRow, decode_instant, encode_instant
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.event_append import APPEND_EVENT, APPEND_EVENTS
from vault_service.store.keyed_locks import KeyedLocks
from vault_service.store.migrations import POSTGRES_MIGRATIONS
from vault_service.store.migrator import Schema, open_schema, schema_migrations_table
from vault_service.store.postgres_pool import (
    CONNECTION_LOST,
    DEFAULT_ACQUIRE_TIMEOUT,
    Connection,
    ConnectionClass,
    PoolSession,
    acquire,
    close_pools,
    create_pool,
)
from vault_service.store.pruning import RecordBatch
from vault_service.store.sealer import Sealer
from vault_service.store.sealing import LegacyRows, SealedColumn, mark_plaintext_free_sql
from vault_service.store.sql import Dialect, Row, Session
from vault_service.store.sql_store import (
    SELECT_RECORD,
    UPDATE_RECORD,
    Change,
    SQLStore,
    upgrade_statement,
)

log = logging.getLogger(__name__)

_INSTANT_COLUMNS: Final = tuple(
    RECORD_COLUMNS.index(column)
    for column in ("session_expires_at", "created_at", "updated_at", "final_at")
)

# FOR NO KEY UPDATE: serialises applies to one record without blocking the foreign-key checks
# of event inserts (which take KEY SHARE on the record).
_SELECT_RECORD_FOR_UPDATE: Final = SELECT_RECORD + " FOR NO KEY UPDATE"
# A batch's records, locked in id order (ORDER BY sorts before the rows are locked).
_SELECT_RECORDS_FOR_UPDATE: Final = (
    SELECT_RECORD.replace("= $1", "= ANY($1::text[])")
    + " ORDER BY vaulting_request_id FOR NO KEY UPDATE"
)
# The statements below are built from the codec's constant RecordRow fields, never from input.
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
    SELECT {", ".join(RECORD_COLUMNS)} FROM claimed ORDER BY was_due, vaulting_request_id
"""  # noqa: S608
_LOCK_ID: Final = f"SELECT pg_advisory_lock({CREATION_LOCK_SPACE}, hashtext($1))"
_UNLOCK_ID: Final = f"SELECT pg_advisory_unlock({CREATION_LOCK_SPACE}, hashtext($1))"


def _utc(value: datetime) -> datetime:
    """``value`` as the codec's aware UTC datetime, for a ``timestamptz`` going in or coming
    out; refuses naive datetimes, which asyncpg would take as local time."""
    return decode_instant(encode_instant(value))


def _record_row(values: Row) -> RecordRow:
    """A ``records`` row read from PostgreSQL as the codec's columns (instants as integers)."""
    columns = list(values)
    for index in _INSTANT_COLUMNS:
        if columns[index] is not None:
            columns[index] = encode_instant(columns[index])
    return RecordRow(*columns)


def _record_values(row: RecordRow) -> list[object]:
    """The codec's columns as PostgreSQL parameters: instants become ``timestamptz``."""
    values: list[object] = list(row)
    for index in _INSTANT_COLUMNS:
        if isinstance(instant := row[index], int):
            values[index] = decode_instant(instant)
    return values


@contextlib.asynccontextmanager
async def _hold_schema(db: Session, exclusive: bool) -> AsyncIterator[None]:
    """The migration advisory lock, shared when only checking: replicas migrating at once
    apply each version once, and a replica opening during a migration waits for its end state
    instead of refusing a half-migrated database."""
    mode = "" if exclusive else "_shared"
    await db.execute(f"SELECT pg_advisory_lock{mode}($1)", MIGRATION_LOCK)
    try:
        yield
    finally:
        await db.execute(f"SELECT pg_advisory_unlock{mode}($1)", MIGRATION_LOCK)


POSTGRES: Final = Dialect(
    name="PostgreSQL",
    migrations=POSTGRES_MIGRATIONS,
    schema_migrations_table=schema_migrations_table(
        integer="integer", text="text", applied_at="timestamptz NOT NULL DEFAULT now()"
    ),
    schema_migrations_exists="SELECT to_regclass('schema_migrations')",
    mark_plaintext_free=mark_plaintext_free_sql("{}::bytea"),
    hold_schema=_hold_schema,
    in_texts="{column} = ANY({values}::text[])",
    texts=sorted,
    unindexed="{column}",
    # Not jsonb containment (@>): it ignores the order inside a pair, so ["v", "k"] would match.
    has_label=(
        "EXISTS (SELECT 1 FROM jsonb_array_elements(records.parameters -> 'labels') AS label"
        " WHERE label ->> 0 = {key} AND label ->> 1 = {value})"
    ),
    instant=_utc,
    read_instant=_utc,
    record_row=_record_row,
    record_values=_record_values,
)


async def migrate(database: DatabaseURL) -> list[int]:
    """Create or upgrade the database; the versions applied, oldest first.

    Backs ``vault-service migrate``. Safe to run again, and concurrently from several replicas
    (an advisory lock serialises them): versions already applied are skipped.
    """
    pool, lock_pool, schema = await _start(
        database,
        migrate=True,
        min_size=1,
        max_size=1,
        lock_pool_size=1,
        connection_class=asyncpg.Connection,
    )
    await close_pools(pool, lock_pool)
    return schema.applied


class PostgresStore(SQLStore):
    """A :class:`~vault_service.store.base.Store` in one PostgreSQL database, shared by any
    number of replicas.

    Create it with :meth:`open`, which checks (or migrates) the schema before returning.
    """

    dialect = POSTGRES

    def __init__(
        self,
        pool: Pool[asyncpg.Record],
        lock_pool: Pool[asyncpg.Record],
        log_id: str,
        sealer: Sealer,
        *,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    ) -> None:
        super().__init__(log_id, sealer)
        self._pool = pool
        self._lock_pool = lock_pool
        self._acquire_timeout = acquire_timeout
        self._creating: KeyedLocks[str] = KeyedLocks()

    def pool_use(self) -> list[PoolUse]:
        """The main pool and the creation-lock pool (see the module docstring)."""
        return [
            PoolUse(
                name,
                size=pool.get_size(),
                in_use=pool.get_size() - pool.get_idle_size(),
                max_size=pool.get_max_size(),
            )
            for name, pool in (("main", self._pool), ("locks", self._lock_pool))
        ]

    @classmethod
    async def open(
        cls,
        database: DatabaseURL,
        *,
        auto_migrate: bool,
        data_keys: DataKeyRing,
        min_size: int = 1,
        max_size: int = 10,
        lock_pool_size: int = 20,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
        connection_class: ConnectionClass = asyncpg.Connection,
    ) -> PostgresStore:
        """Open pools on ``database``, migrating it first when ``auto_migrate``.

        Without ``auto_migrate`` an unmigrated or outdated database is refused with
        :class:`~vault_service.store.base.SchemaVersionError`; a database migrated by a newer
        build is always refused. ``min_size``/``max_size`` bound the main pool;
        ``lock_pool_size`` bounds how many sessions this replica creates at once (each holds
        a lock connection while it calls Antom); a call waits at most ``acquire_timeout``
        seconds for a connection of either pool. Card data is sealed with ``data_keys``
        (:mod:`vault_service.store.sealing`). The pools' connections are
        ``connection_class``'s (a test's subclass sees every statement).
        """
        pool, lock_pool, schema = await _start(
            database,
            migrate=auto_migrate,
            min_size=min_size,
            max_size=max_size,
            lock_pool_size=lock_pool_size,
            connection_class=connection_class,
        )
        sealer = Sealer(data_keys, plaintext=schema.plaintext)
        return cls(pool, lock_pool, schema.log_id, sealer, acquire_timeout=acquire_timeout)

    async def close(self) -> None:
        """Close both pools, after the connections in use are released (calls in flight
        finish); a cancelled close terminates them instead."""
        if self._closed:
            return
        self._closed = True
        await close_pools(self._lock_pool, self._pool)

    async def apply(self, vaulting_request_id: str, observation: Observation) -> Event | None:
        async with self._connection() as connection, connection.transaction():
            row = await connection.fetchrow(_SELECT_RECORD_FOR_UPDATE, vaulting_request_id)
            change = self._change(vaulting_request_id, observation, row)
            if change is None:
                return None
            await connection.execute(UPDATE_RECORD, *change.update)
            appended = await connection.fetchrow(
                APPEND_EVENT, EVENT_APPEND_LOCK, *change.event_columns
            )
            assert appended is not None
        return change.event(appended["id"])

    async def apply_batch(self, applies: Sequence[tuple[str, Observation]]) -> list[Applied]:
        """One transaction for the batch; should PostgreSQL refuse any of its writes (a
        deadlock with a retention or rotation pass, a constraint), one transaction per apply
        instead, so that the refusal is the outcome of that apply alone (a refused statement
        aborts the whole transaction: nothing of the batch committed)."""
        if not applies:
            return []
        try:
            return await self._apply_together(applies)
        except asyncpg.PostgresError as exc:
            log.warning(
                "a batch of applies was refused; applying them one by one",
                extra={"error": type(exc).__name__, "batch_size": len(applies)},
            )
        return [await self._apply_alone(rid, observation) for rid, observation in applies]

    async def _apply_together(self, applies: Sequence[tuple[str, Observation]]) -> list[Applied]:
        """The batch in one transaction: its records locked in id order (so that batches of
        several replicas never wait for each other in a cycle), their updates, then every
        event in one statement under one take of the append lock, one NOTIFY."""
        ids = sorted({rid for rid, _ in applies})
        async with self._connection() as connection, connection.transaction():
            rows = await connection.fetch(_SELECT_RECORDS_FOR_UPDATE, ids)
            plan = self._plan_batch(applies, {row[0]: row for row in rows})
            changes = [change for change in plan if isinstance(change, Change)]
            event_ids: Iterator[int] = iter(())
            if changes:
                await connection.executemany(UPDATE_RECORD, [c.update for c in changes])
                columns = zip(*(change.event_columns for change in changes), strict=True)
                appended = await connection.fetchrow(
                    APPEND_EVENTS, EVENT_APPEND_LOCK, *(list(column) for column in columns)
                )
                assert appended is not None
                event_ids = iter(appended["ids"])
        return [
            change.event(next(event_ids)) if isinstance(change, Change) else change
            for change in plan
        ]

    async def _apply_alone(self, vaulting_request_id: str, observation: Observation) -> Applied:
        try:
            return await self.apply(vaulting_request_id, observation)
        except Exception as exc:  # the outcome of this apply alone
            return exc

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

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Session]:
        async with self._connection() as connection:
            yield PoolSession(connection)

    @contextlib.asynccontextmanager
    async def _pruner(self) -> AsyncIterator[Session | None]:
        """The pruner's advisory lock, tried (never waited for) on the pass's connection:
        whichever replica holds it prunes, the others skip their turn. A replica that dies
        mid-pass releases it with its connection; the release's reset drops it otherwise."""
        async with self._connection() as connection:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", PRUNER_LOCK):
                yield None
                return
            try:
                yield PoolSession(connection)
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", PRUNER_LOCK)

    async def _reclaim(self, db: Session) -> None:
        """Nothing here: autovacuum reclaims the dead rows (docs/operations.md says what to
        watch)."""

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
            return await acquire(pool, within=self._acquire_timeout)
        except asyncpg.InterfaceError:
            # The pool is closing: a call raced close().
            self._check_open()
            raise

    async def _delete_records(self, db: Session, batch: RecordBatch) -> int:
        # The pruner's session (its connection holds the pruner's lock): a transaction on it is
        # the pass's own.
        assert isinstance(db, PoolSession)
        check, parameters = batch.lock(self.dialect)
        async with db.transaction():
            locked = [rid for (rid,) in await db.fetch(f"{check} FOR UPDATE", *parameters)]
            # Checked again by a statement of its own: a lock waited for re-checks the row
            # itself, but not the events its subquery had read before the wait.
            if locked:
                check, parameters = replace(batch, ids=self.dialect.texts(frozenset(locked))).lock(
                    self.dialect
                )
                locked = [rid for (rid,) in await db.fetch(check, *parameters)]
            deleted = 0
            for sql, arguments in batch.deletes(self.dialect, locked) if locked else []:
                deleted = await db.execute(sql, *arguments)
            return deleted

    async def _claim(self, now: datetime, limit: int, lease: timedelta) -> list[Row]:
        async with self._connection() as connection:
            return list(await connection.fetch(_CLAIM_DUE, _utc(now), limit, _utc(now + lease)))

    async def _swap(
        self, column: SealedColumn, swaps: list[tuple[str | int, str | bytes, str | bytes]]
    ) -> int:
        # One statement for the batch. Names and types come from the constant SEALED_COLUMNS.
        key_type = "text" if isinstance(column.first, str) else "bigint"
        value_type = "bytea" if column.binary else "text"
        swap = (
            f"UPDATE {column.table} AS t SET {column.column} = v.new "  # noqa: S608
            f"FROM unnest($1::{key_type}[], $2::{value_type}[], $3::{value_type}[]) "
            "AS v(key, old, new) "
            f"WHERE t.{column.key} = v.key AND t.{column.column} = v.old"
        )
        keys, olds, news = (list(values) for values in zip(*swaps, strict=True))
        async with self._session() as db:
            return await db.execute(swap, keys, olds, news)

    async def _upgrade(
        self, legacy: LegacyRows, writes: list[tuple[str | int, tuple[str | None, ...], str]]
    ) -> int:
        update = upgrade_statement(legacy)
        async with self._session() as db:
            # One statement a row: a rotation is rare and an upgrade happens once.
            return sum([await db.execute(update, key, *values, new) for key, values, new in writes])


async def _start(
    database: DatabaseURL,
    *,
    migrate: bool,
    min_size: int,
    max_size: int,
    lock_pool_size: int,
    connection_class: ConnectionClass,
) -> tuple[Pool[asyncpg.Record], Pool[asyncpg.Record], Schema]:
    """Open the main pool, check (or migrate) the schema through it, then open the lock pool."""
    pool = await create_pool(
        database,
        min_size=max(min_size, 1),
        max_size=max_size,
        for_locks=False,
        connection_class=connection_class,
    )
    try:
        async with pool.acquire() as connection:
            schema = await open_schema(
                PoolSession(connection), POSTGRES, where=str(database), migrate=migrate
            )
        lock_pool = await create_pool(
            database,
            min_size=0,
            max_size=lock_pool_size,
            for_locks=True,
            connection_class=connection_class,
        )
    except BaseException:
        pool.terminate()
        raise
    return pool, lock_pool, schema
