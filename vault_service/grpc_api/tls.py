"""TLS for the gRPC port: the server's certificate and, for mTLS, the CA of client certificates.

Certificates in Kubernetes are short-lived (cert-manager renews them in place), so the files are
read again on :meth:`ServerTls.reload` (SIGHUP) and the new pair is used from the next handshake
on, without a restart and without dropping open connections. A pair that does not load or whose
key does not match its certificate is refused at start and ignored on reload (the old one stays
in force), because a half-renewed secret must not take the port down.

With a client CA configured every client must present a certificate that chains to it: the
handshake itself fails otherwise, before any call is read. A reloaded client CA also applies to
connections already open: :meth:`ServerTls.client_trust` is what every call's peer chain is
checked against (:mod:`vault_service.grpc_api.client_trust`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from vault_service.errors import ConfigurationError
from vault_service.grpc_api.client_trust import ClientTrust

log = logging.getLogger(__name__)


class TlsFilesError(ConfigurationError):
    """The certificate, key or CA files cannot be used; the message names the setting."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None


@dataclass(frozen=True, slots=True)
class _Material:
    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None
    client_trust: ClientTrust | None = field(default=None, compare=False, repr=False)

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.private_key, self.cert_chain)], root_certificates=self.client_ca
        )


class ServerTls:
    """Server credentials whose certificate can be replaced while the server runs."""

    def __init__(self, files: TlsFiles, material: _Material) -> None:
        self._files = files
        self._current = material
        self._staged: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()

    @classmethod
    async def load(cls, files: TlsFiles) -> ServerTls:
        return cls(files, await asyncio.to_thread(_read, files))

    @property
    def mutual(self) -> bool:
        return self._files.client_ca_file is not None

    def client_trust(self) -> ClientTrust | None:
        """The client CA bundle in force (a new object after a reload changed the files)."""
        return self._current.client_trust

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current.configuration(),
            # gRPC documents None as "keep the configuration in use"; the stub omits it.
            cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch),
            require_client_authentication=self.mutual,
        )

    async def reload(self) -> bool:
        """Read the files again; a usable new pair is used from the next handshake on."""
        try:
            material = await asyncio.to_thread(_read, self._files)
        except TlsFilesError as exc:
            log.error(  # noqa: TRY400 - the reason names the file; a traceback adds nothing
                "TLS files not reloaded; the previous certificate stays in force",
                extra={"reason": str(exc)},
            )
            return False
        if material == self._current:
            return False
        with self._lock:
            self._current = material
            self._staged = material.configuration()
        log.info("TLS certificate reloaded")
        return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC (on its own thread) before each handshake: the new configuration
        once after a reload, else ``None`` (keep the one in use)."""
        with self._lock:
            staged, self._staged = self._staged, None
        return staged


def _read(files: TlsFiles) -> _Material:
    cert_chain = _read_file(files.cert_file, "VAULT_GRPC_TLS_CERT_FILE")
    private_key = _read_file(files.key_file, "VAULT_GRPC_TLS_KEY_FILE")
    client_ca = (
        None
        if files.client_ca_file is None
        else _read_file(files.client_ca_file, "VAULT_GRPC_TLS_CLIENT_CA_FILE")
    )
    try:
        certificates = x509.load_pem_x509_certificates(cert_chain)
    except ValueError:
        raise TlsFilesError("VAULT_GRPC_TLS_CERT_FILE holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TlsFilesError(
            "VAULT_GRPC_TLS_KEY_FILE holds no unencrypted PEM private key"
        ) from None
    if certificates[0].public_key() != key.public_key():
        raise TlsFilesError(
            "VAULT_GRPC_TLS_KEY_FILE does not match the first certificate of"
            " VAULT_GRPC_TLS_CERT_FILE"
        )
    client_trust = None
    if client_ca is not None:
        try:
            client_trust = ClientTrust(client_ca)
        except ValueError:
            raise TlsFilesError("VAULT_GRPC_TLS_CLIENT_CA_FILE holds no PEM certificate") from None
    return _Material(cert_chain, private_key, client_ca, client_trust)


def _read_file(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFilesError(f"{setting}: cannot read {path}: {exc.strerror}") from None
