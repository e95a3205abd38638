"""The SQLite store's thread: one dedicated thread that owns the store's only connection.

Every sqlite3 call runs on it (a single-worker executor), so the event loop never blocks on
disk and the connection is only ever touched by the thread that created it (sqlite3's
``check_same_thread`` stays on). One writer thread also serialises transactions without lock
contention. Work submitted to it runs start to finish there: if the awaiting task is cancelled
meanwhile, it still completes (a transaction commits or rolls back as a whole) and the task
sees ``CancelledError``; work that has not started when its task is cancelled never runs.
Measurements behind this design: ``bench/results/store.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec, TypeVar

from vault_service.store.base import SchemaVersionError, UnusableDatabaseError
from vault_service.store.sql import Row, numbered_qmarks

Synchronous = Literal["NORMAL", "FULL"]

BUSY_TIMEOUT_SECONDS: Final = 5.0
_THREAD_NAME: Final = "vault-store-sqlite"

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreThread:
    """The thread and the connection it owns; :meth:`start` opens both."""

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection, path: Path):
        self._executor = executor
        self.connection = connection
        self.path = path
        """The database file's resolved path, which names it in ``creation_lock``'s keys."""

    @classmethod
    async def start(cls, path: Path, *, create: bool, synchronous: Synchronous) -> StoreThread:
        """Connect on a new thread; only with ``create`` may the file be created (so that a
        mistyped path is not silently an empty new database)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_THREAD_NAME)
        connecting = executor.submit(_connect, path, create=create, synchronous=synchronous)
        try:
            connection, resolved = await asyncio.wrap_future(connecting)
        except BaseException:
            # Cancelled or failed: queued behind the connect, this closes a connection that it
            # may still have opened, and the thread exits once it has.
            executor.submit(_close_opened, connecting)
            executor.shutdown(wait=False)
            raise
        return cls(executor, connection, resolved)

    async def run(self, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``work(*args, **kwargs)`` on the thread, awaited without blocking the loop."""
        return await asyncio.wrap_future(self._executor.submit(work, *args, **kwargs))

    async def shut_down(self) -> None:
        """Close the connection after the work queued before, then end the thread."""
        closing = self._executor.submit(self.connection.close)
        self._executor.shutdown(wait=False)
        # Shielded so that a cancelled close still closes the connection after queued work.
        await asyncio.shield(asyncio.wrap_future(closing))
        # The thread has nothing left to do: joining it does not hold up the loop.
        self._executor.shutdown(wait=True)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return await self.run(_fetch, self.connection, numbered_qmarks(sql), args)

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: object) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: object) -> int:
        return await self.run(_execute, self.connection, numbered_qmarks(sql), args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A write transaction across several submissions: only while no other task uses the
        connection (a store being opened), or their statements would join it."""
        await self.run(self.connection.execute, "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self.run(_roll_back, self.connection)
            raise
        await self.run(self.connection.execute, "COMMIT")


def transaction(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """``work`` inside one write transaction (on the thread): all of it commits, or none."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work(connection)
        connection.execute("COMMIT")
    except BaseException:
        _roll_back(connection)
        raise
    return result


def _roll_back(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def _fetch(connection: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> list[Row]:
    return connection.execute(sql, args).fetchall()


def _execute(connection: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> int:
    return connection.execute(sql, args).rowcount


def _connect(
    path: Path, *, create: bool, synchronous: Synchronous
) -> tuple[sqlite3.Connection, Path]:
    """Open and configure the database (on the thread); also its resolved path."""
    uri = f"{path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}"
    try:
        connection = sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS
        )
    except sqlite3.OperationalError:
        if not create and not path.exists():
            raise SchemaVersionError(
                f"there is no database at {path}: run `vault-service migrate`"
            ) from None
        raise
    try:
        _configure(connection, path, synchronous)
        resolved = path.resolve()
    except BaseException:
        connection.close()
        raise
    return connection, resolved


def _configure(connection: sqlite3.Connection, path: Path, synchronous: Synchronous) -> None:
    # Takes effect on a new database (before its first table); an existing one is converted
    # once by `vault-service migrate` (sqlite module, "Space").
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise UnusableDatabaseError(
            f"the database {path} cannot use write-ahead logging (journal mode {mode!r}); "
            "put it on a local filesystem"
        )
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    connection.execute("PRAGMA foreign_keys = ON")
    # Deleted rows (retention) are overwritten, not left readable in free pages: the data
    # retention policy is about the file's bytes, card ciphertext included.
    connection.execute("PRAGMA secure_delete = ON")


def _close_opened(connecting: Future[tuple[sqlite3.Connection, Path]]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result()[0].close()
