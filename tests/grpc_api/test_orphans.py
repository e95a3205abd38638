"""Orphan notifications adopted when their record appears, on each backend: at CreateSession,
and by the reconciler's pass for a record that appeared otherwise (a restore, a late replica)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest

from tests.grpc_api.support import notification
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import Session, SessionParameters, VaultingRecord, VaultingStatus
from vault_service.service.reconciler import Reconciler
from vault_service.service.vaulting import VaultingService
from vault_service.store import Store

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
    now = datetime.now(UTC)
    record = VaultingRecord(
        vaulting_request_id="vr-restored",
        owner="anonymous",
        parameters=SessionParameters(),
        session=Session("s", "d", now + timedelta(hours=1)),
        created_at=now,
        updated_at=now,
    )
    await vault_store.insert(record, next_check_at=now + timedelta(hours=1))
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
