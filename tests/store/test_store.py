"""The Store contract, run against every backend (see ``conftest.py``)."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.store.backends import BACKENDS, Backend
from tests.store.strategies import T0, full_card, full_record, new_record, observe, records
from vault_service.domain import (
    Event,
    EventSource,
    VaultingRecord,
    VaultingStatus,
    apply_observation,
    decode_resume_token,
    encode_resume_token,
)
from vault_service.store import (
    OrphanNotification,
    RecordExistsError,
    RecordNotFoundError,
    SchemaVersionError,
    Store,
    StoreClosedError,
)

S = VaultingStatus
REPO_ROOT = Path(__file__).resolve().parents[2]
_unique = itertools.count()


async def _log(
    store: Store, *, owner: str | None = None, vaulting_request_ids: frozenset[str] | None = None
) -> list[Event]:
    """The whole log (as filtered)."""
    return await store.events_after(
        0, limit=10_000, owner=owner, vaulting_request_ids=vaulting_request_ids
    )


# Records and idempotent creation.


async def test_a_fully_populated_record_round_trips(store: Store) -> None:
    record = full_record()
    await store.insert(record, next_check_at=T0)
    assert await store.get(record.vaulting_request_id) == record


async def test_datetimes_come_back_aware_in_utc(store: Store) -> None:
    """Guards the codec's promise in every backend: any offset in, the same instant in UTC out."""
    plus_eight = timezone(timedelta(hours=8))
    record = replace(new_record("vr-tz"), created_at=T0.astimezone(plus_eight))
    await store.insert(record, next_check_at=T0)
    stored = await store.get("vr-tz")
    assert stored is not None
    assert stored.created_at == T0
    assert stored.created_at.tzinfo is UTC


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=records)
async def test_generated_records_round_trip(store: Store, record: VaultingRecord) -> None:
    # Each example gets its own id: the store outlives the examples.
    record = replace(record, vaulting_request_id=f"{record.vaulting_request_id}-{next(_unique)}")
    await store.insert(record, next_check_at=T0)
    assert await store.get(record.vaulting_request_id) == record


async def test_an_unknown_id_reads_as_none(store: Store) -> None:
    assert await store.get("never-created") is None


async def test_inserting_an_existing_id_raises_with_the_stored_record(store: Store) -> None:
    """Guards CreateSession idempotency: the caller gets the stored record to compare with."""
    first = new_record("vr-dup")
    await store.insert(first, next_check_at=T0)
    second = replace(first, owner="someone-else", session=replace(first.session, session_id="x"))
    with pytest.raises(RecordExistsError) as raised:
        await store.insert(second, next_check_at=T0)
    assert raised.value.existing == first
    assert await store.get("vr-dup") == first


async def test_concurrent_inserts_of_one_id_store_one_record(store: Store) -> None:
    """Guards "concurrent duplicates make one Antom call": exactly one insert wins."""
    candidates = [replace(new_record("vr-race"), owner=f"owner-{i}") for i in range(20)]
    outcomes = await asyncio.gather(
        *(store.insert(c, next_check_at=T0) for c in candidates), return_exceptions=True
    )
    winners = [c for c, outcome in zip(candidates, outcomes, strict=True) if outcome is None]
    assert len(winners) == 1
    assert all(isinstance(o, RecordExistsError) and o.existing == winners[0] for o in outcomes if o)


# apply: one event per real change.


