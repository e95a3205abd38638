"""The Antom key files: read at start, re-read on request (SIGHUP), swapped in place.

On Kubernetes the merchant private key and Antom's public key(s) are secret mounts, which the
kubelet updates in place when the secret changes. :class:`AntomKeyFiles` owns the one
:class:`Signer` (the Antom client's) and the one :class:`Verifier` (shared by the Antom client
and the webhook), so that a reload replaces the keys every one of them uses at the same moment,
without rebuilding the client or the webhook.

Files are read in a worker thread, all of them before anything is swapped: a missing or broken
file leaves every key as it was (half a rotation would be worse than none).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from vault_service.antom import (
    KeyFormatError,
    PrivateKey,
    PublicKey,
    Signer,
    Verifier,
    read_private_key_file,
    read_public_key_file,
)
from vault_service.config import ConfigError, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _KeyMaterial:
    merchant: PrivateKey
    antom: dict[str, PublicKey]


def _read(merchant_file: Path, antom_files: dict[str, Path]) -> _KeyMaterial:
    """Every key file parsed (blocking: call in a thread); KeyFormatError or OSError."""
    return _KeyMaterial(
        merchant=read_private_key_file(merchant_file),
        antom={version: read_public_key_file(path) for version, path in antom_files.items()},
    )


def _failure(exc: KeyFormatError | OSError) -> str:
    """What went wrong, naming the file but never quoting its content (KeyFormatError messages
    are fixed phrases; an OSError's strerror and file name are all that is kept of it)."""
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


class AntomKeyFiles:
    """The merchant's signing key and Antom's verifying keys, loaded from their files."""

    __slots__ = ("_antom_files", "_merchant_file", "signer", "verifier")

    def __init__(self, settings: Settings, material: _KeyMaterial) -> None:
        """Raises :class:`ConfigError` naming the setting whose keyVersion cannot be used."""
        self._merchant_file = settings.merchant_private_key_file
        self._antom_files = settings.antom_public_key_files
        try:
            self.signer = Signer(material.merchant, settings.antom_key_version)
        except ValueError as exc:
            raise ConfigError(f"VAULT_ANTOM_KEY_VERSION: {exc}") from None
        try:
            self.verifier = Verifier(material.antom)
        except ValueError as exc:
            raise ConfigError(
                f"VAULT_ANTOM_PUBLIC_KEY_VERSION or VAULT_ANTOM_NEXT_PUBLIC_KEY_VERSION: {exc}"
            ) from None

    def __repr__(self) -> str:
        return f"AntomKeyFiles(signer={self.signer!r}, verifier={self.verifier!r})"

    @classmethod
    async def load(cls, settings: Settings) -> AntomKeyFiles:
        """Read every key file; a bad one is a configuration error naming the file, an unusable
        keyVersion one naming its setting."""
        files = settings.antom_public_key_files
        try:
            material = await asyncio.to_thread(_read, settings.merchant_private_key_file, files)
        except (KeyFormatError, OSError) as exc:
            raise ConfigError(_failure(exc)) from None
        return cls(settings, material)

    async def reload(self) -> bool:
        """Re-read every key file and swap them all in, or keep all the old keys when any file
        cannot be read or parsed (logged as an error). Returns whether the keys were swapped."""
        try:
            material = await asyncio.to_thread(_read, self._merchant_file, self._antom_files)
        except (KeyFormatError, OSError) as exc:
            log.error(  # noqa: TRY400 - a traceback could only add parser internals
                "Antom keys not reloaded; the previous keys stay in use",
                extra={"reason": _failure(exc)},
            )
            return False
        # No await between the two swaps: no request is signed or verified half-way.
        self.signer.swap(material.merchant)
        self.verifier.swap(material.antom)
        log.info(
            "Antom keys reloaded",
            extra={"key_versions": sorted(material.antom)},
        )
        return True
