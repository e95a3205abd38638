"""Request bytes that are not the method's message, sent on a raw channel to the real server."""

from __future__ import annotations

import logging
from typing import Final

import grpc
import pytest
from grpc import StatusCode
from grpc_health.v1 import health_pb2

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.grpc_api.decoding import MALFORMED_MESSAGE

NOT_UTF8: Final = b"\x0a\x02\xff\xfe"  # field 1 (a string in every request here), bad UTF-8
CORRUPT: Final = b"\xff\xff\xff"


@pytest.mark.parametrize("raw", [NOT_UTF8, CORRUPT], ids=["not-utf8", "corrupt"])
@pytest.mark.parametrize(
    ("method", "streaming"),
    [
        ("/vault.v1.VaultService/CreateSession", False),
        ("/vault.v1.VaultService/GetResult", False),
        ("/vault.v1.VaultService/StreamResults", True),
        ("/grpc.health.v1.Health/Check", False),
        ("/grpc.health.v1.Health/Watch", True),
    ],
)
async def test_unparsable_request_is_invalid_argument_before_any_method_runs(
    channel: grpc.aio.Channel,
    caplog: pytest.LogCaptureFixture,
    method: str,
    streaming: bool,
    raw: bytes,
) -> None:
    """Guards request parsing: grpc.aio parsed requests itself and answered bytes that are not
    the message with UNKNOWN, quoting the parser's error, and logged an ERROR traceback for
    each (a caller could flood our logs). Now it is INVALID_ARGUMENT with a fixed message and
    nothing is logged as an error (test_fuzz checks that no servicer method ran)."""
    if streaming:
        call = channel.unary_stream(method)(raw, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    else:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary(method)(raw, timeout=5)
    assert refused.value.code() == StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == MALFORMED_MESSAGE
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_parsed_requests_still_reach_both_kinds_of_streaming_method(
    channel: grpc.aio.Channel,
) -> None:
    """Parsing moved into an interceptor that rewrites each handler; a server-streaming method
    written as an async generator (StreamResults) and one written as a coroutine that writes to
    its context (health's Watch) must both still run and stream."""
    stream = channel.unary_stream(
        "/vault.v1.VaultService/StreamResults",
        request_serializer=pb.StreamResultsRequest.SerializeToString,
        response_deserializer=pb.StreamResultsResponse.FromString,
    )(pb.StreamResultsRequest(), timeout=5)
    first = await stream.read()
    stream.cancel()
    assert isinstance(first, pb.StreamResultsResponse)
    assert first.WhichOneof("kind") == "checkpoint"

    watch = channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )(health_pb2.HealthCheckRequest(service=""), timeout=5)
    status = await watch.read()
    watch.cancel()
    assert isinstance(status, health_pb2.HealthCheckResponse)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
