"""The Store contract, run against every backend (see ``conftest.py``)."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hypothesis_profile import SHARED_FIXTURE_HEALTH_CHECKS
from tests.store.backends import Backend, MakeBackend
from tests.store.strategies import T0, full_card, full_record, new_record, observe, records
from vault_service.domain import (
    Event,
    EventSource,
    SessionParameters,
    SessionRequest,
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
    max_examples=25,
    suppress_health_check=SHARED_FIXTURE_HEALTH_CHECKS,
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
    winners = [c for c, outcome in zip(candidates, outcomes, strict=True) if outcome is False]
    assert len(winners) == 1
    assert all(
        isinstance(o, RecordExistsError) and o.existing == winners[0]
        for o in outcomes
        if o is not False
    )


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
    assert event.record.card.card_token.reveal() == "tok-xyz"


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


async def test_insert_tells_whether_orphans_of_its_id_wait(store: Store) -> None:
    """Guards CreateSession's orphan adoption, which asks only when the insert says orphan
    notifications of the new record's id are waiting (and no other id's count)."""
    await store.record_orphan("early", b"{}", T0)
    assert await store.insert(new_record("early"), next_check_at=T0) is True
    assert await store.insert(new_record("usual"), next_check_at=T0) is False


async def test_record_or_request_keeps_the_first_request_until_the_record_exists(
    store: Store,
) -> None:
    """Guards the byte-identical retry and the replay, in one store call: a second request
    for an id gets the first one back, unchanged; once the record exists, the record."""
    record = new_record("vr-kept")
    first = SessionRequest(record.owner, SessionParameters(redirect_url="https://a"), b"first")
    second = SessionRequest("owner-b", SessionParameters(), b"second")
    assert await store.record_or_request("vr-kept", first, T0) == first
    assert await store.record_or_request("vr-kept", second, T0) == first
    await store.insert(record, next_check_at=T0)
    assert await store.record_or_request("vr-kept", second, T0) == record


async def test_an_orphan_does_not_create_a_record_or_an_event(store: Store) -> None:
    await store.record_orphan("ghost", b"{}", T0)
    assert await store.get("ghost") is None
    assert await store.last_event_id() == 0


# Reconciliation schedule: claims with leases.

LEASE = timedelta(minutes=10)


def _ids(records: list[VaultingRecord]) -> list[str]:
    return [r.vaulting_request_id for r in records]


async def test_claim_due_takes_the_longest_overdue_first_up_to_the_limit(store: Store) -> None:
    """Guards the reconciler's batches: oldest first, ``limit`` at a time, each record once."""
    for minutes, vaulting_request_id in [(3, "c"), (1, "a"), (2, "b"), (10, "later")]:
        await store.insert(
            new_record(vaulting_request_id), next_check_at=T0 + timedelta(minutes=minutes)
        )
    now = T0 + timedelta(minutes=5)
    assert _ids(await store.claim_due(now, 2, LEASE)) == ["a", "b"]
    assert _ids(await store.claim_due(now, 10, LEASE)) == ["c"]
    assert await store.claim_due(now, 10, LEASE) == []


async def test_a_record_is_due_at_its_check_time_not_before(store: Store) -> None:
    """Guards the boundary: ``next_check_at <= now``, to the microsecond."""
    await store.insert(new_record("a"), next_check_at=T0)
    assert await store.claim_due(T0 - timedelta(microseconds=1), 10, LEASE) == []
    assert _ids(await store.claim_due(T0, 10, LEASE)) == ["a"]


async def test_a_claim_lapses_after_its_lease(store: Store) -> None:
    """Guards a reconciler that dies mid-claim: the record comes back once the lease ends."""
    await store.insert(new_record("a"), next_check_at=T0)
    assert _ids(await store.claim_due(T0, 10, LEASE)) == ["a"]
    assert await store.claim_due(T0 + LEASE - timedelta(microseconds=1), 10, LEASE) == []
    assert _ids(await store.claim_due(T0 + LEASE, 10, LEASE)) == ["a"]


