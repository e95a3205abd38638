"""Wake-ups for live ``StreamResults`` subscribers when new events are committed.

The hub carries no events, only the news that the log moved: each subscriber then reads the log
from its own cursor at its own pace. So a slow subscriber holds nothing but its cursor (memory
stays flat), a fast one is never held back by it, and a wake-up lost or doubled costs at most
one extra read — the log, not the hub, is the source of truth.
"""

from __future__ import annotations

import asyncio


class EventHub:
    """A generation counter with an awaitable "it changed"; safe for any number of waiters.

    Each :meth:`notify` bumps the generation and sets the current :class:`asyncio.Event`, then
    swaps in a fresh one: waiters hold a reference to the event they started on, so nothing has
    to be registered or cleaned up when a waiter is cancelled.
    """

    __slots__ = ("_changed", "_generation")

    def __init__(self) -> None:
        self._generation = 0
        self._changed = asyncio.Event()

    @property
    def generation(self) -> int:
        """Read this before reading the log; pass it to :meth:`wait` afterwards."""
        return self._generation

    def notify(self) -> None:
        """The log moved: wake every waiter."""
        self._generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen_generation: int, max_wait: float) -> bool:
        """Wait until the log moves past ``seen_generation``; ``False`` on timeout."""
        if self._generation != seen_generation:
            return True
        try:
            async with asyncio.timeout(max_wait):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True
