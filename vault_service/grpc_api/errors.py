"""The one place where exceptions become gRPC statuses, with ``google.rpc`` error details.

Every RPC method is wrapped by :func:`unary_errors` or :func:`stream_errors`, so a method only
raises and never builds a status itself. :func:`rich_status` holds the whole mapping of the
contract's error section. Status messages are fixed texts or our own validation wording: they
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
from typing import Any, Final, NoReturn, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vault_service.antom.errors import (
    AntomConfigurationError,
    AntomProtocolError,
    AntomRejectedError,
    AntomResultError,
    AntomUnavailableError,
    AntomUnknownResultError,
    SignatureError,
)
from vault_service.domain import InvalidResumeTokenError
from vault_service.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    VaultError,
)
from vault_service.service.streaming import EventKeyMissingError
from vault_service.store.base import StoreUnavailableError

log = logging.getLogger(__name__)

ANTOM_DOMAIN: Final = "antom"
VAULT_DOMAIN: Final = "vault"
DATA_KEY_MISSING_REASON: Final = "DATA_KEY_MISSING"
SIGNATURE_INVALID_REASON: Final = "ANTOM_SIGNATURE_INVALID"
RETRY_DELAY_SECONDS: Final = 1
INTERNAL_MESSAGE: Final = "internal error"

_PLAIN_CODES: Final[tuple[tuple[type[VaultError], int], ...]] = (
    (UnauthenticatedError, code_pb2.UNAUTHENTICATED),
    (PermissionDeniedError, code_pb2.PERMISSION_DENIED),
    (NotFoundError, code_pb2.NOT_FOUND),
    (ConflictError, code_pb2.ALREADY_EXISTS),
)

_ACCESS_REFUSALS: Final = frozenset({code_pb2.UNAUTHENTICATED, code_pb2.PERMISSION_DENIED})

Context = grpc.aio.ServicerContext[Any, Any]
_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class DeadlineExceededError(VaultError):
    """The caller's deadline leaves no time to call Antom and still answer."""


def rich_status(exc: Exception) -> status_pb2.Status:
    """The ``google.rpc.Status`` (code, message, details) the contract specifies for ``exc``."""
    match exc:
        case InvalidArgumentError(violations=violations):
            return _status(
                code_pb2.INVALID_ARGUMENT,
                f"invalid request: {exc}",
                _bad_request(violations),
            )
        case InvalidResumeTokenError():
            return _status(
                code_pb2.INVALID_ARGUMENT,
                f"invalid resume_token: {exc}",
                _bad_request({"resume_token": str(exc)}),
            )
        case UnauthenticatedError() | PermissionDeniedError() | NotFoundError() | ConflictError():
            return _status(_plain_code(exc), str(exc))
        case DeadlineExceededError():
            return _status(code_pb2.DEADLINE_EXCEEDED, "the deadline leaves no time to call Antom")
        case AntomRejectedError():
            code = (
                code_pb2.INVALID_ARGUMENT
                if exc.result_code == "PARAM_ILLEGAL"
                else code_pb2.FAILED_PRECONDITION
            )
            return _status(
                code,
                f"Antom refused the call with {exc.result_code}",
                _antom_error_info(exc),
            )
        case AntomConfigurationError():
            # Our configuration, not the caller's request: UNAVAILABLE until an operator
            # fixes the settings the message names (no card data or Antom text in it).
            return _status(
                code_pb2.UNAVAILABLE,
                f"{exc.hint}; retry later",
                _retry_info(),
                _antom_error_info(exc),
            )
        case AntomUnknownResultError():
            return _status(
                code_pb2.UNAVAILABLE,
                "Antom did not give a definitive answer; retry later",
                _retry_info(),
                _antom_error_info(exc),
            )
        case AntomUnavailableError() | AntomProtocolError():
            return _status(
                code_pb2.UNAVAILABLE,
                "Antom could not be reached or answered badly; retry later",
                _retry_info(),
            )
        case EventKeyMissingError():
            return _status(
                code_pb2.UNAVAILABLE,
                f"{exc}; resume from ErrorInfo.metadata['resume_token'] on another server, or"
                " here once its VAULT_DATA_KEY_FILE holds the key and is reloaded",
                _retry_info(),
                error_details_pb2.ErrorInfo(
                    reason=DATA_KEY_MISSING_REASON,
                    domain=VAULT_DOMAIN,
                    metadata={"resume_token": exc.resume_token},
                ),
            )
        case StoreUnavailableError(public_message=message):
            return _status(code_pb2.UNAVAILABLE, message, _retry_info())
        case SignatureError():
            return _status(
                code_pb2.UNAVAILABLE,
                "Antom's answer failed signature verification; retry later",
                _retry_info(),
                error_details_pb2.ErrorInfo(reason=SIGNATURE_INVALID_REASON, domain=ANTOM_DOMAIN),
            )
        case _:
            return _status(code_pb2.INTERNAL, INTERNAL_MESSAGE)


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


def _retry_info() -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(retry_delay=Duration(seconds=RETRY_DELAY_SECONDS))


def _antom_error_info(exc: AntomResultError) -> Message:
    return error_details_pb2.ErrorInfo(
        reason=exc.result_code,
        domain=ANTOM_DOMAIN,
        metadata={"result_status": exc.result_status, "result_message": exc.result_message},
    )