async def test_claimed_records_are_the_stored_records(store: Store) -> None:
    """Guards the reconciler's input: what it claims is the record as stored, not stale."""
    await store.insert(new_record("a"), next_check_at=T0)
    await store.apply("a", observe(S.PROCESSING, card=None))
    assert await store.claim_due(T0, 10, LEASE) == [await store.get("a")]


async def test_reschedule_moves_the_next_check(store: Store) -> None:
    """Guards the reconciler's back-off: a rescheduled record is not due before its time."""
    await store.insert(new_record("a"), next_check_at=T0)
    await store.insert(new_record("b"), next_check_at=T0 + timedelta(seconds=1))
    await store.reschedule("a", T0 + timedelta(minutes=5))
    assert _ids(await store.claim_due(T0 + timedelta(minutes=1), 10, LEASE)) == ["b"]
    assert _ids(await store.claim_due(T0 + timedelta(minutes=5), 10, LEASE)) == ["a"]


async def test_reschedule_ends_a_lease_early(store: Store) -> None:
    """The reconciler's normal path: claim, inquire, reschedule for the next check."""
    await store.insert(new_record("a"), next_check_at=T0)
    await store.claim_due(T0, 10, timedelta(hours=1))
    await store.reschedule("a", T0 + timedelta(minutes=1))
    assert _ids(await store.claim_due(T0 + timedelta(minutes=1), 10, LEASE)) == ["a"]


@pytest.mark.parametrize("final", [S.SUCCEEDED, S.FAILED, S.EXPIRED])
async def test_final_records_are_never_due(store: Store, final: VaultingStatus) -> None:
    """Guards against inquiring about finished vaultings, also after a racing reschedule or
    when the record became final while claimed."""
    await store.insert(new_record("done"), next_check_at=T0)
    await store.insert(new_record("claimed"), next_check_at=T0)
    await store.insert(new_record("pending"), next_check_at=T0 + timedelta(seconds=1))
    assert _ids(await store.claim_due(T0, 10, LEASE)) == ["claimed", "done"]
    for vaulting_request_id in ("done", "claimed"):
        await store.apply(vaulting_request_id, observe(final))
    await store.reschedule("done", T0)
    far_future = T0 + timedelta(days=3650)
    assert _ids(await store.claim_due(far_future, 10, LEASE)) == ["pending"]


async def test_a_record_inserted_final_is_never_due(store: Store) -> None:
    await store.insert(full_record(), next_check_at=T0)
    assert await store.claim_due(T0 + timedelta(days=1), 10, LEASE) == []


@pytest.mark.parametrize(
    ("limit", "lease", "message"),
    [
        (0, LEASE, "limit"),
        (1, timedelta(0), "lease"),
        (1, -LEASE, "lease"),
    ],
)
async def test_claim_due_refuses_a_non_positive_limit_or_lease(
    store: Store, limit: int, lease: timedelta, message: str
) -> None:
    """Guards against a zero lease, which would let two replicas claim one record at once."""
    with pytest.raises(ValueError, match=message):
        await store.claim_due(T0, limit, lease)


async def test_concurrent_claims_from_two_replicas_never_share_a_record(
    backend: Backend, store: Store
) -> None:
    """Guards "reconciler work is shared among replicas without two of them polling one
    record at once": two stores on one database claim concurrently until nothing is due;
    together they claim every due record exactly once."""
    due = [f"vr-{i:03d}" for i in range(120)]
    for n, vaulting_request_id in enumerate(due):
        await store.insert(
            new_record(vaulting_request_id), next_check_at=T0 + timedelta(microseconds=n)
        )
    other = await backend.open()
    now = T0 + timedelta(minutes=1)

    async def claim_all(replica: Store) -> list[str]:
        claimed: list[str] = []
        while batch := await replica.claim_due(now, 7, LEASE):
            claimed += _ids(batch)
        return claimed

    try:
        claims = await asyncio.gather(*(claim_all(r) for r in (store, other, store, other)))
    finally:
        await other.close()
    every = [vaulting_request_id for claimed in claims for vaulting_request_id in claimed]
    assert sorted(every) == due


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
        assert await reopened.claim_due(T0 + timedelta(days=1), 10, LEASE) == []
        await reopened.insert(new_record("after-restart"), next_check_at=T0)
        event = await reopened.apply("after-restart", observe(S.SUCCEEDED))
        assert event is not None
        assert event.event_id > events[-1].event_id
    finally:
        await reopened.close()


