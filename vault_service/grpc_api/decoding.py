"""Request parsing moved from grpc's core into our edge, so that a malformed message is the
caller's error (INVALID_ARGUMENT) and not the server's.

grpc.aio parses a request with the handler's ``request_deserializer`` before any of our code
runs, and when that raises (bytes that are not the message, or a string field that is not
UTF-8) it answers UNKNOWN with the parser's text and logs an error with a traceback: a caller
could make our logs cry wolf at will. :class:`DecodeRequests` hands grpc handlers that take the
raw bytes instead and parse them first, before the method is called.

The refusal is answered here, with a fixed message and no details, rather than raised into
:mod:`.errors`: no method has run yet, so there is no method's error to translate, and the
parser's own text (which may quote the caller's bytes) is never echoed.

Only single-request handlers are rewritten (ours, health's Check and Watch); streaming-request
handlers (reflection) are left as grpc made them.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from vault_service.grpc_api.errors import Context

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in grpc's stubs
Deserializer = Callable[[bytes], Any]

MALFORMED_MESSAGE: Final = "the request message could not be parsed"


class DecodeRequests(grpc.aio.ServerInterceptor):
    """Parse each single request message in our code, refusing bad bytes as INVALID_ARGUMENT."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, parse),
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, parse),
            response_serializer=handler.response_serializer,
        )


async def _parsed(raw: bytes, parse: Deserializer, context: Context) -> Any:
    try:
        return parse(raw)
    except DecodeError:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED_MESSAGE)


def _unary(
    behavior: Callable[..., Any] | None, parse: Deserializer
) -> Callable[[bytes, Context], Awaitable[Any]]:
    assert behavior is not None, "a unary-unary handler without its behaviour"

    async def parsed_first(raw: bytes, context: Context) -> Any:
        request = await _parsed(raw, parse, context)
        return await behavior(request, context)

    return parsed_first


def _streaming(
    behavior: Callable[..., Any] | None, parse: Deserializer
) -> Callable[[bytes, Context], Any]:
    """The same for a server-streaming method, written either way grpc.aio allows: as an async
    generator (ours) or as a coroutine that writes to the context (health's Watch)."""
    assert behavior is not None, "a unary-stream handler without its behaviour"
    if not inspect.isasyncgenfunction(behavior):
        return _unary(behavior, parse)

    async def parsed_first(raw: bytes, context: Context) -> AsyncIterator[Any]:
        request = await _parsed(raw, parse, context)
        async with contextlib.aclosing(behavior(request, context)) as responses:
            async for response in responses:
                yield response

    return parsed_first
