"""The SQLite store's thread: one dedicated thread that owns the store's only connection.

Every sqlite3 call runs on it, so the event loop never blocks on disk and the connection is only
ever touched by the thread that created it (sqlite3's ``check_same_thread`` stays on). One writer
thread also serialises transactions without lock contention. Work submitted to it runs start to
finish there: if the awaiting task is cancelled meanwhile, it still completes (a transaction
commits or rolls back as a whole) and the task sees ``CancelledError``; work that has not started
when its task is cancelled never runs.

The thread takes work from a queue and answers through ``loop.call_soon_threadsafe``, setting
the awaiting future itself: a ``ThreadPoolExecutor`` with ``asyncio.wrap_future`` made every
round trip pay for the executor's bookkeeping and a second future chained to the first, and a
CreateSession makes several. Measurements behind this design: ``bench/results/store.md``,
``bench/results/create_session/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec, TypeVar

from vault_service.store.base import SchemaVersionError, UnusableDatabaseError
from vault_service.store.sql import Row, numbered_qmarks

Synchronous = Literal["NORMAL", "FULL"]

BUSY_TIMEOUT_SECONDS: Final = 5.0
_THREAD_NAME: Final = "vault-store-sqlite"
_WAL_SWITCH_RETRY_SECONDS: Final = 0.01

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(slots=True)
class _Job:
    """One submission: ``work`` to run on the thread, the future its task awaits."""

    work: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    cancelled: bool = field(default=False)

    def forget_if_cancelled(self, future: asyncio.Future[Any]) -> None:
        """Done callback (on the loop): a job cancelled before the thread took it never runs."""
        if future.cancelled():
            self.cancelled = True


class _Worker:
    """The thread and its queue; ``None`` on the queue ends the thread.

    A daemon thread: a store its owner forgot to close does not hold the process at exit, and
    a transaction interrupted by the exit is rolled back by SQLite's journal like a crash's.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=_THREAD_NAME, daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], _T]) -> asyncio.Future[_T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        job = _Job(work, future, loop)
        future.add_done_callback(job.forget_if_cancelled)
        self._jobs.put(job)
        return future

    def stop(self) -> None:
        """End the thread once the jobs queued before are done (it is not waited for)."""
        self._jobs.put(None)

    def join(self) -> None:
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled:
                continue
            try:
                result = job.work()
            except BaseException as exc:  # handed to the awaiting task, whatever it is
                _answer(job, _fail, exc)
            else:
                _answer(job, _succeed, result)


def _answer(job: _Job, settle: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        job.loop.call_soon_threadsafe(settle, job.future, value)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class StoreThread:
    """The thread and the connection it owns; :meth:`start` opens both."""

    def __init__(self, worker: _Worker, connection: sqlite3.Connection, path: Path):
        self._worker = worker
        self.connection = connection
        self.path = path
        """The database file's resolved path, which names it in ``creation_lock``'s keys."""

    @classmethod
    async def start(cls, path: Path, *, create: bool, synchronous: Synchronous) -> StoreThread:
        """Connect on a new thread; only with ``create`` may the file be created (so that a
        mistyped path is not silently an empty new database)."""
        worker = _Worker()
        opened: list[sqlite3.Connection] = []
        connecting = worker.submit(
            functools.partial(_connect, path, create=create, synchronous=synchronous, into=opened)
        )
        try:
            connection, resolved = await connecting
        except BaseException:
            # Cancelled or failed: queued behind the connect, this closes a connection that it
            # may still have opened, and the thread exits once it has.
            worker.submit(functools.partial(_close_all, opened))
            worker.stop()
            raise
        return cls(worker, connection, resolved)

    async def run(self, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``work(*args, **kwargs)`` on the thread, awaited without blocking the loop."""
        return await self._worker.submit(functools.partial(work, *args, **kwargs))

    async def shut_down(self) -> None:
        """Close the connection after the work queued before, then end the thread."""
        closing = self._worker.submit(self.connection.close)
        self._worker.stop()
        # Shielded so that a cancelled close still closes the connection after queued work.
        await asyncio.shield(closing)
        # The thread has nothing left to do: joining it does not hold up the loop.
        self._worker.join()

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
    path: Path, *, create: bool, synchronous: Synchronous, into: list[sqlite3.Connection]
) -> tuple[sqlite3.Connection, Path]:
    """Open and configure the database (on the thread); also its resolved path. The open
    connection is also put ``into`` the list, for a caller that stopped waiting to close."""
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
    into.append(connection)
    return connection, resolved


def _configure(connection: sqlite3.Connection, path: Path, synchronous: Synchronous) -> None:
    # Takes effect on a new database (before its first table); an existing one is converted
    # once by `vault-service migrate` (sqlite module, "Space").
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = _use_write_ahead_log(connection)
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


def _use_write_ahead_log(connection: sqlite3.Connection) -> str:
    """Switch a new database to WAL (a no-op on one already in it); the journal mode it is in.

    While another connection holds the write lock of a database still in rollback mode,
    SQLite refuses the switch at once with "database is locked" instead of waiting out
    ``busy_timeout``: ``vault-service migrate`` runs (or a serve auto-migrating beside one)
    creating one database together failed that way. So the switch itself waits, as long as any
    other lock would. It runs on the store's thread, never on the event loop, so sleeping here
    blocks nothing else.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            mode: str = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            busy = error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # primary code
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_SWITCH_RETRY_SECONDS)
        else:
            return mode


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for connection in connections:
        connection.close()