async def test_each_database_has_its_own_stable_log_id(
    new_backend: MakeBackend, store: Store
) -> None:
    """Guards resume tokens: a token from another database must not decode against this one."""
    other_backend = await new_backend()
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


async def test_concurrent_migrations_apply_each_version_once(backend: Backend) -> None:
    """Guards several replicas starting with auto-migrate (or running ``migrate``) at once:
    each version is applied exactly once and every one of them ends up on the latest."""
    outcomes = await asyncio.gather(*(backend.migrate() for _ in range(4)))
    applied = [version for versions in outcomes for version in versions]
    assert applied
    assert len(applied) == len(set(applied))
    assert await backend.migrate() == []
    opened = await backend.open()
    await opened.close()


async def test_migrate_applies_each_version_once(backend: Backend) -> None:
    """Guards re-running ``vault-service migrate`` (every deploy may): it must be a no-op."""
    applied = await backend.migrate()
    assert applied
    assert applied == sorted(applied)
    assert await backend.migrate() == []


async def test_a_database_from_a_newer_build_is_refused(backend: Backend) -> None:
    """Guards against an old build (a rollback) misreading or migrating a newer schema."""
    applied = await backend.migrate()
    await backend.record_schema_version(applied[-1] + 1)
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
        store.claim_due(T0, 1, LEASE),
        store.reschedule("a", T0),
    ]
    for call in calls:
        with pytest.raises(StoreClosedError, match="closed"):
            await call
    with pytest.raises(StoreClosedError, match="closed"):
        async with store.creation_lock("a"):
            pass


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
        str(backend.key_file),
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


@pytest.fixture
async def replicas(backend: Backend, store: Store) -> AsyncIterator[list[Store]]:
    """Three stores on one database, as three replicas would have (``store`` is the first)."""
    others = [await backend.open() for _ in range(2)]
    yield [store, *others]
    for other in others:
        await other.close()


@settings(
    max_examples=20,
    suppress_health_check=SHARED_FIXTURE_HEALTH_CHECKS,
)
@given(seed=st.integers(0, 2**32 - 1))
async def test_readers_resuming_anywhere_see_every_later_event_once_in_order(
    replicas: list[Store], seed: int
) -> None:
    """Guards the event log's cursor under concurrent writers on several replicas (PostgreSQL
    allocates ids before commit): 8 writers spread ~70 applies over 3 stores while 6 readers
    page through the log from cursors taken at random moments, resuming after every page on a
    random store. Each reader must receive exactly the events above its starting cursor, each
    once, in id order; one that saw an id before a smaller one committed would miss it."""
    rng = random.Random(seed)
    example = next(_unique)
    ids = [f"ex{example}-{n}" for n in range(24)]
    for vaulting_request_id in ids:
        await replicas[0].insert(new_record(vaulting_request_id), next_check_at=T0)
    news = [(i, status) for i in ids for status in (S.PROCESSING, S.SUCCEEDED)]
    news += [(rng.choice(ids), S.SUCCEEDED) for _ in range(20)]  # duplicates: no event
    rng.shuffle(news)
    writers_done = asyncio.Event()

    async def write(share: list[tuple[str, VaultingStatus]]) -> None:
        for vaulting_request_id, status in share:
            await rng.choice(replicas).apply(vaulting_request_id, observe(status))
            if rng.random() < 0.5:
                await asyncio.sleep(0)

    async def read() -> tuple[int, list[int]]:
        for _ in range(rng.randrange(20)):
            await asyncio.sleep(0)
        cursor = start = await rng.choice(replicas).last_event_id()
        seen: list[int] = []
        while True:
            finished = writers_done.is_set()
            page = await rng.choice(replicas).events_after(cursor, limit=rng.randint(1, 8))
            seen += [event.event_id for event in page]
            if page:
                cursor = page[-1].event_id
            elif finished:
                return start, seen

    async def write_all() -> None:
        await asyncio.gather(*(write(news[n::8]) for n in range(8)))
        writers_done.set()

    readers = [asyncio.create_task(read()) for _ in range(6)]
    await write_all()
    results = await asyncio.gather(*readers)

    full = await _log(replicas[0])
    log = [event.event_id for event in full]
    assert log == sorted(set(log))
    succeeded = [e.record.vaulting_request_id for e in full if e.record.status is S.SUCCEEDED]
    assert Counter(i for i in succeeded if i in ids) == Counter(ids)
    for start, seen in results:
        assert seen == [event_id for event_id in log if event_id > start]


