"""The gRPC transport: ``vault.v1.VaultService`` over the use cases in :mod:`vault_service.service`.

One module per job: :mod:`.validation` checks requests, :mod:`.mapping` converts between proto
messages and domain values, :mod:`.errors` turns exceptions into rich gRPC statuses,
:mod:`.servicer` implements the RPCs and :mod:`.server` builds the ``grpc.aio`` server with
health checking and reflection; :mod:`.auth`, :mod:`.callers`, :mod:`.token_file` and
:mod:`.tls` say who is calling.

This is the package's public face: code outside ``vault_service.grpc_api`` (the wiring in
:mod:`vault_service.app`) imports from here, never from its modules (tests of the package's
internals aside).
"""

from vault_service.grpc_api.auth import AuthenticationInterceptor, Authenticator
from vault_service.grpc_api.callers import NO_FILE, CallerDirectory, CallersFileError
from vault_service.grpc_api.metrics import MetricsInterceptor
from vault_service.grpc_api.server import (
    Health,
    build_grpc_server,
    build_health_server,
    stop_grpc_server,
)
from vault_service.grpc_api.servicer import VaultServicer
from vault_service.grpc_api.tls import ServerTls, TlsFiles
from vault_service.grpc_api.token_file import TokenFile, describe

__all__ = [
    "NO_FILE",
    "AuthenticationInterceptor",
    "Authenticator",
    "CallerDirectory",
    "CallersFileError",
    "Health",
    "MetricsInterceptor",
    "ServerTls",
    "TlsFiles",
    "TokenFile",
    "VaultServicer",
    "build_grpc_server",
    "build_health_server",
    "describe",
    "stop_grpc_server",
]
