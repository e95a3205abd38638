"""The PostgreSQL store's connections: its two pools, how they connect, and a session on one.

The database URL is revealed here, where asyncpg connects, and nowhere else; messages name it
by its redacted form. Connections are opened with ``application_name`` and timeouts in the
startup packet (no extra round trip per connection): a statement running longer than
:data:`STATEMENT_TIMEOUT` or a transaction idle longer than :data:`IDLE_IN_TRANSACTION_TIMEOUT`
(a frozen replica holding the append lock) is ended by the server. The lock pool has no
statement timeout: waiting for a creation lock is bounded by the caller's deadline, which
cancels the wait.

Pool sizes and the acquire timeout are settings: a call that gets no connection within the
acquire timeout (every one busy) raises :class:`~vault_service.store.base.StoreBusyError`,
retryable, instead of queueing without bound behind a slow Antom or a burst. The timeout covers
waiting for a free connection (and opening one), not the creation lock's own wait.

The main pool skips asyncpg's default reset query on release (:func:`_keep_session`); the lock
pool keeps it, because it runs ``pg_advisory_unlock_all()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final, TypeAlias

import asyncpg
from asyncpg.pool import Pool, PoolConnectionProxy

from vault_service.database_url import DatabaseURL
from vault_service.store.base import DatabaseUnavailableError, StoreBusyError
from vault_service.store.sql import Row, rows_changed

# A string: asyncpg's classes are generic only in its type stubs.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
ConnectionClass: TypeAlias = "type[asyncpg.Connection[asyncpg.Record]]"
"""What the pools' connections are: asyncpg's, or a subclass a test observes them through."""

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

_SETTINGS: Final = {
    "application_name": APPLICATION_NAME,
    "statement_timeout": STATEMENT_TIMEOUT,
    "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT,
}


async def create_pool(
    database: DatabaseURL,
    *,
    min_size: int,
    max_size: int,
    for_locks: bool,
    connection_class: ConnectionClass,
) -> Pool[asyncpg.Record]:
    """A pool whose first ``min_size`` connections are open: the lock pool ``for_locks``, the
    main pool otherwise. Connection failures become :class:`DatabaseUnavailableError`
    naming the database without its password."""
    try:
        return await asyncpg.create_pool(
            database.reveal(),
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT,
            server_settings={**_SETTINGS, "statement_timeout": "0"} if for_locks else _SETTINGS,
            # None is asyncpg's full reset (one more round trip).
            reset=None if for_locks else _keep_session,
            connection_class=connection_class,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise DatabaseUnavailableError(
            f"cannot connect to the database {database}: {error or type(error).__name__}"
        ) from error


async def close_pools(*pools: Pool[asyncpg.Record]) -> None:
    """Close ``pools`` in order once their connections are released; a cancelled or failed
    close terminates them all instead."""
    try:
        for pool in pools:
            await pool.close()
    except BaseException:
        for pool in pools:
            pool.terminate()
        raise


async def acquire(pool: Pool[asyncpg.Record], *, within: float) -> Connection:
    """A connection of ``pool``; :class:`StoreBusyError` when none is free ``within`` seconds."""
    try:
        return await pool.acquire(timeout=within)
    except TimeoutError:
        raise StoreBusyError(f"no database connection became free within {within:g} s") from None


async def _keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """The main pool's reset: nothing beyond asyncpg's rollback of an open transaction.

    Units of work on the main pool leave no session state (no SET, LISTEN, cursor or
    session-level lock; opening, the one user of a session lock, terminates the pool if it
    fails), so asyncpg's default reset query, ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN
    *; RESET ALL``, would only add a round trip to every call: it halved ``get`` throughput.
    """
    del connection


class PoolSession:
    """A :class:`~vault_service.store.sql.Session` on one pooled connection."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return list(await self._connection.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        return await self._connection.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: object) -> Any:
        return await self._connection.fetchval(sql, *args)

    async def execute(self, sql: str, *args: object) -> int:
        return rows_changed(await self._connection.execute(sql, *args))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._connection.transaction():
            yield
