"""The Python client of vault-service (``vault.v1.VaultService``).

``VaultClient`` (blocking) and ``AsyncVaultClient`` (asyncio) wrap the four RPCs with default
deadlines, retries, typed errors (:mod:`vault_client.errors`) and a ``results()`` stream that
resumes by itself and keeps its place in a cursor store (:mod:`vault_client.cursor`). The
contract's messages and enums are in :mod:`vault_client.pb`.
"""

from vault_client import pb
from vault_client._core import ALL_RESULTS, ResultFilter, StreamItem
from vault_client.aio import AsyncResultStream, AsyncVaultClient
from vault_client.credentials import TokenFile, mtls, mtls_from_files, tls
from vault_client.cursor import (
    CallbackCursorStore,
    CursorStore,
    FileCursorStore,
    MemoryCursorStore,
)
from vault_client.errors import (
    AlreadyExistsError,
    AntomReason,
    DeadlineExceededError,
    ErrorDetails,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResumeTokenRejectedError,
    UnauthenticatedError,
    UnavailableError,
    VaultError,
)
from vault_client.policy import ReconnectPolicy, RetryPolicy
from vault_client.sync import ResultStream, VaultClient

__all__ = [
    "ALL_RESULTS",
    "AlreadyExistsError",
    "AntomReason",
    "AsyncResultStream",
    "AsyncVaultClient",
    "CallbackCursorStore",
    "CursorStore",
    "DeadlineExceededError",
    "ErrorDetails",
    "FailedPreconditionError",
    "FieldViolation",
    "FileCursorStore",
    "InternalError",
    "InvalidArgumentError",
    "MemoryCursorStore",
    "NotFoundError",
    "PermissionDeniedError",
    "ReconnectPolicy",
    "ResultFilter",
    "ResultStream",
    "ResumeTokenRejectedError",
    "RetryPolicy",
    "StreamItem",
    "TokenFile",
    "UnauthenticatedError",
    "UnavailableError",
    "VaultClient",
    "VaultError",
    "mtls",
    "mtls_from_files",
    "pb",
    "tls",
]
