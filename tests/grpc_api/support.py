"""Helpers shared by the gRPC tests: decoding rich statuses and feeding the event log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, TypeVar, cast

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import VaultingNotification
from vault_service.grpc_api.server import Health, build_grpc_server
from vault_service.grpc_api.servicer import VaultServicer
from vault_service.service import VaultingService

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

NOWHERE = "http://127.0.0.1:9/antom/vaulting/notify"
CREATE = "createVaultingSession"
INQUIRE = "inquireVaulting"
CALLER_METADATA_KEY = "x-test-caller"

DetailT = TypeVar("DetailT", bound=Message)


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The ``google.rpc.Status`` of a failed call (``from_call`` also checks that its code and
    message agree with the call's own). An AioRpcError has the synchronous accessors that
    ``from_call`` reads, though it is not typed as a ``grpc.Call``."""
    status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, error))
    assert status is not None, "the status carries no google.rpc details"
    return status


def unpacked(error: grpc.aio.AioRpcError, detail: DetailT) -> DetailT | None:
    """The status detail of ``detail``'s type, unpacked into it, or ``None`` if absent."""
    for packed in rich_status(error).details:
        if packed.Unpack(detail):
            return detail
    return None


def bad_request(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations of a failed call, as field -> description."""
    violations = unpacked(error, error_details_pb2.BadRequest())
    assert violations is not None, "the status carries no BadRequest"
    return {v.field: v.description for v in violations.field_violations}


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    return unpacked(error, error_details_pb2.ErrorInfo())


def retry_info(error: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    return unpacked(error, error_details_pb2.RetryInfo())


def notification(vaulting_request_id: str, *, succeeded: bool = True) -> VaultingNotification:
    """A verified notifyVaulting body as the webhook would hand it to the service."""
    card: dict[str, object] = {
        "brand": "VISA",
        "maskedCardNo": "************1111",
        "bin": "411111",
        "lastFour": "1111",
        "expiryMonth": "12",
        "expiryYear": "39",
        "funding": "CREDIT",
        "issuingCountry": "US",
        "issuerName": "Test Bank",
        "cardholderName": {"firstName": "Ada", "lastName": "Lovelace"},
        "billingAddress": {"region": "GB", "city": "London", "zipCode": "W1"},
    }
    if succeeded:
        card |= {"cardToken": "ALIPAYtok-" + vaulting_request_id, "fingerprint": "ab" * 32}
        result = {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"}
    else:
        result = {"resultCode": "DO_NOT_HONOR", "resultStatus": "F", "resultMessage": "declined"}
    return VaultingNotification.model_validate(
        {
            "result": result,
            "vaultingRequestId": vaulting_request_id,
            "paymentMethodDetail": {"paymentMethodType": "CARD", "card": card},
        }
    )


async def notify(vaulting: VaultingService, vaulting_request_id: str, **kwargs: bool) -> None:
    await vaulting.record_notification(notification(vaulting_request_id, **kwargs), b"{}")


@contextlib.asynccontextmanager
async def serving(servicer: VaultServicer) -> AsyncIterator[VaultServiceAsyncStub]:
    """A second server for tests that need a differently configured servicer."""
    server, port = await build_grpc_server(servicer, listen="127.0.0.1:0", health=Health())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.VaultServiceStub(channel)
    finally:
        await server.stop(None)


async def eventually(condition: Callable[[], bool], *, within: float) -> None:
    """Wait until ``condition()`` holds, failing the test if it does not within ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true in time"
        await asyncio.sleep(0.01)
