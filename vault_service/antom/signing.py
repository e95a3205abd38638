"""Byte-exact request/response signing and verification as Antom defines it.

The signed content is ``<METHOD> <PATH>\\n<CLIENT-ID>.<TIME>.<BODY>`` over the exact body bytes
sent (no canonicalisation), signed with RSASSA-PKCS1-v1_5 / SHA-256. The signature travels
base64-encoded and then URL-encoded inside ``algorithm=RSA256,keyVersion=<n>,signature=<value>``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import quote_plus, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from vault_service.antom.errors import (
    InvalidSignatureError,
    MalformedSignatureHeaderError,
    MissingSignatureError,
    UnknownKeyVersionError,
)
from vault_service.antom.rsa_keys import PrivateKey, PublicKey

ALGORITHM = "RSA256"
DEFAULT_KEY_VERSION = "1"
_MAX_HEADER_CHARS = 4096


def _is_key_version(value: str) -> bool:
    """ASCII digits only: ``str.isdigit`` alone also admits ``"²"``, which ``int()`` rejects."""
    return value.isascii() and value.isdigit()


def signing_content(method: str, path: str, client_id: str, time: str, body: bytes) -> bytes:
    """The exact bytes Antom signs: method, path, client id, time and the raw body."""
    return f"{method} {path}\n{client_id}.{time}.".encode() + body


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    """A parsed ``Signature`` header; ``signature`` holds the raw RSA bytes (may be empty)."""

    algorithm: str
    key_version: str
    signature: bytes

    def render(self) -> str:
        """The header value as every Antom SDK sends it: no spaces, URL-encoded base64."""
        encoded = quote_plus(base64.b64encode(self.signature).decode("ascii"))
        return f"algorithm={self.algorithm},keyVersion={self.key_version},signature={encoded}"

    @classmethod
    def parse(cls, value: str) -> SignatureHeader:
        """Parse ``algorithm=..,keyVersion=..,signature=..`` with or without spaces after commas.

        The signature is percent-decoded without turning ``+`` into a space, which accepts both
        the URL-encoded form every SDK sends and raw base64; hex escapes may be either case.
        """
        if len(value) > _MAX_HEADER_CHARS:
            raise MalformedSignatureHeaderError("the signature header is too long")
        pairs: dict[str, str] = {}
        for part in value.split(","):
            name, sep, item = part.strip().partition("=")
            if not sep or not name:
                raise MalformedSignatureHeaderError(
                    "the signature header is not a list of name=value pairs"
                )
            if name in pairs:
                raise MalformedSignatureHeaderError(f"the signature header repeats {name!r}")
            pairs[name] = item.strip()
        if "signature" not in pairs:
            raise MalformedSignatureHeaderError("the signature header has no signature= part")
        algorithm = pairs.get("algorithm", ALGORITHM)
        if algorithm != ALGORITHM:
            raise MalformedSignatureHeaderError(f"unsupported signature algorithm {algorithm!r}")
        key_version = pairs.get("keyVersion", DEFAULT_KEY_VERSION)
        if not _is_key_version(key_version):
            raise MalformedSignatureHeaderError("keyVersion must be a number")
        try:
            raw = base64.b64decode(unquote(pairs["signature"], errors="strict"), validate=True)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise MalformedSignatureHeaderError("the signature is not valid base64") from None
        return cls(algorithm=algorithm, key_version=key_version, signature=raw)


class Signer:
    """Signs content with one private key; the key is parsed once, never per call.

    :meth:`swap` replaces the key in place (a reloaded key file), so the Antom client holding
    this signer signs its next request with the new key; the key version stays: it names the
    key's registration at Antom, which is configuration, not key material.
    """

    __slots__ = ("_key", "_key_version")

    def __init__(self, key: PrivateKey, key_version: str = DEFAULT_KEY_VERSION) -> None:
        if not _is_key_version(key_version):
            raise ValueError(f"keyVersion must be a number, got {key_version!r}")
        self._key = key
        self._key_version = key_version

    def __repr__(self) -> str:
        return f"Signer(key_version={self._key_version!r})"

    def swap(self, key: PrivateKey) -> None:
        """Sign with ``key`` from now on."""
        self._key = key

    def sign(self, method: str, path: str, client_id: str, time: str, body: bytes) -> str:
        """The ``Signature`` header value for this message."""
        raw = self._key.rsa.sign(
            signing_content(method, path, client_id, time, body),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        return SignatureHeader(ALGORITHM, self._key_version, raw).render()


class Verifier:
    """Verifies signatures against Antom's public key(s), chosen by the header's ``keyVersion``.

    Antom registers keys by version and names the version in every signature, so during a
    rotation the old and the new key are both configured (``{"1": old, "2": new}``) and each
    signature is checked against exactly the key of its version: trying every key would let a
    retired version's key keep signing under any version number. A version with no configured
    key is :class:`UnknownKeyVersionError`. A lone key (not a mapping) answers to every version:
    that is for a party that only ever knows one key, such as the emulator checking the
    merchant.

    :meth:`swap` replaces the keys in place, so every holder of this verifier (the Antom client
    and the webhook) sees new keys at the same moment after a reload.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: PublicKey | Mapping[str, PublicKey]) -> None:
        self._keys = _trusted(keys)

    def __repr__(self) -> str:
        if isinstance(self._keys, PublicKey):
            return "Verifier(key_versions=any)"
        return f"Verifier(key_versions={sorted(self._keys)!r})"

    @property
    def key_versions(self) -> frozenset[str] | None:
        """The configured versions, or ``None`` when one key answers to every version."""
        return None if isinstance(self._keys, PublicKey) else frozenset(self._keys)

    def swap(self, keys: PublicKey | Mapping[str, PublicKey]) -> None:
        """Trust ``keys`` from now on instead of the current ones (checked before the swap)."""
        self._keys = _trusted(keys)

    def verify(
        self,
        header: str | None,
        *,
        method: str,
        path: str,
        client_id: str,
        time: str,
        body: bytes,
    ) -> SignatureHeader:
        """Check ``header`` against the content; return it parsed, or raise a SignatureError."""
        if not header:
            raise MissingSignatureError("the message carries no signature")
        parsed = SignatureHeader.parse(header)
        if not parsed.signature:
            raise MissingSignatureError("the signature header has an empty signature")
        keys = self._keys
        key = keys if isinstance(keys, PublicKey) else keys.get(parsed.key_version)
        if key is None:
            raise UnknownKeyVersionError("no public key is configured for this keyVersion")
        content = signing_content(method, path, client_id, time, body)
        try:
            key.rsa.verify(parsed.signature, content, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise InvalidSignatureError("the signature does not match the signed content") from None
        return parsed


def _trusted(keys: PublicKey | Mapping[str, PublicKey]) -> PublicKey | Mapping[str, PublicKey]:
    """An immutable copy of ``keys`` after checking every version could appear in a header."""
    if isinstance(keys, PublicKey):
        return keys
    if not keys:
        raise ValueError("a verifier needs at least one public key")
    for version in keys:
        if not _is_key_version(version):
            raise ValueError(f"keyVersion must be a number, got {version!r}")
    return MappingProxyType(dict(keys))
