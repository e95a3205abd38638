"""Wake-ups for live ``StreamResults`` subscribers when new events are committed.

The hub carries no events, only the news that the log moved: the process's stream index
(:mod:`vault_service.service.fanout`) then reads the log once and hands each event to the
streams it matches. A wake-up lost or doubled costs at most one extra read — the log, not the
hub, is the source of truth.
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

    async def wait(self, seen_generation: int, max_wait: float | None) -> bool:
        """Wait until the log moves past ``seen_generation``; ``False`` on timeout (``None``:
        none)."""
        if self._generation != seen_generation:
            return True
        try:
            async with asyncio.timeout(max_wait):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True
