"""The metrics interceptor's per-method handler cache, on a real grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from vault_service.grpc_api import MetricsInterceptor
from vault_service.metrics import Metrics

METHOD = "/bench.Echo/Call"


async def _call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == b"missing":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return request


@pytest.fixture
async def served() -> AsyncIterator[tuple[Metrics, MetricsInterceptor, grpc.aio.Channel]]:
    metrics = Metrics()
    interceptor = MetricsInterceptor(metrics)
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(_call)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield metrics, interceptor, channel
    finally:
        await server.stop(None)


def _sample(metrics: Metrics, name: str, **labels: str) -> Any:
    return metrics.registry.get_sample_value(name, {"grpc_method": METHOD, **labels})


async def test_each_call_is_counted_by_its_code_through_one_handler_per_method(
    served: tuple[Metrics, MetricsInterceptor, grpc.aio.Channel],
) -> None:
    """Guards the cache of observed handlers (built once per method, with their label lookups,
    instead of per call): every call is still counted, each under its own status code."""
    metrics, interceptor, channel = served
    call = channel.unary_unary(METHOD)
    for _ in range(3):
        assert await call(b"ok") == b"ok"
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await call(b"missing")
    labels = {"grpc_type": "unary"}
    assert _sample(metrics, "vault_grpc_server_started_total", **labels) == 5
    assert _sample(metrics, "vault_grpc_server_handled_total", grpc_code="OK", **labels) == 3
    handled_not_found = _sample(
        metrics, "vault_grpc_server_handled_total", grpc_code="NOT_FOUND", **labels
    )
    assert handled_not_found == 2
    assert _sample(metrics, "vault_grpc_server_handling_seconds_count", **labels) == 5
    assert list(interceptor._observing) == [METHOD]
