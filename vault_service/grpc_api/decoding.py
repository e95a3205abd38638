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

from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from vault_service.grpc_api.errors import Context
from vault_service.grpc_api.handlers import Handler, preceded

MALFORMED_MESSAGE: Final = "the request message could not be parsed"


class DecodeRequests(grpc.aio.ServerInterceptor):
    """Parse each single request message in our code, refusing bad bytes as INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._decoding: dict[str, Handler] = {}  # built once per method, not per call

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        method: str = handler_call_details.method
        decoding = self._decoding.get(method)
        if decoding is None:
            decoding = self._decoding[method] = _decoding(handler, handler.request_deserializer)
        return decoding


def _decoding(handler: Handler, parse: Callable[[bytes], Any]) -> Handler:
    """``handler`` taking the raw bytes and parsing them itself with ``parse``."""

    async def parsed(raw: bytes, context: Context) -> Any:
        try:
            return parse(raw)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED_MESSAGE)

    return preceded(handler, parsed, request_deserializer=None)
