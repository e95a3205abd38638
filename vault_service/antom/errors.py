"""Errors raised at the Antom boundary.

They carry Antom's own ``resultCode`` / ``resultStatus`` / ``resultMessage`` when Antom gave one,
and say whether the client may repeat the same request (same ``vaultingRequestId``) within its
time budget (``retryable``). Each also belongs to a category of :mod:`vault_service.errors`,
which is all the transport edges look at: what a caller is told and Antom's reason
(``ErrorInfo`` in the ``antom`` domain) are written here, beside the error.
"""

from __future__ import annotations

from typing import Final

from vault_service.antom import causes
from vault_service.errors import (
    ConfigurationError,
    ErrorInfo,
    RejectedError,
    UnavailableError,
    VaultError,
)

ANTOM_DOMAIN: Final = "antom"
"""The :attr:`ErrorInfo.domain` of Antom's result codes (and of our verdict on its signatures)."""
SIGNATURE_INVALID_REASON: Final = "ANTOM_SIGNATURE_INVALID"
_UNREACHABLE: Final = "Antom could not be reached or answered badly; retry later"

GATEWAY_REFUSAL_CODES: Final = frozenset(
    {
        # Antom-wide gateway codes (fact sheet §11.2): the gateway refused the caller or the
        # route before looking at the request, so the answer says nothing about the vaulting.
        "INVALID_SIGNATURE",
        "KEY_NOT_FOUND",
        "ACCESS_DENIED",
        "INVALID_CLIENT",
        "CLIENT_INVALID",
        "NO_INTERFACE_DEF",
        "METHOD_NOT_SUPPORTED",
        "MEDIA_TYPE_NOT_ACCEPTABLE",
    }
)
_SIGNING_CODES: Final = frozenset({"INVALID_SIGNATURE", "KEY_NOT_FOUND"})
_CLIENT_CODES: Final = frozenset({"ACCESS_DENIED", "INVALID_CLIENT", "CLIENT_INVALID"})


class AntomError(VaultError):
    """Anything that went wrong talking to Antom (a family: each subclass has its category).

    ``retryable`` says whether sending the same request again (same ``vaultingRequestId``) may
    succeed; the client retries those within its time budget and re-raises the last one.
    """

    retryable: bool = False
    cause: str = causes.MALFORMED_ANSWER
    """Why, in the fixed vocabulary of :mod:`vault_service.antom.causes`: what the log says."""

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        if cause is not None:
            self.cause = cause


class SignatureError(AntomError, UnavailableError):
    """A signature was missing, malformed or did not verify.

    The webhook decides on these itself (401). From the client they mean Antom's answer cannot
    be trusted, so the call is unavailable until a verifiable answer comes.
    """

    cause = causes.BAD_SIGNATURE

    @property
    def public_message(self) -> str:
        return "Antom's answer failed signature verification; retry later"

    @property
    def error_info(self) -> ErrorInfo:
        return ErrorInfo(ANTOM_DOMAIN, SIGNATURE_INVALID_REASON)


class MalformedSignatureHeaderError(SignatureError):
    """A ``Signature`` header could not be parsed."""


class InvalidSignatureError(SignatureError):
    """A signature parsed but does not match the content under any trusted key."""


class UnknownKeyVersionError(SignatureError):
    """A signature names a ``keyVersion`` for which no public key is configured."""


class MissingSignatureError(SignatureError):
    """A message that must be signed arrived without a signature."""


class AntomResultError(AntomError):
    """Antom answered with a non-success ``result`` (a family: each subclass has its category)."""

    def __init__(self, result_code: str, result_status: str, result_message: str) -> None:
        super().__init__(f"Antom answered {result_status}/{result_code}: {result_message}")
        self.result_code = result_code
        self.result_status = result_status
        self.result_message = result_message

    @property
    def error_info(self) -> ErrorInfo:
        """Antom's result, as Antom worded it."""
        return ErrorInfo(
            ANTOM_DOMAIN,
            self.result_code,
            {"result_status": self.result_status, "result_message": self.result_message},
        )


class AntomRejectedError(AntomResultError, RejectedError):
    """A definitive failure (``resultStatus`` F): repeating the request will not help.

    Antom's signed word about this request, so the reconciler may count it as an answer
    (and expire a lapsed session); compare :class:`AntomConfigurationError`.
    """

    cause = causes.REJECTED

    @property
    def public_message(self) -> str:
        return f"Antom refused the call with {self.result_code}"

    @property
    def about_arguments(self) -> bool:
        return self.result_code == "PARAM_ILLEGAL"


class AntomConfigurationError(AntomResultError, ConfigurationError):
    """Antom's gateway refused *us*, not the request: our signature, key version, client id or
    endpoint (a code of :data:`GATEWAY_REFUSAL_CODES`, or any ``F`` that came unsigned, which
    the gateway only sends when it cannot tell who is calling).

    A configuration problem on our side, never an answer about the vaulting: it must not let
    a record expire (a wrong merchant key plus one lost notification would bury a saved card),
    and callers get UNAVAILABLE (fixing the settings fixes the call), not a business failure.
    """

    cause = causes.GATEWAY_REFUSAL

    @property
    def hint(self) -> str:
        """What the operator should check, in the words of our settings."""
        if self.result_code in _SIGNING_CODES:
            return (
                "Antom refused our request signature: check VAULT_MERCHANT_PRIVATE_KEY_FILE / "
                "VAULT_ANTOM_KEY_VERSION (the key registered with Antom, and its version)"
            )
        if self.result_code in _CLIENT_CODES:
            return (
                "Antom refused our client: check VAULT_ANTOM_CLIENT_ID and that it belongs to "
                "the gateway in VAULT_ANTOM_BASE_URL"
            )
        return (
            f"Antom's gateway refused our request ({self.result_code}): check "
            "VAULT_ANTOM_BASE_URL, VAULT_ANTOM_CLIENT_ID and VAULT_MERCHANT_PRIVATE_KEY_FILE"
        )

    @property
    def public_message(self) -> str:
        # Names our settings only: no card data and no Antom free text.
        return f"{self.hint}; retry later"


def failure(
    result_code: str, result_message: str, *, signed: bool
) -> AntomRejectedError | AntomConfigurationError:
    """The error for an ``F`` answer: Antom's word about the request only when it is signed
    and not a gateway refusal (the one place this distinction is made)."""
    if not signed or result_code in GATEWAY_REFUSAL_CODES:
        return AntomConfigurationError(result_code, "F", result_message)
    return AntomRejectedError(result_code, "F", result_message)


class AntomUnknownResultError(AntomResultError, UnavailableError):
    """Antom answered ``U`` (outcome unknown) and the retry budget ran out."""

    retryable = True
    cause = causes.UNKNOWN_RESULT

    @property
    def public_message(self) -> str:
        return "Antom did not give a definitive answer; retry later"


class AntomUnavailableError(AntomError, UnavailableError):
    """Antom could not be reached or answered garbage, and the retry budget ran out;
    ``cause`` says which (a connection failure, a timeout, a retryable HTTP status)."""

    retryable = True

    @property
    def public_message(self) -> str:
        return _UNREACHABLE


class AntomProtocolError(AntomError, UnavailableError):
    """Antom's answer broke the protocol: an unexpected HTTP status, or a body we cannot use."""

    @property
    def public_message(self) -> str:
        return _UNREACHABLE
