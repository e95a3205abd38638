"""Orphan notifications adopted when their record appears, on each backend: at CreateSession,
and by the reconciler's pass for a record that appeared otherwise (a restore, a late replica)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest

from tests.fixtures.records import new_record
from tests.grpc_api.support import notification
from tests.store.backends import Backend
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import VaultingStatus
from vault_service.orphan_commands import audit_line
from vault_service.service.reconciler import Reconciler
from vault_service.service.vaulting import VaultingService
from vault_service.store import OrphanNotification, Store, UnreadableOrphan

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub


@pytest.fixture
def vault_store(each_backend_store: Store) -> Store:
    """The server's store: every test here runs on each backend."""
    return each_backend_store


async def notify_raw(vaulting: VaultingService, vaulting_request_id: str) -> None:
    """A verified notification as the webhook hands it over: the model and its exact body."""
    parsed = notification(vaulting_request_id)
    await vaulting.record_notification(parsed, parsed.to_json_bytes())


async def insert_record(store: Store, vaulting_request_id: str) -> None:
    """A record that appears without CreateSession (a restore, a late replica's write)."""
    now = datetime.now(UTC)
    record = new_record(vaulting_request_id, created_at=now, session_lifetime=timedelta(hours=1))
    await store.insert(record, next_check_at=now + timedelta(hours=1))


async def next_event(
    stream: grpc.aio.UnaryStreamCall[pb.StreamResultsRequest, pb.StreamResultsResponse],
) -> pb.ResultEvent:
    while True:
        message = await asyncio.wait_for(stream.read(), timeout=10)
        assert message is not grpc.aio.EOF
        if message.HasField("event"):
            return message.event


async def test_a_notification_before_its_session_is_applied_when_the_session_is_created(
    stub: VaultServiceAsyncStub, vaulting: VaultingService, vault_store: Store
) -> None:
    """Issue 14: a notification for an id the service did not know yet was kept as an orphan
    and never looked at again. Now CreateSession of that id ends with the record in the
    notified state and one event on the stream, and neither the reconciler nor Antom's retry
    of the notification streams it a second time."""
    stream = stub.StreamResults(pb.StreamResultsRequest())
    opened = await stream.read()
    assert opened is not grpc.aio.EOF
    await notify_raw(vaulting, "vr-early")
    assert [o.vaulting_request_id for o in await vault_store.list_orphans(limit=10)] == ["vr-early"]

    await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="vr-early"))
    result = (await stub.GetResult(pb.GetResultRequest(vaulting_request_id="vr-early"))).result
    assert result.status == pb.VAULTING_STATUS_SUCCEEDED
    assert result.card.card_token == "ALIPAYtok-vr-early"
    event = await next_event(stream)
    assert (event.result.vaulting_request_id, event.source) == (
        "vr-early",
        pb.EVENT_SOURCE_NOTIFICATION,
    )
    assert await vault_store.list_orphans(limit=10) == []

    assert await vaulting.adopt_orphans() == 0  # the reconciler's pass finds nothing left
    await notify_raw(vaulting, "vr-early")  # Antom retries: a duplicate, no event
    await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="vr-marker"))
    await notify_raw(vaulting, "vr-marker")
    marker = await next_event(stream)
    assert marker.result.vaulting_request_id == "vr-marker"  # nothing came in between
    stream.cancel()


async def test_the_reconciler_adopts_an_orphan_whose_record_appeared_otherwise(
    vaulting: VaultingService, vault_store: Store
) -> None:
    """A record that appears without CreateSession (restored from a backup, written by a
    replica that lagged) gets its orphan notification on the next reconciler pass."""
    await notify_raw(vaulting, "vr-restored")
    await insert_record(vault_store, "vr-restored")
    reconciler = Reconciler(
        vault_store,
        vaulting,
        interval=1.0,
        min_delay=timedelta(seconds=1),
        max_delay=timedelta(seconds=2),
        expiry_grace=timedelta(0),
        inquiry_budget=1.0,
    )
    assert await reconciler.run_once() == 0  # nothing due; the orphan is adopted all the same
    stored = await vault_store.get("vr-restored")
    assert stored is not None
    assert stored.status is VaultingStatus.SUCCEEDED
    assert await vault_store.list_orphans(limit=10) == []


async def test_one_bad_orphan_does_not_stop_the_adoption_of_the_others(
    vaulting: VaultingService,
    vault_store: Store,
    each_backend: Backend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Broke: reading the adoptable orphans raised for the whole batch when one body did not
    open (its data key missing, an edited row), and adoption stopped at the first orphan whose
    apply raised; the reconciler starts with the oldest on every pass, so every later orphan
    stayed unapplied until pruned. Now an unreadable body is listed as such (and so by
    ``vault-service orphans``), each failure is logged once by its error's class, never the
    body, and the orphans after it are adopted."""
    await notify_raw(vaulting, "vr-unreadable")
    await vault_store.record_orphan("vr-garbled", b"not a notification", datetime.now(UTC))
    await notify_raw(vaulting, "vr-good")
    plaintext = "X'7b7d'" if each_backend.name == "sqlite" else "'\\x7b7d'::bytea"  # b"{}"
    await each_backend.execute(
        f"UPDATE orphan_notifications SET body = {plaintext} "
        "WHERE vaulting_request_id = 'vr-unreadable'"
    )
    for rid in ("vr-unreadable", "vr-garbled", "vr-good"):
        await insert_record(vault_store, rid)

    with caplog.at_level(logging.WARNING):
        assert await vaulting.adopt_orphans() == 1
    good = await vault_store.get("vr-good")
    assert good is not None
    assert good.status is VaultingStatus.SUCCEEDED
    unreadable, garbled = await vault_store.list_orphans(limit=10)
    assert isinstance(unreadable, UnreadableOrphan)
    assert (unreadable.vaulting_request_id, unreadable.error) == (
        "vr-unreadable",
        "PlaintextCardDataError",
    )
    assert isinstance(garbled, OrphanNotification)
    assert garbled.vaulting_request_id == "vr-garbled"
    failures = {
        (r.vaulting_request_id, r.error)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.levelno == logging.WARNING and hasattr(r, "error")
    }
    assert failures == {
        ("vr-unreadable", "PlaintextCardDataError"),
        ("vr-garbled", "JSONDecodeError"),
    }
    assert "not a notification" not in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    assert audit_line(unreadable) == {
        "vaulting_request_id": "vr-unreadable",
        "received_time": unreadable.received_at.isoformat(),
        "unreadable": "PlaintextCardDataError",
    }


async def test_a_record_inserted_while_its_orphan_is_kept_gets_the_notification_at_once(
    vaulting: VaultingService, vault_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: CreateSession looks for orphans in its insert's own snapshot, so a
    notification that missed the record and kept its orphan a moment after the insert was
    only applied at the reconciler's next pass. The notification's side now adopts it."""
    keep_orphan = vault_store.record_orphan

    async def insert_first(vaulting_request_id: str, raw: bytes, at: datetime) -> None:
        await insert_record(vault_store, vaulting_request_id)  # CreateSession commits meanwhile
        await keep_orphan(vaulting_request_id, raw, at)

    monkeypatch.setattr(vault_store, "record_orphan", insert_first)
    await notify_raw(vaulting, "vr-crossed")
    record = await vault_store.get("vr-crossed")
    assert record is not None
    assert record.status is VaultingStatus.SUCCEEDED
    assert await vault_store.list_orphans(limit=10) == []
