"""Replacing the service's key files the way a Kubernetes secret update does, and telling the
emulator (standing in for Antom) about the same new keys."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import ServiceEnv
from vault_service.antom import PrivateKey
from vault_service.emulator import EmulatorServer


def replace_file(path: Path, content: bytes) -> None:
    """Swap ``path``'s content in one step (write beside it, then rename over it), as the
    kubelet's symlink swap does: a reader sees the old file or the new one, never half."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_bytes(content)
    os.replace(staged, path)


def install_keys(env: ServiceEnv, merchant: PrivateKey, antom: PrivateKey) -> None:
    """New merchant private key and Antom public key (keyVersion 1) in the service's files."""
    replace_file(Path(env["VAULT_MERCHANT_PRIVATE_KEY_FILE"]), merchant.to_pkcs8_pem())
    replace_file(Path(env["VAULT_ANTOM_PUBLIC_KEY_FILE"]), antom.public_key().to_spki_pem())


def rotate_emulator(emulator: EmulatorServer, merchant: PrivateKey, antom: PrivateKey) -> None:
    """Antom's side of the same rotation: it now trusts only the new merchant key and signs
    its answers and notifications with its new key."""
    emulator.state.verifier.swap(merchant.public_key())
    emulator.state.signer.swap(antom)
