"""A step in front of a gRPC method, whatever kind of method it is.

Our interceptors run something before a method's own behaviour (authentication, request
decoding) or around it (metrics). grpc.aio serves an async generator by sending what it yields
and a coroutine by what it writes or returns, so a wrapper must keep the kind of what it wraps:
a wrapper of the wrong kind would break the standard services (health's Watch writes,
reflection yields).
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
    return rebuilt(
        handler,
        lambda behavior: _preceded(behavior, step),
        request_deserializer=request_deserializer,
    )


def rebuilt(
    handler: Handler,
    change: Callable[[Callable[..., Any] | None], Callable[[Any, Context], Any]],
    *,
    request_deserializer: Any = _KEEP,
) -> Handler:
    """A handler of ``handler``'s kind whose behaviour is ``change(its behaviour)``, with its
    serializers (and its request deserializer unless another is given)."""
    deserializer = (
        handler.request_deserializer if request_deserializer is _KEEP else request_deserializer
    )
    serializers: dict[str, Any] = {
        "request_deserializer": deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(change(handler.unary_unary), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(change(handler.unary_stream), **serializers)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(change(handler.stream_stream), **serializers)
    return grpc.stream_unary_rpc_method_handler(change(handler.stream_unary), **serializers)


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
