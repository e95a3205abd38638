"""A step in front of a gRPC method, whatever kind of method it is.

Both our interceptors (authentication, request decoding) run something before a method's own
behaviour. grpc.aio serves an async generator by sending what it yields and a coroutine by what
it writes or returns, so a wrapper must keep the kind of what it wraps: a wrapper of the wrong
kind would break the standard services (health's Watch writes, reflection yields).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from vault_service.grpc_api.errors import Context

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in grpc's stubs
Step = Callable[[Any, Context], Awaitable[Any]]
"""Takes the request (or request iterator) as grpc hands it over and returns what the method
gets; it ends the call with ``context.abort`` to refuse it."""

_KEEP: Any = object()


def preceded(handler: Handler, step: Step, *, request_deserializer: Any = _KEEP) -> Handler:
    """``handler`` with ``step`` run before its behaviour; ``request_deserializer`` replaces
    grpc's parsing of the request when given (``None``: the step gets the raw bytes)."""
    deserializer = (
        handler.request_deserializer if request_deserializer is _KEEP else request_deserializer
    )
    serializers: dict[str, Any] = {
        "request_deserializer": deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _preceded(handler.unary_unary, step), **serializers
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _preceded(handler.unary_stream, step), **serializers
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _preceded(handler.stream_stream, step), **serializers
        )
    return grpc.stream_unary_rpc_method_handler(
        _preceded(handler.stream_unary, step), **serializers
    )


def _preceded(behavior: Callable[..., Any] | None, step: Step) -> Callable[[Any, Context], Any]:
    if behavior is None:
        raise TypeError("a method handler without a behaviour")
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            request = await step(request, context)
            # Closed as soon as this one is, so the method's own clean-up runs at once.
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response

        return generator

    async def coroutine(request: Any, context: Context) -> Any:
        return await behavior(await step(request, context), context)

    return coroutine
