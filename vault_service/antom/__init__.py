"""The Antom boundary: signing and verification, the async client, the wire models, the errors.

This is the package's public face: code outside ``vault_service.antom`` imports from here, never
from its modules (tests of the package's internals aside). :mod:`.rsa_keys` parses and loads RSA
keys, :mod:`.signing` signs requests and verifies responses and notifications, :mod:`.client`
calls Antom with retries (:mod:`.connection` its TLS and proxy, :mod:`.causes` and
:mod:`.failure_log` what went wrong), :mod:`.models` holds Antom's JSON shapes, :mod:`.errors`
classifies Antom's answers into the error categories of :mod:`vault_service.errors`.
"""

from vault_service.antom import causes
from vault_service.antom.client import (
    INQUIRE_VAULTING_PATH,
    AntomClient,
    AntomClientConfig,
    RetryPolicy,
    answer_result,
    check_response_signature,
    request_path,
    signed_headers,
)
from vault_service.antom.connection import (
    AntomHttp,
    HttpAnswer,
    proxy_address,
    proxy_parts,
    tls_context,
)
from vault_service.antom.errors import (
    GATEWAY_REFUSAL_CODES,
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
    "GATEWAY_REFUSAL_CODES",
    "INQUIRE_VAULTING_PATH",
    "AcquirerInfo",
    "AntomClient",
    "AntomClientConfig",
    "AntomConfigurationError",
    "AntomError",
    "AntomHttp",
    "AntomProtocolError",
    "AntomRejectedError",
    "AntomResultError",
    "AntomUnavailableError",
    "AntomUnknownResultError",
    "CreateVaultingSessionRequest",
    "HttpAnswer",
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
    "answer_result",
    "causes",
    "check_response_signature",
    "ensure_key_pair",
    "load_private_key",
    "proxy_address",
    "proxy_parts",
    "read_private_key_file",
    "read_public_key_file",
    "request_epoch",
    "request_path",
    "signed_headers",
    "tls_context",
]
