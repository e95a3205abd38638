"""The wake-up hub: no lost wake-ups, timeouts report False, cancelled waiters leave nothing."""

from __future__ import annotations

import asyncio

from vault_service.events import EventHub


async def test_notify_wakes_every_waiter() -> None:
    """One commit must wake all live streams, not just one."""
    hub = EventHub()
    seen = hub.generation
    waiters = [asyncio.create_task(hub.wait(seen, 5.0)) for _ in range(50)]
    await asyncio.sleep(0)
    hub.notify()
    assert await asyncio.gather(*waiters) == [True] * 50


async def test_a_notify_between_read_and_wait_is_not_lost() -> None:
    """A commit that lands after a stream read the log but before it slept must still wake
    it: the generation read before the log read catches it."""
    hub = EventHub()
    seen = hub.generation
    hub.notify()
    assert await hub.wait(seen, 0.0) is True


async def test_wait_times_out_with_false() -> None:
    """A quiet log lets the stream send its checkpoint on time."""
    hub = EventHub()
    assert await hub.wait(hub.generation, 0.01) is False


async def test_cancelled_waiters_leave_no_trace() -> None:
    """Thousands of cancelled streams must not accumulate in the hub."""
    hub = EventHub()
    tasks = [asyncio.create_task(hub.wait(hub.generation, 60)) for _ in range(1000)]
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert not hub._changed._waiters  # type: ignore[attr-defined]
