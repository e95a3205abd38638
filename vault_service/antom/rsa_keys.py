"""RSA key loading for the Antom boundary.

Antom's dashboard hands keys out as bare base64 (one line, no PEM armour); operators also keep
them as PEM files. Loading a PEM private key costs tens of milliseconds, so keys are parsed once
here and the parsed objects travel from then on, wrapped so that no ``repr`` can print them.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vault_service.errors import ConfigurationError

_PEM_ARMOUR = re.compile(rb"-----(BEGIN|END) [A-Z ]+-----")
MIN_KEY_BITS = 2048


class KeyFormatError(ConfigurationError):
    """A key could not be parsed as an RSA key of an accepted form and size: the key file (or
    the key given) must be replaced."""


class PrivateKey:
    """The merchant's (or the emulator's) RSA private key; its repr never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    @property
    def rsa(self) -> rsa.RSAPrivateKey:
        return self._key

    def public_key(self) -> PublicKey:
        return PublicKey(self._key.public_key())

    def __repr__(self) -> str:
        return f"PrivateKey(<{self._key.key_size}-bit RSA, hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("private keys are not picklable")

    @classmethod
    def generate(cls, bits: int = MIN_KEY_BITS) -> PrivateKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    def to_pkcs8_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def to_pkcs1_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


class PublicKey:
    """An RSA public key (Antom's, or the merchant's inside the emulator)."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPublicKey) -> None:
        self._key = key

    @property
    def rsa(self) -> rsa.RSAPublicKey:
        return self._key

    def __repr__(self) -> str:
        return f"PublicKey(<{self._key.key_size}-bit RSA>)"

    def to_spki_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def to_spki_base64(self) -> str:
        der = self._key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")


def _der_from_text(data: bytes) -> bytes:
    """Strip PEM armour and whitespace and decode the base64 body that remains."""
    body = b"".join(_PEM_ARMOUR.sub(b"", data).split())
    if not body:
        raise KeyFormatError("the key is empty")
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise KeyFormatError("the key is neither PEM nor base64") from None


def _check_size(bits: int) -> None:
    if bits < MIN_KEY_BITS:
        raise KeyFormatError(f"RSA keys must have at least {MIN_KEY_BITS} bits, got {bits}")


def _is_private_key(der: bytes) -> bool:
    """Whether ``der`` parses as a private key (only asked on the error path, to explain it)."""
    try:
        serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _is_public_key(der: bytes) -> bool:
    """Whether ``der`` parses as a public key (only asked on the error path, to explain it)."""
    try:
        serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def load_private_key(data: bytes | str) -> PrivateKey:
    """Parse a PKCS#8 or PKCS#1 RSA private key given as PEM or as bare base64 DER."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    der = _der_from_text(raw)
    loaded: object
    try:
        loaded = serialization.load_der_private_key(der, password=None)
    except UnsupportedAlgorithm:
        raise KeyFormatError("the private key is not an RSA key") from None
    except (ValueError, TypeError):
        if _is_public_key(der):
            raise KeyFormatError("this is a public key, but a private key is expected") from None
        raise KeyFormatError("not an unencrypted PKCS#8 or PKCS#1 private key") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise KeyFormatError("the private key is not an RSA key")
    _check_size(loaded.key_size)
    return PrivateKey(loaded)


def load_public_key(data: bytes | str) -> PublicKey:
    """Parse an RSA public key given as SubjectPublicKeyInfo or PKCS#1, PEM or bare base64."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    der = _der_from_text(raw)
    try:
        loaded = serialization.load_der_public_key(der)
    except UnsupportedAlgorithm:
        raise KeyFormatError("the public key is not an RSA key") from None
    except (ValueError, TypeError):
        if _is_private_key(der):
            raise KeyFormatError(
                "this is a private key, but a public key is expected; keep private keys out of"
                " public-key settings"
            ) from None
        raise KeyFormatError("not a SubjectPublicKeyInfo or PKCS#1 public key") from None
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise KeyFormatError("the public key is not an RSA key")
    _check_size(loaded.key_size)
    return PublicKey(loaded)


def read_private_key_file(path: Path) -> PrivateKey:
    try:
        return load_private_key(path.read_bytes())
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: {exc}") from None


def read_public_key_file(path: Path) -> PublicKey:
    try:
        return load_public_key(path.read_bytes())
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: {exc}") from None


def ensure_key_pair(private_path: Path, public_path: Path) -> tuple[PrivateKey, PublicKey]:
    """Load a development key pair, generating both files first when the private key is absent.

    The private key is written PKCS#8 PEM with mode 0600; the public key SubjectPublicKeyInfo PEM.
    Only for development and tests: production keys come from Antom's dashboard.
    """
    if not private_path.exists():
        private_path.parent.mkdir(parents=True, exist_ok=True)
        key = PrivateKey.generate()
        # Created 0600 in the same call that creates the file: no moment where another user could
        # open it with the umask's wider mode and keep reading after the key is written.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(key.to_pkcs8_pem())
        public_path.write_bytes(key.public_key().to_spki_pem())
        return key, key.public_key()
    key = read_private_key_file(private_path)
    if not public_path.exists():
        public_path.write_bytes(key.public_key().to_spki_pem())
    return key, key.public_key()
