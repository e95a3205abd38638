"""The group commit against a real SQLite store: concurrent applies share a transaction, each
caller hears its own outcome only once its batch has committed, and close drains; and what
concurrent notifications become through it, on each backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import cast

import pytest

from tests.store.strategies import T0, new_record, observe
from vault_service.antom import AntomClient, VaultingNotification
from vault_service.domain import Event, Observation, VaultingStatus
from vault_service.events import EventHub
from vault_service.metrics import Metrics
from vault_service.service import VaultingService
from vault_service.service.group_commit import (
    GroupCommit,
    GroupCommitClosedError,
    GroupCommitFailedError,
)
from vault_service.store import Applied, RecordNotFoundError, SQLiteStore, Store
from vault_service.store import StoreUnavailableError as Unavailable

SUCCEEDED = observe(VaultingStatus.SUCCEEDED)


class GatedStore:
    """The real store, whose ``apply_batch`` waits for the gate before it commits (so that the
    test can queue applies behind a batch in flight) and records each batch's size."""

    def __init__(self, store: Store, *, fail: bool = False) -> None:
        self._store = store
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.batches: list[int] = []
        self._fail = fail

    async def apply_batch(self, applies: Sequence[tuple[str, Observation]]) -> list[Applied]:
        self.entered.set()
        await self.gate.wait()
        self.batches.append(len(applies))
        if self._fail:
            raise Unavailable("database connection lost")
        return await self._store.apply_batch(applies)


@pytest.fixture
async def records(sqlite_store: SQLiteStore) -> list[str]:
    ids = [f"r{n}" for n in range(12)]
    for rid in ids:
        await sqlite_store.insert(new_record(rid), next_check_at=T0)
    return ids


def committer(store: GatedStore, committed: list[list[Event]], **options: int) -> GroupCommit:
    return GroupCommit(cast(Store, store), on_commit=committed.append, **options)


async def test_applies_queued_behind_a_commit_share_the_next_one_each_with_its_outcome(
    sqlite_store: SQLiteStore, records: list[str]
) -> None:
    gated = GatedStore(sqlite_store)
    committed: list[list[Event]] = []
    commits = committer(gated, committed)
    first = asyncio.create_task(commits.apply(records[0], SUCCEEDED))
    await gated.entered.wait()
    rest = [asyncio.create_task(commits.apply(rid, SUCCEEDED)) for rid in records[1:]]
    unknown = asyncio.create_task(commits.apply("unknown", SUCCEEDED))
    await asyncio.sleep(0)
    assert not any(task.done() for task in [first, *rest, unknown])  # nothing committed yet

    gated.gate.set()
    events = await asyncio.gather(first, *rest)
    with pytest.raises(RecordNotFoundError):
        await unknown

    assert gated.batches == [1, len(records)]
    assert [e.record.vaulting_request_id for e in events if e is not None] == records
    assert committed == [events[:1], events[1:]]  # once per batch, after its commit
    assert await sqlite_store.events_after(0, limit=100) == events


async def test_a_batch_is_at_most_max_batch_applies(
    sqlite_store: SQLiteStore, records: list[str]
) -> None:
    gated = GatedStore(sqlite_store)
    gated.gate.set()
    commits = committer(gated, [], max_batch=5)
    await asyncio.gather(*(commits.apply(rid, SUCCEEDED) for rid in records))
    assert gated.batches == [5, 5, 2]


async def test_a_batch_that_fails_as_a_whole_fails_each_of_its_callers(
    sqlite_store: SQLiteStore, records: list[str]
) -> None:
    gated = GatedStore(sqlite_store, fail=True)
    gated.gate.set()
    committed: list[list[Event]] = []
    commits = committer(gated, committed)
    answers = await asyncio.gather(
        *(commits.apply(rid, SUCCEEDED) for rid in records[:3]), return_exceptions=True
    )
    assert all(isinstance(answer, Unavailable) for answer in answers)
    assert committed == []
    # Regression: one exception object went to every caller, each raise piling its frames
    # onto the shared traceback. Each caller has its own, caused by the batch's failure.
    assert len({id(answer) for answer in answers}) == len(answers)
    assert len({id(answer.__cause__) for answer in answers}) == 1


