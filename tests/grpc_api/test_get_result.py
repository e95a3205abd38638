"""GetResult over a real gRPC channel: stored results, refresh by inquiry, visibility."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import StatusCode

from tests.fixtures.antom import buyer_submits
from tests.grpc_api.support import (
    CALLER_METADATA_KEY,
    INQUIRE,
    bad_request,
    notify,
    retry_info,
)
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import EventSource
from vault_service.emulator import EmulatorServer
from vault_service.service import VaultingService
from vault_service.store import SQLiteStore

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub


async def create(stub: VaultServiceAsyncStub, vaulting_request_id: str) -> pb.CreateSessionResponse:
    return await stub.CreateSession(
        pb.CreateSessionRequest(vaulting_request_id=vaulting_request_id, labels={"order": "o-7"})
    )


async def test_unknown_and_other_callers_ids_are_not_found(stub: VaultServiceAsyncStub) -> None:
    """An unknown id and another caller's id give the same NOT_FOUND, so ids leak nothing."""
    await create(stub, "vr-mine")
    for vaulting_request_id, caller in (("vr-nobody", "anonymous"), ("vr-mine", "billing")):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetResult(
                pb.GetResultRequest(vaulting_request_id=vaulting_request_id),
                metadata=((CALLER_METADATA_KEY, caller),),
            )
        assert missing.value.code() is StatusCode.NOT_FOUND


async def test_invalid_id_is_invalid_argument(stub: VaultServiceAsyncStub) -> None:
    """GetResult checks its id like CreateSession does."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetResult(pb.GetResultRequest(vaulting_request_id=""))
    assert refused.value.code() is StatusCode.INVALID_ARGUMENT
    assert set(bad_request(refused.value)) == {"vaulting_request_id"}


async def test_a_new_session_reads_as_session_created(stub: VaultServiceAsyncStub) -> None:
    """Before any news the result is SESSION_CREATED, with session and labels, no final time."""
    created = await create(stub, "vr-new")
    result = (await stub.GetResult(pb.GetResultRequest(vaulting_request_id="vr-new"))).result
    assert result.status == pb.VAULTING_STATUS_SESSION_CREATED
    assert result.vaulting_session_id == created.vaulting_session_id
    assert result.session_expire_time == created.expire_time
    assert dict(result.labels) == {"order": "o-7"}
    assert not result.HasField("card")
    assert not result.HasField("final_time")
    assert result.create_time == result.update_time


async def test_result_after_a_notification_shows_the_saved_card(
    stub: VaultServiceAsyncStub, vaulting: VaultingService
) -> None:
    """After Antom's notification the result is SUCCEEDED with the card, its billing address
    and cardholder name, Antom's result and a final time."""
    await create(stub, "vr-notified")
    await notify(vaulting, "vr-notified")
    result = (await stub.GetResult(pb.GetResultRequest(vaulting_request_id="vr-notified"))).result
    assert result.status == pb.VAULTING_STATUS_SUCCEEDED
    card = result.card
    assert card.card_token == "ALIPAYtok-vr-notified"
    assert (card.brand, card.last_four, card.bin) == ("VISA", "1111", "411111")
    assert card.billing_address.city == "London"
    assert card.cardholder_name.last_name == "Lovelace"
    assert result.antom_result.result_code == "SUCCESS"
    assert result.HasField("final_time")
    assert dict(result.labels) == {"order": "o-7"}


async def test_refresh_asks_antom_and_records_an_inquiry_event(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer, sqlite_store: SQLiteStore
) -> None:
    """refresh=true on an open request calls inquireVaulting, returns what Antom knows and
    records it as an INQUIRY event; without refresh Antom is not asked."""
    created = await create(stub, "vr-refresh")
    await buyer_submits(emulator, created.session_data, "5555555555554444")
    plain = await stub.GetResult(pb.GetResultRequest(vaulting_request_id="vr-refresh"))
    assert plain.result.status == pb.VAULTING_STATUS_SESSION_CREATED
    assert emulator.state.stats.calls(INQUIRE, "vr-refresh") == 0
    refreshed = await stub.GetResult(
        pb.GetResultRequest(vaulting_request_id="vr-refresh", refresh=True), timeout=5
    )
    assert refreshed.result.status == pb.VAULTING_STATUS_SUCCEEDED
    assert refreshed.result.card.brand == "MASTERCARD"
    assert emulator.state.stats.calls(INQUIRE, "vr-refresh") == 1
    events = await sqlite_store.events_after(0, limit=10)
    assert [e.source for e in events] == [EventSource.INQUIRY]


async def test_refresh_with_antom_down_is_unavailable_but_the_stored_result_stays_readable(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer
) -> None:
    """If Antom cannot be reached a refresh fails with UNAVAILABLE + RetryInfo, while a plain
    read still answers from the store. (A 5 s deadline: with 0.5 s, a loaded machine could
    reach it before the server answered, and the caller saw DEADLINE_EXCEEDED.)"""
    await create(stub, "vr-cut-off")
    emulator.state.faults.update({"http_5xx": -1})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetResult(
            pb.GetResultRequest(vaulting_request_id="vr-cut-off", refresh=True), timeout=5
        )
    assert refused.value.code() is StatusCode.UNAVAILABLE
    assert retry_info(refused.value) is not None
    plain = await stub.GetResult(pb.GetResultRequest(vaulting_request_id="vr-cut-off"))
    assert plain.result.status == pb.VAULTING_STATUS_SESSION_CREATED
