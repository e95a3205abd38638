"""The use cases against the real emulator and SQLite: idempotent sessions, notifications,
refresh by inquiry, and the reconciler that catches what notifications missed."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from tests.fixtures.antom import buyer_submits
from tests.fixtures.clock import ManualClock
from vault_service.antom import AntomClient, AntomUnavailableError, VaultingNotification
from vault_service.domain import EventSource, SessionParameters, VaultingStatus
from vault_service.emulator import EmulatorServer
from vault_service.errors import ConflictError, NotFoundError
from vault_service.events import EventHub
from vault_service.service.reconciler import Reconciler
from vault_service.service.vaulting import VaultingService
from vault_service.store import SQLiteStore

NOWHERE = "http://127.0.0.1:9/antom/vaulting/notify"
CREATE = "createVaultingSession"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(
    sqlite_store: SQLiteStore, antom_client: AntomClient, hub: EventHub, clock: ManualClock
) -> VaultingService:
    return VaultingService(
        sqlite_store,
        antom_client,
        hub,
        notify_url=NOWHERE,
        first_check_after=timedelta(seconds=60),
        clock=clock,
    )


@pytest.fixture
def reconciler(
    sqlite_store: SQLiteStore, service: VaultingService, clock: ManualClock
) -> Reconciler:
    return Reconciler(
        sqlite_store,
        service,
        interval=0.01,
        min_delay=timedelta(seconds=30),
        max_delay=timedelta(minutes=15),
        expiry_grace=timedelta(minutes=5),
        inquiry_budget=2.0,
        clock=clock,
    )


async def test_concurrent_duplicates_make_one_antom_call(
    service: VaultingService, emulator: EmulatorServer
) -> None:
    """Twenty callers retrying one CreateSession at once: one Antom call, one session, and
    exactly one of them reports it as newly created."""
    results = await asyncio.gather(
        *(service.create_session("checkout", "vr-dup", SessionParameters()) for _ in range(20))
    )
    assert emulator.state.stats.calls(CREATE, "vr-dup") == 1
    assert {r.record.session.session_id for r in results} == {results[0].record.session.session_id}
    assert sum(r.created for r in results) == 1


async def test_same_id_with_other_parameters_or_owner_conflicts(service: VaultingService) -> None:
    """An id is bound to its first parameters and its owner: no silent takeover."""
    await service.create_session("checkout", "vr-bound", SessionParameters())
    with pytest.raises(ConflictError):
        await service.create_session(
            "checkout", "vr-bound", SessionParameters(redirect_url="https://m.example/x")
        )
    with pytest.raises(ConflictError):
        await service.create_session("billing", "vr-bound", SessionParameters())


async def test_a_failed_antom_call_leaves_nothing_behind(
    service: VaultingService, emulator: EmulatorServer, sqlite_store: SQLiteStore
) -> None:
    """When Antom refuses, no half-created record remains, and a retry can succeed."""
    emulator.state.faults.update({"http_5xx": -1})
    with pytest.raises(AntomUnavailableError, match="503"):
        await service.create_session(
            "checkout", "vr-retry", SessionParameters(), deadline=time.monotonic() + 0.5
        )
    assert await sqlite_store.get("vr-retry") is None
    emulator.state.faults.update({"http_5xx": 0})
    created = await service.create_session("checkout", "vr-retry", SessionParameters())
    assert created.created


async def test_other_owners_see_not_found(service: VaultingService) -> None:
    """Another caller's id answers exactly like an unknown id."""
    await service.create_session("checkout", "vr-mine", SessionParameters())
    with pytest.raises(NotFoundError):
        await service.get_result("billing", "vr-mine")
    with pytest.raises(NotFoundError):
        await service.get_result("checkout", "vr-nobody")


async def test_notification_records_result_once(
    service: VaultingService, sqlite_store: SQLiteStore
) -> None:
    """A notification and its retried duplicate: one SUCCEEDED record, one event."""
    await service.create_session("checkout", "vr-note", SessionParameters())
    body = {
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
        "vaultingRequestId": "vr-note",
        "paymentMethodDetail": {
            "paymentMethodType": "CARD",
            "card": {"cardToken": "ALIPAYtok", "brand": "VISA", "lastFour": "1111"},
        },
    }
    notification = VaultingNotification.model_validate(body)
    for _ in range(2):
        await service.record_notification(notification, b"{}")
    record = await service.get_result("checkout", "vr-note")
    assert record.status is VaultingStatus.SUCCEEDED
    assert record.card is not None
    assert record.card.card_token.reveal() == "ALIPAYtok"
    events = await sqlite_store.events_after(0, limit=10)
    assert [e.source for e in events] == [EventSource.NOTIFICATION]


async def test_refresh_learns_the_result_by_inquiry(
    service: VaultingService, emulator: EmulatorServer, sqlite_store: SQLiteStore
) -> None:
    """With notifications lost, GetResult(refresh) asks Antom and records an INQUIRY event."""
    emulator.state.faults.update({"drop_notifications": -1})
    created = await service.create_session("checkout", "vr-refresh", SessionParameters())
    await buyer_submits(emulator, created.record.session.session_data, "5555555555554444")
    record = await service.get_result("checkout", "vr-refresh", refresh=True)
    assert record.status is VaultingStatus.SUCCEEDED
    assert record.card is not None
    assert record.card.brand == "MASTERCARD"
    events = await sqlite_store.events_after(0, limit=10)
    assert [(e.source, e.record.status) for e in events] == [
        (EventSource.INQUIRY, VaultingStatus.SUCCEEDED)
    ]


