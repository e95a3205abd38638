"""The key files, the Antom keys' and the card-data key ring's: read at start, re-read on
request (SIGHUP), swapped in place.

On Kubernetes the merchant private key and Antom's public key(s) are secret mounts, which the
kubelet updates in place when the secret changes. :class:`AntomKeyFiles` owns the one
:class:`Signer` (the Antom client's) and the one :class:`Verifier` (shared by the Antom client
and the webhook), so that a reload replaces the keys every one of them uses at the same moment,
without rebuilding the client or the webhook.

Files are read in a worker thread, all of them before anything is swapped: a missing or broken
file leaves every key as it was (half a rotation would be worse than none).

The data key ring (``VAULT_DATA_KEY_FILE``) is shared by every store of the process, which seal
and open card data with it; ``serve`` and ``rotate-data-key`` both load it from here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vault_service.antom.keys import (
    KeyFormatError,
    PrivateKey,
    PublicKey,
    read_private_key_file,
    read_public_key_file,
)
from vault_service.antom.signing import Signer, Verifier
from vault_service.config import ConfigError, Settings
from vault_service.store.data_keys import DataKeyFileError, DataKeyRing, read_data_key_file

log = logging.getLogger(__name__)

DATA_KEY_SETTING: Final = "VAULT_DATA_KEY_FILE"


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


async def load_data_keys(path: Path) -> DataKeyRing:
    """The card-data key ring in ``path``, the file ``VAULT_DATA_KEY_FILE`` names; a bad file
    raises :class:`DataKeyFileError` naming that setting."""
    try:
        return await asyncio.to_thread(read_data_key_file, path)
    except DataKeyFileError as exc:
        raise DataKeyFileError(f"{DATA_KEY_SETTING}: {exc}") from None


async def reload_data_keys(ring: DataKeyRing, path: Path) -> bool:
    """Re-read the data key file (on SIGHUP) and swap its keys into ``ring``; a file that
    cannot be read or parsed leaves the old keys in force and says so in one line (the reason
    names the file and the problem, never key material). Returns whether the keys were
    swapped."""
    try:
        new = await load_data_keys(path)
    except DataKeyFileError as exc:
        log.error(  # noqa: TRY400 - the message says it all; a traceback adds nothing
            "data keys not reloaded; the previous key ring stays in use",
            extra={"reason": str(exc)},
        )
        return False
    ring.swap(new)
    log.info("data keys reloaded", extra={"key_id": new.active_key_id})
    return True