async def test_a_failing_wake_up_still_answers_every_caller_with_its_outcome(
    sqlite_store: SQLiteStore, records: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: an exception from ``on_commit`` (waking the streams, counting) ended the
    writer, whose callers were then cancelled although their batch had committed: the webhook
    saw a cancellation, not an outcome, and nothing logged why."""

    def broken_wake_up(events: list[Event]) -> None:
        raise RuntimeError("a bug in the wake-up")

    gated = GatedStore(sqlite_store)
    gated.gate.set()
    commits = GroupCommit(cast(Store, gated), on_commit=broken_wake_up)
    events = await asyncio.gather(*(commits.apply(rid, SUCCEEDED) for rid in records[:3]))
    assert [e.record.vaulting_request_id for e in events if e is not None] == records[:3]
    assert "waking the streams after a group commit failed" in caplog.text
    assert await commits.apply(records[3], SUCCEEDED) is not None  # the writer goes on


async def test_a_cancelled_caller_s_apply_is_still_committed_and_announced(
    sqlite_store: SQLiteStore, records: list[str]
) -> None:
    """Regression guard for issue 9 #9 through the group commit: the caller stops waiting,
    the writer still commits its apply and calls ``on_commit`` (which wakes the streams)."""
    gated = GatedStore(sqlite_store)
    committed: list[list[Event]] = []
    commits = committer(gated, committed)
    caller = asyncio.create_task(commits.apply(records[0], SUCCEEDED))
    await gated.entered.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    gated.gate.set()
    await commits.close()
    [[event]] = committed
    assert event.record.vaulting_request_id == records[0]


async def test_close_drains_the_applies_in_flight_then_refuses_new_ones(
    sqlite_store: SQLiteStore, records: list[str]
) -> None:
    gated = GatedStore(sqlite_store)
    commits = committer(gated, [])
    callers = [asyncio.create_task(commits.apply(rid, SUCCEEDED)) for rid in records]
    await gated.entered.wait()
    closing = asyncio.create_task(commits.close())
    await asyncio.sleep(0)
    assert not closing.done()
    gated.gate.set()
    await closing
    assert all(task.done() and task.result() is not None for task in callers)
    with pytest.raises(GroupCommitClosedError):
        await commits.apply(records[0], SUCCEEDED)
    await commits.close()  # twice is harmless


def test_max_batch_must_be_positive(sqlite_store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(sqlite_store, on_commit=lambda events: None, max_batch=0)


async def test_concurrent_notifications_end_as_they_would_one_by_one(
    each_backend_store: Store, antom_client: AntomClient, hub: EventHub
) -> None:
    """What concurrent notifications become once they share transactions, on each backend:
    one event per real change in arrival order, Antom's retries change nothing, an unknown id
    is kept as an orphan, and the events are counted once each."""
    store = each_backend_store
    metrics = Metrics()
    vaulting = VaultingService(
        store,
        antom_client,
        hub,
        notify_url="http://127.0.0.1:9/notify",
        first_check_after=timedelta(seconds=60),
        metrics=metrics,
    )
    ids = [f"n{n:02}" for n in range(10)]
    for rid in ids:
        await store.insert(new_record(rid), next_check_at=T0)

    deliveries = [*ids, *ids[:4], "orphan"]  # four of Antom's retries, one unknown id
    bodies = {rid: _notification(rid) for rid in deliveries}
    await asyncio.gather(
        *(
            vaulting.record_notification(
                VaultingNotification.from_antom_json(bodies[rid]), bodies[rid]
            )
            for rid in deliveries
        )
    )
    await vaulting.aclose()

    events = await store.events_after(0, limit=100)
    assert [e.record.vaulting_request_id for e in events] == ids
    assert all(e.record.status is VaultingStatus.SUCCEEDED for e in events)
    [orphan] = await store.list_orphans(limit=10)
    assert orphan.vaulting_request_id == "orphan"
    counted = metrics.registry.get_sample_value(
        "vault_events_appended_total", {"source": "NOTIFICATION"}
    )
    assert counted == len(ids)


def _notification(vaulting_request_id: str) -> bytes:
    return json.dumps(
        {
            "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
            "vaultingRequestId": vaulting_request_id,
            "paymentMethodDetail": {
                "paymentMethodType": "CARD",
                "card": {"cardToken": f"ALIPAY-{vaulting_request_id}", "brand": "VISA"},
            },
        }
    ).encode()


async def test_a_writer_that_fails_answers_its_callers_with_an_error_not_a_cancellation(
    sqlite_store: SQLiteStore, records: list[str]
) -> None:
    """Regression: any failure of the writer itself cancelled its callers, so the webhook
    treated a bug as a client that went away. A store answering the wrong number of outcomes
    (a broken contract) must reach every caller as an internal error, none of them with
    another's outcome, and the next apply starts a new writer."""

    class ShortStore(GatedStore):
        short = True

        async def apply_batch(self, applies: Sequence[tuple[str, Observation]]) -> list[Applied]:
            outcomes = await super().apply_batch(applies)
            return outcomes[1:] if self.short else outcomes

    store = ShortStore(sqlite_store)
    store.gate.set()
    commits = GroupCommit(cast(Store, store), on_commit=lambda events: None)
    answers = await asyncio.gather(
        *(commits.apply(rid, SUCCEEDED) for rid in records[:2]), return_exceptions=True
    )
    assert all(isinstance(answer, GroupCommitFailedError) for answer in answers), answers
    store.short = False
    assert await commits.apply(records[5], SUCCEEDED) is not None