async def test_reconciler_finds_results_whose_notification_was_lost(
    service: VaultingService,
    reconciler: Reconciler,
    emulator: EmulatorServer,
    clock: ManualClock,
) -> None:
    """Nothing is due before the first-check delay; after it the inquiry finds the result."""
    emulator.state.faults.update({"drop_notifications": -1})
    created = await service.create_session("checkout", "vr-lost", SessionParameters())
    await buyer_submits(emulator, created.record.session.session_data, "4000000000000002")
    assert await reconciler.run_once() == 0
    clock.advance(seconds=61)
    assert await reconciler.run_once() == 1
    record = await service.get_result("checkout", "vr-lost")
    assert record.status is VaultingStatus.FAILED
    assert record.antom_result is not None
    assert record.antom_result.result_code == "DO_NOT_HONOR"
    clock.advance(hours=1)
    assert await reconciler.run_once() == 0, "a final record is never polled again"


async def test_reconciler_backs_off_then_expires_abandoned_sessions(
    service: VaultingService,
    reconciler: Reconciler,
    sqlite_store: SQLiteStore,
    emulator: EmulatorServer,
    clock: ManualClock,
) -> None:
    """A session nobody completes is polled with growing delays, and marked EXPIRED (one
    EXPIRY event) once its expiry time plus the grace period has passed."""
    created = await service.create_session("checkout", "vr-idle", SessionParameters())
    clock.advance(seconds=61)
    assert await reconciler.run_once() == 1
    assert await reconciler.run_once() == 0, "rescheduled, not due again at once"
    calls = emulator.state.stats.calls("inquireVaulting", "vr-idle")
    clock.now = created.record.session.expires_at + timedelta(minutes=6)
    assert await reconciler.run_once() == 1
    assert emulator.state.stats.calls("inquireVaulting", "vr-idle") == calls + 1
    record = await service.get_result("checkout", "vr-idle")
    assert record.status is VaultingStatus.EXPIRED
    events = await sqlite_store.events_after(0, limit=10)
    assert events[-1].source is EventSource.EXPIRY


async def test_reconciler_survives_antom_outage(
    service: VaultingService,
    reconciler: Reconciler,
    emulator: EmulatorServer,
    clock: ManualClock,
) -> None:
    """Antom down during a pass: the record stays open and is looked at again later."""
    await service.create_session("checkout", "vr-outage", SessionParameters())
    emulator.state.faults.update({"http_5xx": -1})
    clock.advance(seconds=61)
    assert await reconciler.run_once() == 1
    record = await service.get_result("checkout", "vr-outage")
    assert record.status is VaultingStatus.SESSION_CREATED
    emulator.state.faults.update({"http_5xx": 0})
    clock.advance(minutes=20)
    assert await reconciler.run_once() == 1


async def test_reconciler_task_stops_on_cancel(reconciler: Reconciler) -> None:
    """The background loop ends promptly when the server shuts down."""
    task = asyncio.create_task(reconciler.run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_sessions_do_not_expire_while_antom_is_unreachable(
    service: VaultingService,
    reconciler: Reconciler,
    emulator: EmulatorServer,
    clock: ManualClock,
) -> None:
    """Regression: the reconciler marked a session EXPIRED when the inquiry failed, burying a
    card the buyer may have saved (its notification lost). It now waits for Antom's answer."""
    created = await service.create_session("checkout", "vr-dark", SessionParameters())
    emulator.state.faults.update({"http_5xx": -1})
    clock.now = created.record.session.expires_at + timedelta(minutes=6)
    assert await reconciler.run_once() == 1
    assert (await service.get_result("checkout", "vr-dark")).status is (
        VaultingStatus.SESSION_CREATED
    )
    emulator.state.faults.update({"http_5xx": 0})
    clock.advance(hours=1)
    assert await reconciler.run_once() == 1
    assert (await service.get_result("checkout", "vr-dark")).status is VaultingStatus.EXPIRED


async def test_one_failing_record_does_not_stop_the_others(
    service: VaultingService,
    reconciler: Reconciler,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: an unexpected error on one record ended the whole pass and left that record
    due forever; now the others are reconciled and the failing one is retried later."""
    for rid in ("vr-bad", "vr-good"):
        await service.create_session("checkout", rid, SessionParameters())
    inquire = service.inquire
    asked: list[str] = []

    async def flaky(vaulting_request_id: str, *, budget: float | None = None) -> bool:
        asked.append(vaulting_request_id)
        if vaulting_request_id == "vr-bad":
            raise RuntimeError("boom")
        return await inquire(vaulting_request_id, budget=budget)

    monkeypatch.setattr(service, "inquire", flaky)
    clock.advance(seconds=61)
    assert await reconciler.run_once() == 2
    good = await service.get_result("checkout", "vr-good")
    assert good.status is VaultingStatus.PROCESSING
    assert await reconciler.run_once() == 0, "the failing record waits before its retry"
    clock.advance(seconds=31)
    await reconciler.run_once()
    assert asked.count("vr-bad") == 2