@pytest.mark.parametrize(
    ("news", "expected_events"),
    [
        pytest.param([S.PROCESSING, S.SUCCEEDED], [S.PROCESSING, S.SUCCEEDED], id="progress"),
        pytest.param([S.SUCCEEDED, S.PROCESSING], [S.SUCCEEDED], id="processing-after-success"),
        pytest.param([S.SUCCEEDED, S.SUCCEEDED], [S.SUCCEEDED], id="success-twice"),
        pytest.param([S.SUCCEEDED, S.FAILED], [S.SUCCEEDED], id="failed-after-success"),
        pytest.param([S.EXPIRED, S.SUCCEEDED], [S.EXPIRED, S.SUCCEEDED], id="success-after-expiry"),
        pytest.param([S.EXPIRED, S.PROCESSING], [S.EXPIRED], id="processing-after-expiry"),
        pytest.param([S.PROCESSING, S.PROCESSING], [S.PROCESSING], id="processing-twice"),
        pytest.param([S.SESSION_CREATED], [], id="session-created-again"),
    ],
)
async def test_apply_emits_one_event_per_real_change(
    store: Store, news: list[VaultingStatus], expected_events: list[VaultingStatus]
) -> None:
    """Guards DESIGN §5 through the store: duplicate, late or out-of-order news changes nothing
    and appends no event; every real change appends exactly one, which apply returns."""
    await store.insert(new_record("vr-1"), next_check_at=T0)
    returned: list[Event] = []
    for minute, status in enumerate(news, start=1):
        event = await store.apply("vr-1", observe(status, at=T0 + timedelta(minutes=minute)))
        if event is not None:
            returned.append(event)
    log = await _log(store)
    assert [e.record.status for e in log] == expected_events
    assert log == returned
    final = await store.get("vr-1")
    assert final is not None
    assert final.status is (expected_events[-1] if expected_events else S.SESSION_CREATED)


async def test_the_returned_event_is_the_committed_one(store: Store) -> None:
    record = new_record("vr-1")
    await store.insert(record, next_check_at=T0)
    news = observe(S.SUCCEEDED, source=EventSource.INQUIRY)
    event = await store.apply("vr-1", news)
    assert event is not None
    assert event.event_id > 0
    assert event.source is EventSource.INQUIRY
    assert event.occurred_at == news.observed_at
    assert event.record == apply_observation(record, news)
    assert event.record == await store.get("vr-1")
    assert await _log(store) == [event]


async def test_apply_to_an_unknown_id_raises_and_emits_nothing(store: Store) -> None:
    with pytest.raises(RecordNotFoundError) as raised:
        await store.apply("never-created", observe(S.SUCCEEDED))
    assert raised.value.vaulting_request_id == "never-created"
    assert await store.last_event_id() == 0


async def test_event_snapshots_keep_the_state_at_the_time_of_the_event(store: Store) -> None:
    """Guards the outbox snapshot: replaying the log shows history, not the current record."""
    await store.insert(new_record("vr-1"), next_check_at=T0)
    await store.apply("vr-1", observe(S.PROCESSING, at=T0 + timedelta(minutes=1), card=None))
    await store.apply("vr-1", observe(S.SUCCEEDED, at=T0 + timedelta(minutes=2)))
    processing, succeeded = await _log(store)
    assert processing.record.status is S.PROCESSING
    assert processing.record.card is None
    assert processing.record.final_at is None
    assert processing.record.updated_at == T0 + timedelta(minutes=1)
    assert succeeded.record.status is S.SUCCEEDED
    assert succeeded.record.card == full_card()
    assert succeeded.record.final_at == T0 + timedelta(minutes=2)


async def test_event_snapshots_carry_the_card_token(store: Store) -> None:
    """The token is stored apart from the snapshot JSON; readers still get it back."""
    await store.insert(new_record("vr-1"), next_check_at=T0)
    await store.apply("vr-1", observe(S.SUCCEEDED, card=full_card("tok-xyz")))
    (event,) = await _log(store)
    assert event.record.card is not None
    assert event.record.card.card_token == "tok-xyz"


# The event log: order, paging, filters.


async def _populate(store: Store) -> list[Event]:
    """Six events: three records of owner "a", one of owner "b", in a known order."""
    for vaulting_request_id, owner in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")]:
        await store.insert(new_record(vaulting_request_id, owner=owner), next_check_at=T0)
    events = []
    for vaulting_request_id, status in [
        ("a1", S.PROCESSING),
        ("b1", S.PROCESSING),
        ("a2", S.FAILED),
        ("a1", S.SUCCEEDED),
        ("b1", S.SUCCEEDED),
        ("a3", S.EXPIRED),
    ]:
        event = await store.apply(vaulting_request_id, observe(status))
        assert event is not None
        events.append(event)
    return events


