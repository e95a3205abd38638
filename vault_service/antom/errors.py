"""Errors raised at the Antom boundary.

They carry Antom's own ``resultCode`` / ``resultStatus`` / ``resultMessage`` when Antom gave one,
and say whether repeating the same request (same ``vaultingRequestId``) could help, so the
service layer can map them to gRPC codes without parsing messages.
"""

from __future__ import annotations

from vault_service.errors import VaultError


class AntomError(VaultError):
    """Anything that went wrong talking to Antom.

    ``retryable`` says whether sending the same request again (same ``vaultingRequestId``) may
    succeed; the client retries those within its time budget and re-raises the last one.
    """

    retryable: bool = False


class SignatureError(AntomError):
    """A signature was missing, malformed or did not verify."""


class MalformedSignatureHeaderError(SignatureError):
    """A ``Signature`` header could not be parsed."""


class InvalidSignatureError(SignatureError):
    """A signature parsed but does not match the content under any trusted key."""


class UnknownKeyVersionError(SignatureError):
    """A signature names a ``keyVersion`` for which no public key is configured."""


class MissingSignatureError(SignatureError):
    """A message that must be signed arrived without a signature."""


class AntomResultError(AntomError):
    """Antom answered with a non-success ``result``."""

    def __init__(self, result_code: str, result_status: str, result_message: str) -> None:
        super().__init__(f"Antom answered {result_status}/{result_code}: {result_message}")
        self.result_code = result_code
        self.result_status = result_status
        self.result_message = result_message


class AntomRejectedError(AntomResultError):
    """A definitive failure (``resultStatus`` F): repeating the request will not help."""


class AntomUnknownResultError(AntomResultError):
    """Antom answered ``U`` (outcome unknown) and the retry budget ran out."""

    retryable = True


class AntomUnavailableError(AntomError):
    """Antom could not be reached or answered garbage, and the retry budget ran out."""

    retryable = True


class AntomProtocolError(AntomError):
    """Antom's answer broke the protocol: an unexpected HTTP status, or a body we cannot use."""
