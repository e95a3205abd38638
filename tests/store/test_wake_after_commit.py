"""Applying news wakes the streams even when its caller is cancelled right after the commit, on
every backend (the use case lives in the service; the store suite runs it on each backend)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import cast

import pytest

from tests.store.strategies import T0, full_card, new_record, observe
from vault_service.antom import AntomClient
from vault_service.domain import Observation, VaultingStatus
from vault_service.events import EventHub
from vault_service.service import Checkpoint, ResultStreams, StreamedEvent, VaultingService
from vault_service.store import Applied, Store


class CommitWindow:
    """The store under test, with the window in which a cancellation used to land:
    ``apply_batch`` (the service's group commit writes through it) commits through the real
    store, says so, and yields once before returning, as a thread's result or a database's
    reply reaches the awaiting task one loop turn after the commit."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.committed = asyncio.Event()

    async def apply_batch(self, applies: Sequence[tuple[str, Observation]]) -> list[Applied]:
        outcomes = await self._store.apply_batch(applies)
        self.committed.set()
        await asyncio.sleep(0)
        return outcomes

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


class WatchedHub(EventHub):
    """Says when a subscriber waits, so the test knows the stream has read the log before."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, seen_generation: int, max_wait: float) -> bool:
        self.waiting.set()
        return await super().wait(seen_generation, max_wait)


async def test_a_caller_cancelled_right_after_its_commit_still_wakes_the_streams(
    store: Store, antom_client: AntomClient
) -> None:
    """Regression (issue 9 #9): a GetResult(refresh) cancelled during its apply committed
    SUCCEEDED, but the cancellation landed between the commit and ``hub.notify()``, so open
    streams got only checkpoints until an unrelated event arrived. Now the event reaches a
    waiting stream with no other traffic, well before anything else would wake it (its
    checkpoint interval is 30 s; the test allows 10 s, room for a loaded CI machine)."""
    hub = WatchedHub()
    window = CommitWindow(store)
    vaulting = VaultingService(
        cast(Store, window),
        antom_client,
        hub,
        notify_url="http://127.0.0.1:9/notify",
        first_check_after=timedelta(seconds=60),
    )
    await store.insert(new_record("a"), next_check_at=T0)
    streams = ResultStreams(store, hub, checkpoint_interval=30)
    items = streams.follow(await store.last_event_id(), owner=None, vaulting_request_ids=None)
    assert isinstance(await anext(items), Checkpoint)
    next_item = asyncio.ensure_future(anext(items))
    await hub.waiting.wait()

    caller = asyncio.create_task(
        vaulting.apply("a", observe(VaultingStatus.SUCCEEDED, card=full_card("token-a")))
    )
    await window.committed.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller

    async with asyncio.timeout(10):
        item = await next_item
    assert isinstance(item, StreamedEvent)
    assert item.event.record.vaulting_request_id == "a"
    await items.aclose()
