"""In-process mutual exclusion per key, for the backends' ``creation_lock``.

Both backends take a keyed asyncio lock first: SQLite needs nothing more (one process owns the
database file), and PostgreSQL then holds one pooled connection per id being created instead of
one per concurrent caller, so a burst of retries of one id cannot drain its lock pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)


class KeyedLocks(Generic[_K]):
    """One asyncio lock per key, dropped as soon as no task holds or awaits it.

    Dropping unused entries keeps the mapping as small as the number of keys in use (ids are
    unbounded) and means no lock outlives the event loop it was first awaited on.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[_K, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: _K) -> AsyncIterator[None]:
        """Hold the lock of ``key``; a task cancelled while waiting leaves no trace."""
        lock, users = self._entries.get(key, (asyncio.Lock(), 0))
        self._entries[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._entries[key]
            if users == 1:
                del self._entries[key]
            else:
                self._entries[key] = (lock, users - 1)

    def __len__(self) -> int:
        """How many keys are held or awaited (tests check that entries do not leak)."""
        return len(self._entries)