# Cross-replica creation lock.


async def _hold(
    lock: AbstractAsyncContextManager[None], entered: asyncio.Event, leave: asyncio.Event
) -> None:
    async with lock:
        entered.set()
        await leave.wait()


@pytest.fixture
async def two_replicas(backend: Backend, store: Store) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database (separate pools or threads), as two replicas have."""
    other = await backend.open()
    yield store, other
    await other.close()


@pytest.mark.parametrize("where", ["same replica", "other replica"])
async def test_the_creation_lock_excludes_one_id_and_only_that_id(
    two_replicas: tuple[Store, Store], where: str
) -> None:
    """Guards "the same id arriving on two replicas at once makes one Antom call": a second
    holder of one id waits until the first leaves, while other ids stay free."""
    first_replica, other_replica = two_replicas
    second_replica = first_replica if where == "same replica" else other_replica
    first_in, first_out, second_in, second_out = (asyncio.Event() for _ in range(4))
    first = asyncio.create_task(_hold(first_replica.creation_lock("vr-1"), first_in, first_out))
    await asyncio.wait_for(first_in.wait(), 5)
    second = asyncio.create_task(_hold(second_replica.creation_lock("vr-1"), second_in, second_out))
    await asyncio.sleep(0.2)
    assert not second_in.is_set()
    async with asyncio.timeout(5):
        for replica in two_replicas:
            async with replica.creation_lock("vr-2"):
                pass

    first_out.set()
    await first
    await asyncio.wait_for(second_in.wait(), 5)
    second_out.set()
    await second


async def test_cancelling_a_creation_lock_waiter_leaves_nothing_locked(
    two_replicas: tuple[Store, Store],
) -> None:
    """Guards a CreateSession whose deadline expires while it waits: it leaves, and once the
    holder is done, both replicas can take the lock at once."""
    holder, waiter = two_replicas
    held, release = asyncio.Event(), asyncio.Event()
    holding = asyncio.create_task(_hold(holder.creation_lock("vr-1"), held, release))
    await asyncio.wait_for(held.wait(), 5)
    waiting = asyncio.create_task(_hold(waiter.creation_lock("vr-1"), asyncio.Event(), release))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await holding
    async with asyncio.timeout(5):
        for replica in (waiter, holder):
            async with replica.creation_lock("vr-1"):
                pass


async def test_cancelling_or_failing_inside_the_creation_lock_releases_it(
    two_replicas: tuple[Store, Store],
) -> None:
    """Guards a CreateSession cancelled or failing mid-way (its Antom call, say): the lock
    goes with it, on its replica and on the others."""
    first, second = two_replicas
    held = asyncio.Event()
    holding = asyncio.create_task(_hold(first.creation_lock("vr-1"), held, asyncio.Event()))
    await asyncio.wait_for(held.wait(), 5)
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding
    async with asyncio.timeout(5):
        with pytest.raises(RuntimeError, match="antom down"):
            async with second.creation_lock("vr-1"):
                raise RuntimeError("antom down")
        for replica in two_replicas:
            async with replica.creation_lock("vr-1"):
                pass


async def test_a_naive_datetime_is_refused(store: Store) -> None:
    """Guards against a naive datetime being stored as some zone's local time."""
    with pytest.raises(ValueError, match="naive"):
        await store.insert(new_record("a"), next_check_at=T0.replace(tzinfo=None))
    assert await store.get("a") is None
