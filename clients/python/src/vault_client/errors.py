"""Typed errors with the ``google.rpc`` details vault-service attaches to its statuses.

Every failed call raises a :class:`VaultError` subclass chosen by the gRPC status code; each one
carries whatever details the status had, already decoded: the field violations of a
``BadRequest``, Antom's ``reason`` and ``result_message`` from an ``ErrorInfo`` of domain
``antom``, and the delay of a ``RetryInfo``. The original ``grpc.RpcError`` is the
``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
ANTOM_DOMAIN: Final = "antom"
RESUME_TOKEN_FIELD: Final = "resume_token"  # noqa: S105 - a field name, not a secret
"""The field a refused StreamResults resume token is reported under (``BadRequest``)."""


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, named by its proto path (e.g. ``env.time_zone_offset``)."""

    field: str
    description: str


@dataclass(frozen=True)
class AntomReason:
    """Antom's own verdict behind an error (``ErrorInfo`` of domain ``antom``)."""

    reason: str
    """Antom's ``resultCode``, e.g. ``REPEAT_REQ_INCONSISTENT`` or ``UNKNOWN_EXCEPTION``."""
    result_status: str
    """Antom's status letter: ``F`` (definitive failure) or ``U`` (unknown)."""
    result_message: str
    """Antom's message, for logs (not for buyers)."""


@dataclass(frozen=True)
class ErrorDetails:
    """The decoded ``google.rpc`` details of one status; empty when it carried none."""

    field_violations: tuple[FieldViolation, ...] = ()
    antom: AntomReason | None = None
    retry_delay: float | None = None
    """Seconds the server asks the caller to wait before retrying (``RetryInfo``)."""
    other: tuple[str, ...] = field(default=())
    """Type URLs of details this client does not decode (a newer server's)."""


class VaultError(Exception):
    """A vault-service call failed; ``code`` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str, details: ErrorDetails) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details

    @property
    def field_violations(self) -> tuple[FieldViolation, ...]:
        return self.details.field_violations

    @property
    def antom(self) -> AntomReason | None:
        return self.details.antom

    @property
    def retry_delay(self) -> float | None:
        return self.details.retry_delay


class InvalidArgumentError(VaultError):
    """The request is invalid (see :attr:`field_violations`), or Antom called it so
    (``PARAM_ILLEGAL`` in :attr:`antom`). Do not retry it unchanged."""


class ResumeTokenRejectedError(InvalidArgumentError):
    """The server refused the stored resume token: unknown, malformed, or too old to resume
    from. Nothing can be resumed from it: re-read the vaulting requests you care about with
    ``get_result``, then clear the cursor store and consume from now."""


class AlreadyExistsError(VaultError):
    """The ``vaulting_request_id`` is in use with other parameters, or by another caller."""


class NotFoundError(VaultError):
    """No vaulting request with that id that this caller may see."""


class FailedPreconditionError(VaultError):
    """Antom refused the call for good (see :attr:`antom`); use a new ``vaulting_request_id``
    once the cause is fixed."""


class UnavailableError(VaultError):
    """The service or Antom could not answer now; retry after :attr:`retry_delay` with the same
    ``vaulting_request_id`` (the client already did, as often as its retry policy allows)."""


class DeadlineExceededError(VaultError):
    """The call's deadline passed."""


class UnauthenticatedError(VaultError):
    """No credentials, or credentials the service does not accept."""


class PermissionDeniedError(VaultError):
    """The caller is known but may not make this call."""


class InternalError(VaultError):
    """A fault in the service itself."""


_BY_CODE: Final[dict[grpc.StatusCode, type[VaultError]]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.INTERNAL: InternalError,
}


class _FailedCall(Protocol):
    """What every ``RpcError`` a call raises also is (sync calls' are ``grpc.Call`` objects,
    ``grpc.aio.AioRpcError`` has the same methods), though the types do not say so."""

    def code(self) -> grpc.StatusCode: ...

    def details(self) -> str | None: ...

    def trailing_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...


def from_rpc_error(error: grpc.RpcError) -> VaultError:
    """The typed error for a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``).

    A StreamResults refusal naming ``resume_token`` becomes :class:`ResumeTokenRejectedError`,
    keyed on the ``BadRequest`` field violation: the most specific signal the contract gives.
    """
    call = cast(_FailedCall, error)
    code = call.code()
    message = call.details() or ""
    details = decode_details(call.trailing_metadata(), code)
    kind = _BY_CODE.get(code, VaultError)
    if kind is InvalidArgumentError and any(
        violation.field == RESUME_TOKEN_FIELD for violation in details.field_violations
    ):
        kind = ResumeTokenRejectedError
    typed = kind(code, message, details)
    typed.__cause__ = error
    return typed


def decode_details(
    metadata: Iterable[tuple[str, str | bytes]] | None, code: grpc.StatusCode
) -> ErrorDetails:
    """The details in ``grpc-status-details-bin`` of trailing ``metadata``; ignored (empty)
    when its status code disagrees with the call's, as gRPC itself requires."""
    raw = next((value for key, value in metadata or () if key == STATUS_DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return ErrorDetails()
    status = status_pb2.Status.FromString(raw)
    if status.code != code.value[0]:
        return ErrorDetails()
    violations: list[FieldViolation] = []
    antom: AntomReason | None = None
    retry_delay: float | None = None
    other: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(bad_request):
            violations += [
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            ]
        elif detail.Unpack(info):
            if info.domain == ANTOM_DOMAIN:
                antom = AntomReason(
                    info.reason,
                    info.metadata.get("result_status", ""),
                    info.metadata.get("result_message", ""),
                )
        elif detail.Unpack(retry):
            retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
        else:
            other.append(detail.type_url)
    return ErrorDetails(tuple(violations), antom, retry_delay, tuple(other))
