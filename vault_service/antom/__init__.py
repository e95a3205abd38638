"""The Antom boundary: signing and verification, the async client, the wire models, the errors.

This is the package's public face: code outside ``vault_service.antom`` imports from here, never
from its modules (tests of the package's internals aside). :mod:`.rsa_keys` parses and loads RSA
keys, :mod:`.signing` signs requests and verifies responses and notifications, :mod:`.client`
calls Antom with retries, :mod:`.models` holds Antom's JSON shapes, :mod:`.errors` classifies
Antom's answers into the error categories of :mod:`vault_service.errors`.
"""

from vault_service.antom.client import AntomClient, AntomClientConfig, RetryPolicy
from vault_service.antom.errors import (
    AntomConfigurationError,
    AntomError,
    AntomProtocolError,
    AntomRejectedError,
    AntomResultError,
    AntomUnavailableError,
    AntomUnknownResultError,
    InvalidSignatureError,
    SignatureError,
    UnknownKeyVersionError,
)
from vault_service.antom.models import (
    AcquirerInfo,
    CreateVaultingSessionRequest,
    InquireVaultingRequest,
    InquireVaultingResponse,
    PaymentMethodDetail,
    VaultingNotification,
)
from vault_service.antom.request_time import request_epoch
from vault_service.antom.rsa_keys import (
    KeyFormatError,
    PrivateKey,
    PublicKey,
    ensure_key_pair,
    load_private_key,
    read_private_key_file,
    read_public_key_file,
)
from vault_service.antom.signing import SignatureHeader, Signer, Verifier

__all__ = [
    "AcquirerInfo",
    "AntomClient",
    "AntomClientConfig",
    "AntomConfigurationError",
    "AntomError",
    "AntomProtocolError",
    "AntomRejectedError",
    "AntomResultError",
    "AntomUnavailableError",
    "AntomUnknownResultError",
    "CreateVaultingSessionRequest",
    "InquireVaultingRequest",
    "InquireVaultingResponse",
    "InvalidSignatureError",
    "KeyFormatError",
    "PaymentMethodDetail",
    "PrivateKey",
    "PublicKey",
    "RetryPolicy",
    "SignatureError",
    "SignatureHeader",
    "Signer",
    "UnknownKeyVersionError",
    "VaultingNotification",
    "Verifier",
    "ensure_key_pair",
    "load_private_key",
    "read_private_key_file",
    "read_public_key_file",
    "request_epoch",
]
