"""How a client proves who it is: TLS or mTLS channel credentials, and bearer tokens.

vault-service names a caller by its mTLS client certificate or by an ``authorization: Bearer``
token. Channel credentials come from :func:`tls`, :func:`mtls` or :func:`mtls_from_files`; a
token is a string, or a :class:`TokenFile` that follows a mounted secret as it rotates.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import grpc

TokenSource: TypeAlias = str | Callable[[], str]
"""A bearer token, or a function returning the current one (called for every call)."""

PathLike: TypeAlias = str | os.PathLike[str]


def tls(root_certificates: bytes | None = None) -> grpc.ChannelCredentials:
    """Server-authenticated TLS; ``root_certificates`` (PEM) trusts the service's CA, ``None``
    the system's roots."""
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def mtls(
    certificate_chain: bytes, private_key: bytes, root_certificates: bytes | None = None
) -> grpc.ChannelCredentials:
    """Mutual TLS: the caller's certificate chain and key (PEM) name it to the service."""
    return grpc.ssl_channel_credentials(
        root_certificates=root_certificates,
        private_key=private_key,
        certificate_chain=certificate_chain,
    )


def mtls_from_files(
    cert_file: PathLike, key_file: PathLike, ca_file: PathLike | None = None
) -> grpc.ChannelCredentials:
    """:func:`mtls` from PEM files (e.g. a mounted Kubernetes TLS secret). The files are read
    once: open a new client after the certificate is renewed."""
    return mtls(
        Path(cert_file).read_bytes(),
        Path(key_file).read_bytes(),
        None if ca_file is None else Path(ca_file).read_bytes(),
    )


class TokenFile:
    """A bearer token kept in a file (a mounted secret), re-read whenever the file changes, so
    a rotated token is used from the next call on without restarting the client."""

    def __init__(self, path: PathLike) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._token = ""

    def __call__(self) -> str:
        stat = self._path.stat()
        seen = (stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            if seen != self._seen:
                self._token = self._path.read_text(encoding="utf-8").strip()
                self._seen = seen
            return self._token


def authorization_metadata(token: TokenSource | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token`` (none without one)."""
    if token is None:
        return ()
    value = token if isinstance(token, str) else token()
    return (("authorization", f"Bearer {value}"),)
