"""The one place where exceptions become gRPC statuses, with ``google.rpc`` error details.

Every RPC method is wrapped by :func:`unary_errors` or :func:`stream_errors`, so a method only
raises and never builds a status itself. :func:`rich_status` holds the whole mapping of the
contract's error section, from the categories of :mod:`vault_service.errors` (never from another
package's classes). Status messages are fixed texts or our own validation wording: they
never carry a card token, a signature, Antom's free text, or the text of an unexpected
exception (that goes to the log, with its traceback, and the caller gets a generic INTERNAL).
``asyncio.CancelledError`` is not an ``Exception`` and passes through untouched, so a cancelled
call stays cancelled.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, Final, NoReturn, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vault_service.errors import (
    ConfigurationError,
    ConflictError,
    DeadlineExceededError,
    ErrorInfo,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RejectedError,
    UnauthenticatedError,
    UnavailableError,
    VaultError,
)

log = logging.getLogger(__name__)

INTERNAL_MESSAGE: Final = "internal error"

_PLAIN_CODES: Final[tuple[tuple[type[VaultError], int], ...]] = (
    (UnauthenticatedError, code_pb2.UNAUTHENTICATED),
    (PermissionDeniedError, code_pb2.PERMISSION_DENIED),
    (NotFoundError, code_pb2.NOT_FOUND),
    (ConflictError, code_pb2.ALREADY_EXISTS),
    (DeadlineExceededError, code_pb2.DEADLINE_EXCEEDED),
)

_ACCESS_REFUSALS: Final = frozenset({code_pb2.UNAUTHENTICATED, code_pb2.PERMISSION_DENIED})

Context = grpc.aio.ServicerContext[Any, Any]
_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def rich_status(exc: Exception) -> status_pb2.Status:
    """The ``google.rpc.Status`` (code, message, details) the contract specifies for ``exc``:
    the code and the category's own detail by category, then the error's
    :attr:`~VaultError.error_info` when it has one, under its :attr:`~VaultError.public_message`.
    """
    code: int
    details: list[Message]
    match exc:
        case InvalidArgumentError(violations=violations):
            code, details = code_pb2.INVALID_ARGUMENT, [_bad_request(violations)]
        case ConfigurationError(retry_delay=delay) | UnavailableError(retry_delay=delay):
            # A configuration error is the operator's to fix, not the caller's: until then
            # the call is unavailable, like any other outage.
            code, details = code_pb2.UNAVAILABLE, [_retry_info(delay)]
        case RejectedError(about_arguments=about_arguments):
            code = code_pb2.INVALID_ARGUMENT if about_arguments else code_pb2.FAILED_PRECONDITION
            details = []
        case (
            UnauthenticatedError()
            | PermissionDeniedError()
            | NotFoundError()
            | ConflictError()
            | DeadlineExceededError()
        ):
            code, details = _plain_code(exc), []
        case _:
            return _status(code_pb2.INTERNAL, INTERNAL_MESSAGE)
    if exc.error_info is not None:
        details.append(_error_info(exc.error_info))
    return _status(code, exc.public_message, *details)


async def abort(context: Context, exc: Exception, method: str) -> NoReturn:
    """End the call with the status for ``exc``; log what the caller must not see."""
    status = rich_status(exc)
    if status.code == code_pb2.INTERNAL:
        log.error(
            "unexpected error in a gRPC method",
            exc_info=exc,
            extra={"grpc_method": method, "error": type(exc).__name__},
        )
    elif status.code in _ACCESS_REFUSALS:
        # The audit trail of refused credentials: who (by address) tried what, and why, in
        # our own words (never the credential).
        log.warning(
            "gRPC call refused",
            extra={
                "grpc_method": method,
                "grpc_code": code_pb2.Code.Name(status.code),
                "reason": status.message,
                "peer": context.peer(),
            },
        )
    await context.abort_with_status(rpc_status.to_status(status))


def unary_errors(
    method: Callable[[_Servicer, _Request, Context], Awaitable[_Response]],
) -> Callable[[_Servicer, _Request, Context], Coroutine[Any, Any, _Response]]:
    """Wrap a unary RPC method so that every exception it raises becomes its status."""

    @functools.wraps(method)
    async def translated(self: _Servicer, request: _Request, context: Context) -> _Response:
        try:
            return await method(self, request, context)
        except Exception as exc:
            await abort(context, exc, method.__name__)

    return translated


def stream_errors(
    method: Callable[[_Servicer, _Request, Context], AsyncGenerator[_Response, None]],
) -> Callable[[_Servicer, _Request, Context], AsyncIterator[_Response]]:
    """Wrap a server-streaming RPC method like :func:`unary_errors`.

    The inner generator is closed as soon as the stream ends for any reason (a client cancel
    included), so its ``finally`` blocks run at once rather than whenever it is collected.
    """

    @functools.wraps(method)
    async def translated(
        self: _Servicer, request: _Request, context: Context
    ) -> AsyncIterator[_Response]:
        try:
            async with contextlib.aclosing(method(self, request, context)) as items:
                async for item in items:
                    yield item
        except Exception as exc:
            await abort(context, exc, method.__name__)

    return translated


def _plain_code(exc: VaultError) -> int:
    """The code of an error whose own message is the whole answer."""
    return next(code for kind, code in _PLAIN_CODES if isinstance(exc, kind))


def _status(code: int, message: str, *details: Message) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


def _bad_request(violations: dict[str, str]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=why)
            for field, why in violations.items()
        ]
    )


def _retry_info(delay: timedelta) -> error_details_pb2.RetryInfo:
    retry_delay = Duration()
    retry_delay.FromTimedelta(delay)
    return error_details_pb2.RetryInfo(retry_delay=retry_delay)


def _error_info(info: ErrorInfo) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(
        reason=info.reason, domain=info.domain, metadata=dict(info.metadata)
    )
