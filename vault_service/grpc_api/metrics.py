"""The gRPC side of the metrics: every call counted when it starts and when it ends, by method
and status code, with its duration.

An interceptor of our own: the common gRPC metrics packages do not support ``grpc.aio``. Only
methods the server serves are labelled (grpc answers any other name UNIMPLEMENTED before an
interceptor's handler runs), so the method label is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter

from vault_service.grpc_api.errors import Context
from vault_service.grpc_api.handlers import Handler, rebuilt
from vault_service.metrics import Metrics


def _kind(handler: Handler) -> str:
    if handler.unary_unary is not None:
        return "unary"
    if handler.unary_stream is not None:
        return "server_stream"
    if handler.stream_stream is not None:
        return "bidi_stream"
    return "client_stream"


def _code(context: Context, error: BaseException | None) -> str:
    """The status the call ended with: what the method set or aborted with, CANCELLED for a
    cancelled call, UNKNOWN (grpc's answer) for an exception it let escape."""
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code.name
    if error is None:
        return grpc.StatusCode.OK.name
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call of the server it is installed on into ``metrics``."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # Built once per method, not per call, with its metrics' label lookups: the handlers
        # behind it are themselves built once per method (authentication, decoding, grpc's).
        self._observing: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        observing = self._observing.get(method)
        if observing is None:
            kind = _kind(handler)
            observing = self._observing[method] = rebuilt(
                handler, lambda behavior: self._observed(behavior, method, kind)
            )
        return observing

    def _observed(
        self, behavior: Callable[..., Any] | None, method: str, kind: str
    ) -> Callable[[Any, Context], Any]:
        if behavior is None:
            raise TypeError("a method handler without a behaviour")
        metrics = self._metrics
        started = metrics.rpcs_started.labels(method, kind)
        seconds = metrics.rpc_seconds.labels(method, kind)
        handled_by_code: dict[str, Counter] = {}  # at most one per status code

        def handled(context: Context, error: BaseException | None, began: float) -> None:
            seconds.observe(time.perf_counter() - began)
            code = _code(context, error)
            counter = handled_by_code.get(code)
            if counter is None:
                counter = handled_by_code[code] = metrics.rpcs_handled.labels(method, kind, code)
            counter.inc()

        if inspect.isasyncgenfunction(behavior):

            async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
                started.inc()
                began = time.perf_counter()
                error: BaseException | None = None
                try:
                    async with contextlib.aclosing(behavior(request, context)) as responses:
                        async for response in responses:
                            yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    handled(context, error, began)

            return generator

        async def coroutine(request: Any, context: Context) -> Any:
            started.inc()
            began = time.perf_counter()
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                handled(context, error, began)

        return coroutine
