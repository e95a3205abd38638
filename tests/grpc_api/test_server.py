"""The server around the servicer: reflection, health, draining, limits and error hygiene."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc import StatusCode
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from tests.grpc_api.conftest import RunningServer
from tests.grpc_api.support import error_info, eventually, rich_status, serving
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.errors import VaultError
from vault_service.grpc_api.server import (
    MAX_RECEIVE_MESSAGE_BYTES,
    VAULT_SERVICE_NAME,
    Health,
    build_grpc_server,
    stop_grpc_server,
)
from vault_service.grpc_api.servicer import VaultServicer
from vault_service.service import ResultStreams, VaultingService
from vault_service.service.streaming import SHUTTING_DOWN_REASON

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub


async def reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    """One exchange with the reflection service, as grpcurl does it."""
    call = channel.stream_stream(
        f"/{reflection.SERVICE_NAME}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )()
    await call.write(request)
    await call.done_writing()
    response = await call.read()
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    return response


async def test_reflection_lists_and_describes_the_service(channel: grpc.aio.Channel) -> None:
    """grpcurl-style tools can find VaultService and health, and fetch VaultService's
    descriptor with its four methods, without the .proto files."""
    listed = await reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in listed.list_services_response.service}
    assert {VAULT_SERVICE_NAME, "grpc.health.v1.Health"} <= names
    described = await reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=VAULT_SERVICE_NAME)
    )
    protos = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    [service] = [s for p in protos if p.package == "vault.v1" for s in p.service]
    assert [m.name for m in service.method] == [
        "CreateSession",
        "GetResult",
        "StreamResults",
        "ListResults",
    ]


@pytest.mark.parametrize(
    ("symbol", "found"),
    [
        (f"{VAULT_SERVICE_NAME}.StreamResults", True),
        ("vault.v1.CreateSessionRequest", True),
        ("vault.v1.Env.time_zone_offset", True),
        (f"{VAULT_SERVICE_NAME}.NoSuchMethod", False),
        ("vault.v1.NoSuchService.Method", False),
    ],
)
async def test_reflection_resolves_methods_and_other_symbols(
    channel: grpc.aio.Channel, symbol: str, found: bool
) -> None:
    """``grpcurl describe <service>.<method>`` needs the file of a method symbol, which
    protobuf's upb pool does not resolve on its own; unknown symbols stay not found."""
    answer = await reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    )
    kind = answer.WhichOneof("message_response")
    assert kind == ("file_descriptor_response" if found else "error_response")
    if found:
        first = descriptor_pb2.FileDescriptorProto.FromString(
            answer.file_descriptor_response.file_descriptor_proto[0]
        )
        assert first.name == "vault/v1/vault_service.proto"


async def check(channel: grpc.aio.Channel, service: str) -> int:
    """A standard health check, as Kubernetes' gRPC probe sends it."""
    answer = await channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )(health_pb2.HealthCheckRequest(service=service))
    return answer.status


async def test_health_is_serving_then_not_serving_once_draining(
    channel: grpc.aio.Channel, health: Health
) -> None:
    """Probes see SERVING for the server and for VaultService; once draining starts they see
    NOT_SERVING, and it stays so (a late set_serving(True) cannot undo a drain)."""
    serving_status = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert await check(channel, "") == serving_status
    assert await check(channel, VAULT_SERVICE_NAME) == serving_status
    await health.set_serving(False)
    assert await check(channel, VAULT_SERVICE_NAME) == not_serving
    await health.set_serving(True)
    await health.drain()
    await health.set_serving(True)
    assert await check(channel, "") == not_serving
    assert await check(channel, VAULT_SERVICE_NAME) == not_serving


async def test_stopping_ends_open_streams_at_once_with_a_resumable_unavailable(
    grpc_server: RunningServer,
    stub: VaultServiceAsyncStub,
    health: Health,
    servicer: VaultServicer,
) -> None:
    """Streams never finish by themselves: the server used to hold them for its whole grace
    and then cancel them. Now a drain ends them at once with UNAVAILABLE (the contract's
    "reconnect and resume" signal) carrying SHUTTING_DOWN and a resume token, their server
    side finishes, and the stop returns without waiting out the grace."""
    stream = stub.StreamResults(pb.StreamResultsRequest())
    await stream.read()
    async with asyncio.timeout(5):  # far below the grace: the stop does not wait it out
        await stop_grpc_server(grpc_server.server, health, servicer, grace=30)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await stream.read()
    assert ended.value.code() is StatusCode.UNAVAILABLE
    info = error_info(ended.value)
    assert info is not None
    assert info.reason == SHUTTING_DOWN_REASON
    assert info.metadata["resume_token"]
    await eventually(lambda: servicer.active_streams == 0, within=2)


async def test_max_connection_age_ends_streams_for_rebalancing(
    vaulting: VaultingService, streams: ResultStreams
) -> None:
    """With a maximum connection age, a long stream ends with UNAVAILABLE after age + grace,
    so clients reconnect (possibly to another replica); a new stream opens fine."""
    server, port = await build_grpc_server(
        VaultServicer(vaulting, streams),
        listen="127.0.0.1:0",
        health=Health(),
        max_connection_age=0.2,
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.VaultServiceStub(channel)
            stream = stub.StreamResults(pb.StreamResultsRequest())
            await stream.read()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await stream.read()
            assert ended.value.code() is StatusCode.UNAVAILABLE
            again = stub.StreamResults(pb.StreamResultsRequest())
            assert (await again.read()) is not grpc.aio.EOF
            again.cancel()
    finally:
        await server.stop(None)


async def test_oversized_requests_are_refused(stub: VaultServiceAsyncStub) -> None:
    """A request above the 1 MiB receive limit is refused before it is parsed."""
    huge = pb.CreateSessionRequest(
        vaulting_request_id="vr-huge", labels={"blob": "x" * (MAX_RECEIVE_MESSAGE_BYTES + 1)}
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateSession(huge)
    assert refused.value.code() is StatusCode.RESOURCE_EXHAUSTED


class StoreExplodedError(VaultError):
    """A VaultError the transport has no specific status for."""


@pytest.mark.parametrize(
    "error",
    [RuntimeError("card_token=ALIPAYsecret"), StoreExplodedError("card_token=ALIPAYsecret")],
)
async def test_unexpected_errors_are_internal_without_their_text(
    vaulting: VaultingService,
    streams: ResultStreams,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    """An error with no status of its own is INTERNAL with a generic message: its text (which
    might hold anything) goes only to the log, with the traceback."""

    async def explode(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(vaulting, "get_result", explode)
    async with serving(VaultServicer(vaulting, streams)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.GetResult(pb.GetResultRequest(vaulting_request_id="vr-boom"))
    assert failed.value.code() is StatusCode.INTERNAL
    assert failed.value.details() == "internal error"
    assert "ALIPAYsecret" not in str(rich_status(failed.value))
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.exc_info is not None
    assert logged.exc_info[1] is error
    assert getattr(logged, "grpc_method", None) == "GetResult"