async def test_events_come_in_ascending_id_order(store: Store) -> None:
    events = await _populate(store)
    ids = [e.event_id for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert await _log(store) == events


async def test_events_after_pages_with_limit(store: Store) -> None:
    events = await _populate(store)
    pages: list[list[Event]] = []
    cursor = 0
    while page := await store.events_after(cursor, limit=4):
        pages.append(page)
        cursor = page[-1].event_id
    assert [len(page) for page in pages] == [4, 2]
    assert [e for page in pages for e in page] == events
    assert await store.events_after(events[2].event_id, limit=2) == events[3:5]
    assert await store.events_after(events[-1].event_id, limit=10) == []


async def test_events_after_filters_by_owner(store: Store) -> None:
    """Guards "a caller sees only the sessions it created" at the log's level."""
    events = await _populate(store)
    assert await _log(store, owner="b") == [events[1], events[4]]
    assert await _log(store, owner="a") == [events[i] for i in (0, 2, 3, 5)]
    assert await _log(store, owner="nobody") == []
    assert await store.events_after(events[1].event_id, limit=2, owner="a") == [
        events[2],
        events[3],
    ]


async def test_events_after_filters_by_ids(store: Store) -> None:
    events = await _populate(store)
    assert (
        await _log(store, vaulting_request_ids=frozenset({"a1", "b1"})) == events[:2] + events[3:5]
    )
    assert await _log(store, vaulting_request_ids=frozenset({"a3", "unknown"})) == [events[5]]
    assert await _log(store, vaulting_request_ids=frozenset()) == []


async def test_events_after_combines_owner_and_ids(store: Store) -> None:
    """Guards a caller's id filter against reaching other owners' events with the same ids."""
    events = await _populate(store)
    both = await _log(store, owner="a", vaulting_request_ids=frozenset({"a1", "b1"}))
    assert both == [events[0], events[3]]


async def test_events_after_refuses_a_non_positive_limit(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.events_after(0, limit=0)


async def test_last_event_id(store: Store) -> None:
    assert await store.last_event_id() == 0
    events = await _populate(store)
    assert await store.last_event_id() == events[-1].event_id
    assert await store.events_after(await store.last_event_id(), limit=1) == []


async def test_resume_tokens_round_trip_through_the_log(store: Store) -> None:
    """A token built from the store's log id resumes right after the event it names."""
    events = await _populate(store)
    token = encode_resume_token(store.log_id, events[2].event_id)
    resumed = await store.events_after(decode_resume_token(token, store.log_id), limit=10)
    assert resumed == events[3:]


# Orphan notifications.


async def test_orphans_are_deduplicated_per_id_and_body(store: Store) -> None:
    """Guards against Antom's retries of an unknown id's notification piling up rows."""
    body = b'{"vaultingRequestId":"ghost","result":{"resultStatus":"S"}}'
    for attempt in range(3):
        await store.record_orphan("ghost", body, T0 + timedelta(minutes=attempt))
    await store.record_orphan("ghost", body + b" ", T0 + timedelta(minutes=5))
    await store.record_orphan("ghost-2", body, T0 + timedelta(minutes=6))
    assert await store.list_orphans(limit=10) == [
        OrphanNotification("ghost", body, T0),
        OrphanNotification("ghost", body + b" ", T0 + timedelta(minutes=5)),
        OrphanNotification("ghost-2", body, T0 + timedelta(minutes=6)),
    ]
    assert len(await store.list_orphans(limit=2)) == 2


async def test_an_orphan_does_not_create_a_record_or_an_event(store: Store) -> None:
    await store.record_orphan("ghost", b"{}", T0)
    assert await store.get("ghost") is None
    assert await store.last_event_id() == 0


# Reconciliation schedule.


async def test_due_records_come_oldest_first_up_to_the_limit(store: Store) -> None:
    for minutes, vaulting_request_id in [(3, "c"), (1, "a"), (2, "b"), (10, "later")]:
        await store.insert(
            new_record(vaulting_request_id), next_check_at=T0 + timedelta(minutes=minutes)
        )
    now = T0 + timedelta(minutes=5)
    assert [r.vaulting_request_id for r in await store.due_for_reconciliation(now, 10)] == [
        "a",
        "b",
        "c",
    ]
    assert [r.vaulting_request_id for r in await store.due_for_reconciliation(now, 2)] == ["a", "b"]
    due_at_the_check_time = await store.due_for_reconciliation(T0 + timedelta(minutes=1), 10)
    assert [r.vaulting_request_id for r in due_at_the_check_time] == ["a"]
    assert await store.due_for_reconciliation(T0, 10) == []


async def test_due_records_are_the_stored_records(store: Store) -> None:
    await store.insert(new_record("a"), next_check_at=T0)
    await store.apply("a", observe(S.PROCESSING, card=None))
    assert await store.due_for_reconciliation(T0, 10) == [await store.get("a")]


async def test_reschedule_moves_the_next_check(store: Store) -> None:
    await store.insert(new_record("a"), next_check_at=T0)
    await store.insert(new_record("b"), next_check_at=T0 + timedelta(seconds=1))
    await store.reschedule("a", T0 + timedelta(minutes=5))
    now = T0 + timedelta(minutes=1)
    assert [r.vaulting_request_id for r in await store.due_for_reconciliation(now, 10)] == ["b"]
    later = T0 + timedelta(minutes=5)
    assert [r.vaulting_request_id for r in await store.due_for_reconciliation(later, 10)] == [
        "b",
        "a",
    ]


@pytest.mark.parametrize("final", [S.SUCCEEDED, S.FAILED, S.EXPIRED])
async def test_final_records_are_never_due(store: Store, final: VaultingStatus) -> None:
    """Guards against inquiring about finished vaultings, also after a racing reschedule."""
    await store.insert(new_record("done"), next_check_at=T0)
    await store.insert(new_record("pending"), next_check_at=T0)
    await store.apply("done", observe(final))
    await store.reschedule("done", T0)
    far_future = T0 + timedelta(days=3650)
    assert [r.vaulting_request_id for r in await store.due_for_reconciliation(far_future, 10)] == [
        "pending"
    ]


async def test_a_record_inserted_final_is_never_due(store: Store) -> None:
    await store.insert(full_record(), next_check_at=T0)
    assert await store.due_for_reconciliation(T0 + timedelta(days=1), 10) == []


async def test_reschedule_of_an_unknown_id_raises(store: Store) -> None:
    with pytest.raises(RecordNotFoundError):
        await store.reschedule("never-created", T0)


# Restart, schema versions, close.


async def test_everything_survives_a_restart(backend: Backend, store: Store) -> None:
    """Guards durability across a process restart: reopen the database and read it all back."""
    events = await _populate(store)
    await store.insert(full_record(), next_check_at=T0)
    await store.record_orphan("ghost", b"body", T0)
    await store.reschedule("a1", T0)  # final: stays off the schedule
    records = {i: await store.get(i) for i in ("a1", "a2", "a3", "b1", "vr-full")}
    log_id = store.log_id
    await store.close()

    reopened = await backend.open()
    try:
        assert reopened.log_id == log_id
        assert {i: await reopened.get(i) for i in records} == records
        assert await _log(reopened) == events
        assert await reopened.last_event_id() == events[-1].event_id
        assert await reopened.list_orphans(limit=10) == [OrphanNotification("ghost", b"body", T0)]
        assert await reopened.due_for_reconciliation(T0 + timedelta(days=1), 10) == []
        await reopened.insert(new_record("after-restart"), next_check_at=T0)
        event = await reopened.apply("after-restart", observe(S.SUCCEEDED))
        assert event is not None
        assert event.event_id > events[-1].event_id
    finally:
        await reopened.close()


async def test_each_database_has_its_own_stable_log_id(
    backend: Backend, store: Store, tmp_path: Path
) -> None:
    """Guards resume tokens: a token from another database must not decode against this one."""
    other_backend = BACKENDS[backend.name](tmp_path)
    await other_backend.migrate()
    other = await other_backend.open()
    try:
        assert other.log_id != store.log_id
        assert store.log_id
    finally:
        await other.close()


async def test_an_unmigrated_database_is_refused(backend: Backend) -> None:
    """Guards against serving from an empty schema; the message tells the operator the fix."""
    with pytest.raises(SchemaVersionError, match="run `vault-service migrate`"):
        await backend.open()


async def test_auto_migrate_migrates_then_opens(backend: Backend) -> None:
    store = await backend.open(auto_migrate=True)
    try:
        await store.insert(new_record("a"), next_check_at=T0)
        assert await store.get("a") == new_record("a")
    finally:
        await store.close()
    assert await backend.migrate() == []


async def test_migrate_applies_each_version_once(backend: Backend) -> None:
    """Guards re-running ``vault-service migrate`` (every deploy may): it must be a no-op."""
    applied = await backend.migrate()
    assert applied
    assert applied == sorted(applied)
    assert await backend.migrate() == []


async def test_a_database_from_a_newer_build_is_refused(backend: Backend) -> None:
    """Guards against an old build (a rollback) misreading or migrating a newer schema."""
    applied = await backend.migrate()
    backend.record_schema_version(applied[-1] + 1)
    for attempt in (backend.open(), backend.open(auto_migrate=True), backend.migrate()):
        with pytest.raises(SchemaVersionError, match="migrated by a newer vault-service"):
            await attempt


async def test_close_leaves_no_thread_behind(backend: Backend) -> None:
    """Guards against a leaked worker thread keeping a stopped service's process alive."""
    before = set(threading.enumerate())
    await backend.migrate()
    store = await backend.open()
    await asyncio.gather(*(store.last_event_id() for _ in range(50)))
    await store.close()
    assert set(threading.enumerate()) <= before


async def test_calls_after_close_raise_a_clear_error(store: Store) -> None:
    await store.close()
    await store.close()  # closing twice is harmless
    calls = [
        store.get("a"),
        store.insert(new_record("a"), next_check_at=T0),
        store.apply("a", observe(S.SUCCEEDED)),
        store.record_orphan("a", b"", T0),
        store.list_orphans(limit=1),
        store.events_after(0, limit=1),
        store.events_after(0, limit=1, vaulting_request_ids=frozenset()),
        store.last_event_id(),
        store.due_for_reconciliation(T0, 1),
        store.reschedule("a", T0),
    ]
    for call in calls:
        with pytest.raises(StoreClosedError, match="closed"):
            await call


# Concurrency and crashes.


async def test_concurrent_applies_emit_one_event_per_real_change(store: Store) -> None:
    """200 concurrent applies: 100 on distinct ids, 100 racing on one id.

    Guards the outbox under concurrency: no lost or doubled event, and ids without gaps.
    """
    distinct = [f"vr-{i:03d}" for i in range(100)]
    for vaulting_request_id in [*distinct, "shared"]:
        await store.insert(new_record(vaulting_request_id), next_check_at=T0)
    calls = [(i, observe(S.SUCCEEDED)) for i in distinct]
    calls += [("shared", observe(S.SUCCEEDED if n % 2 else S.PROCESSING)) for n in range(100)]
    random.Random(7).shuffle(calls)

    results = await asyncio.gather(*(store.apply(i, news) for i, news in calls))

    emitted = sorted((e for e in results if e is not None), key=lambda e: e.event_id)
    log = await _log(store)
    assert log == emitted
    ids = [e.event_id for e in log]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    per_id = Counter(e.record.vaulting_request_id for e in log)
    assert all(per_id[i] == 1 for i in distinct)
    shared = [e.record.status for e in log if e.record.vaulting_request_id == "shared"]
    assert shared in ([S.SUCCEEDED], [S.PROCESSING, S.SUCCEEDED])
    assert len(log) == 100 + len(shared)


async def test_a_commit_survives_sigkill(backend: Backend, store: Store) -> None:
    """Guards "an acknowledged notification is never lost": once apply returned (the webhook
    then acks), killing the process with SIGKILL must not lose the record update or its event."""
    await store.insert(new_record("vr-kill"), next_check_at=T0)
    await store.close()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store.sigkill_child",
        backend.name,
        backend.location,
        "vr-kill",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
    finally:
        child.kill()  # SIGKILL: no cleanup, no close, no checkpoint
        await child.wait()
    assert child.returncode == -9
    word, event_id = line.decode().split()
    assert word == "committed"

    reopened = await backend.open()
    try:
        record = await reopened.get("vr-kill")
        assert record is not None
        assert record.status is S.SUCCEEDED
        (event,) = await _log(reopened)
        assert event.event_id == int(event_id)
        assert event.record == record
    finally:
        await reopened.close()
