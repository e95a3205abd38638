"""The in-process keyed lock under both backends' ``creation_lock``."""

from __future__ import annotations

import asyncio

import pytest

from vault_service.store.keyed_locks import KeyedLocks


async def test_one_key_is_exclusive_and_other_keys_are_free() -> None:
    """Guards the per-id serialisation of CreateSession within one process."""
    locks: KeyedLocks[str] = KeyedLocks()
    order: list[str] = []

    async def use(key: str, name: str, hold: float) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    first = asyncio.create_task(use("a", "first", 0.05))
    await asyncio.sleep(0)
    await asyncio.gather(use("a", "second", 0), use("b", "other", 0), first)
    assert order.index("first out") < order.index("second in")
    assert order.index("other out") < order.index("first out")


async def test_entries_are_dropped_when_unused_also_after_cancellation() -> None:
    """Guards against the map growing with every id ever created (ids are unbounded), and a
    waiter cancelled by its deadline leaving its entry behind."""
    locks: KeyedLocks[str] = KeyedLocks()
    release = asyncio.Event()

    async def hold() -> None:
        async with locks.hold("a"):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert len(locks) == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    assert len(locks) == 0
    async with locks.hold("a"):
        assert len(locks) == 1
    assert len(locks) == 0
