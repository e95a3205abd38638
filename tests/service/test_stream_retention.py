"""A live stream that falls behind the event retention: it ends as a too-old resume would,
never passing the pruned events in silence (on every backend)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from tests.grpc_api.support import eventually
from tests.store.strategies import T0, new_record, observe
from vault_service.domain import InvalidResumeTokenError, VaultingStatus
from vault_service.events import EventHub
from vault_service.service.streaming import Checkpoint, ResultStreams
from vault_service.store import LogEntry, Store


@pytest.fixture
def vault_store(each_backend_store: Store) -> Store:
    return each_backend_store


async def test_a_stream_whose_next_events_were_pruned_ends_too_old(
    vault_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both streams follow at the head, fed by the stream index; events then come and are all
    pruned before anyone reads them. The index's reader, refused below the floor, starts again
    at the head and sends every stream back to the log; each, now behind the floor, is refused
    with the resume token's "too old" instead of skipping ahead."""
    hub = EventHub()
    streams = ResultStreams(vault_store, hub, checkpoint_interval=30.0)
    reads: Counter[str] = Counter()
    events_after = vault_store.events_after

    async def counting(*args: object, **kwargs: object) -> list[LogEntry]:
        entries = await events_after(*args, **kwargs)  # type: ignore[arg-type]
        # The index's reader reads every owner's events; a stream names its owner.
        reads["stream" if "owner" in kwargs else "reader"] += 1
        return entries

    monkeypatch.setattr(vault_store, "events_after", counting)
    start = await streams.start_position("")
    followers = [streams.follow(start, owner=None, vaulting_request_ids=None) for _ in range(2)]
    for follower in followers:
        assert isinstance(await anext(follower), Checkpoint)
    # Each goes on to follow the log: it reads the log from its start, the index's reader
    # reads from the head; both find nothing new and wait (only then may the events come, or
    # one of these first reads could find them before they are pruned).
    waiting = [asyncio.ensure_future(anext(follower)) for follower in followers]
    await eventually(lambda: reads == {"stream": 2, "reader": 1}, within=5)
    for index in range(3):
        rid = f"vr-{index}"
        await vault_store.insert(new_record(rid), next_check_at=T0)
        await vault_store.apply(rid, observe(VaultingStatus.PROCESSING, at=T0))
    await vault_store.prune(
        events_before=T0 + timedelta(days=1), records_before=None, batch_size=10
    )
    hub.notify()
    for follower, step in zip(followers, waiting, strict=True):
        with pytest.raises(InvalidResumeTokenError, match="too old"):
            await step
        await follower.aclose()
    assert await streams.start_position("") == await vault_store.events_floor()
