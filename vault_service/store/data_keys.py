"""Data keys: the AES-256-GCM keys that encrypt card data at rest, and their stored envelope.

A key file (``VAULT_DATA_KEY_FILE``, typically a Kubernetes secret mount) holds a *ring* of keys
rather than one, so that keys can rotate without re-encrypting the database in the same instant:

    {"active": "2026a", "keys": {"2026a": "<base64 of 32 random bytes>", "2025b": "..."}}

New data is always encrypted under ``active``; every key of the ring decrypts. Each stored value
names the key that sealed it, so rows written before a rotation still decrypt while
``vault-service rotate-data-key`` re-encrypts them, after which the old key can be removed.

The envelope is text, ``v1:<key id>:<base64url(nonce || ciphertext || tag)>``: it fits the
existing ``text`` token columns unchanged (no migration), and an operator can see in SQL which
key a row needs. The associated data is the envelope's header plus a *context* the caller
chooses (the column and the row's vaulting request id, see :mod:`vault_service.store.sealing`),
so a ciphertext copied to another row or column does not decrypt. A 96-bit random nonce per
encryption is safe for far more encryptions under one key than a card vault will ever make
(the NIST limit is 2**32).

The nonce comes from OpenSSL's CSPRNG (``ssl.RAND_bytes``: a DRBG seeded from the kernel,
reseeded after a fork), not from ``os.urandom``: both are cryptographically strong, but
``os.urandom`` releases the GIL for its system call, and on the SQLite store's thread each
release hands the GIL to the busy event loop, which keeps it for up to a switch interval
(5 ms): one store write seals four values, so a notification's apply waited for the event
loop four times (measured: 180 us per nonce with another thread busy, against 1.2 us).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault_service.errors import ConfigurationError, InternalError
from vault_service.store.base import CorruptDataError, StoreError

ENVELOPE_VERSION: Final = "v1"
ENVELOPE_PREFIX: Final = f"{ENVELOPE_VERSION}:"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_KEY_ID_RULE: Final = "1-32 characters of A-Z, a-z, 0-9, '_' and '-'"
_FILE_MODE: Final = 0o600


class DataKeyFileError(ConfigurationError):
    """The key file is unreadable or malformed; the message says what is wrong, never what the
    key material is."""


class UnknownDataKeyError(StoreError, InternalError):
    """A stored value was sealed under a key id the ring does not hold (removed too early, or a
    key file from another deployment); the message names the key id only."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"stored card data is encrypted under data key {key_id!r}, which "
            "VAULT_DATA_KEY_FILE does not hold: add it back to the key file"
        )
        self.key_id = key_id


class DataKey:
    """One AES-256-GCM key; its repr names the key id and never the material."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key_id: str, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise DataKeyFileError(
                f"data key {key_id!r} has {len(material)} bytes; AES-256 needs {KEY_BYTES}"
            )
        self.key_id = key_id
        self._aead = AESGCM(material)

    def __repr__(self) -> str:
        return f"DataKey({self.key_id!r}, <AES-256, hidden>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("data keys are not picklable")


class _Keys(NamedTuple):
    """A ring's keys and its active one: replaced as one reference by :meth:`DataKeyRing.swap`."""

    active: DataKey
    by_id: dict[str, DataKey]


class DataKeyRing:
    """The keys of a key file: seals under the active key, opens under whichever key sealed.

    One ring object serves a process for its lifetime: a reload of the key file (SIGHUP)
    swaps new keys into it (:meth:`swap`), so every store sealing with it sees them at once. Each
    method reads the keys once (a single reference), so a swap from the event loop while the
    SQLite store's thread seals or opens never mixes the old ring with the new one.
    """

    __slots__ = ("_keys",)

    def __init__(self, active: str, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise DataKeyFileError("the data key file holds no keys")
        for key_id in keys:
            _check_key_id(key_id)
        if active not in keys:
            raise DataKeyFileError(f"the active data key {active!r} is not among the keys")
        by_id = {key_id: DataKey(key_id, material) for key_id, material in keys.items()}
        self._keys = _Keys(by_id[active], by_id)

    @classmethod
    def generate(cls, key_id: str | None = None) -> DataKeyRing:
        """A ring of one new random key, active (tests build stores with it)."""
        key_id = key_id or new_key_id()
        return cls(key_id, {key_id: secrets.token_bytes(KEY_BYTES)})

    @property
    def active_key_id(self) -> str:
        return self._keys.active.key_id

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys.by_id)

    def swap(self, other: DataKeyRing) -> None:
        """Take ``other``'s keys (a reloaded key file) in one step."""
        self._keys = other._keys

    def seal(self, plaintext: bytes, context: bytes) -> str:
        """``plaintext`` encrypted under the active key, bound to ``context``."""
        active = self._keys.active
        nonce = ssl.RAND_bytes(NONCE_BYTES)  # fresh random bytes (module docstring)
        header = _header(active.key_id)
        sealed = active._aead.encrypt(nonce, plaintext, header.encode() + context)
        return header + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, envelope: str, context: bytes) -> bytes:
        """The plaintext of ``envelope``, which must have been sealed with this ``context``.

        Raises :class:`UnknownDataKeyError` for a key id the ring lacks and
        :class:`~vault_service.store.base.CorruptDataError` for anything that does not
        authenticate (tampered, truncated, or moved from another row).
        """
        key_id, payload = _split(envelope)
        key = self._keys.by_id.get(key_id)
        if key is None:
            raise UnknownDataKeyError(key_id)
        try:
            return key._aead.decrypt(
                payload[:NONCE_BYTES], payload[NONCE_BYTES:], _header(key_id).encode() + context
            )
        except InvalidTag:
            raise CorruptDataError(
                f"encrypted card data under data key {key_id!r} does not authenticate: it was "
                "altered or belongs to another row"
            ) from None

    def is_current(self, envelope: str) -> bool:
        """Whether ``envelope`` is sealed under the active key (rotation leaves it alone)."""
        return envelope_key_id(envelope) == self._keys.active.key_id

    def __repr__(self) -> str:
        keys = self._keys
        return f"DataKeyRing(active={keys.active.key_id!r}, keys={sorted(keys.by_id)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("data key rings are not picklable")


def is_envelope(value: str) -> bool:
    """Whether a stored value is an envelope rather than legacy plaintext (written before card
    data was encrypted: card tokens from Antom never start with the envelope prefix)."""
    return value.startswith(ENVELOPE_PREFIX)


def envelope_key_id(value: str) -> str | None:
    """The key id an envelope was sealed under; ``None`` for legacy plaintext."""
    return _split(value)[0] if is_envelope(value) else None


def new_key_id() -> str:
    """A fresh key id: the UTC date (so operators see which key is older) and a random part."""
    return f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def parse_data_key_file(data: bytes) -> DataKeyRing:
    """The ring a key file's contents describe; :class:`DataKeyFileError` says what is wrong."""
    active, encoded = _parse_document(data)
    keys: dict[str, bytes] = {}
    for key_id, value in encoded.items():
        _check_key_id(key_id)
        if not isinstance(value, str):
            raise DataKeyFileError(f"data key {key_id!r} must be a base64 string")
        try:
            keys[key_id] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise DataKeyFileError(f"data key {key_id!r} is not valid base64") from None
    return DataKeyRing(active, keys)


def read_data_key_file(path: Path) -> DataKeyRing:
    """Load the ring in ``path`` (blocking: call it through ``asyncio.to_thread``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataKeyFileError(f"{path}: cannot read the data key file: {exc.strerror}") from None
    try:
        return parse_data_key_file(data)
    except DataKeyFileError as exc:
        raise DataKeyFileError(f"{path}: {exc}") from None


def add_data_key(path: Path, *, key_id: str | None = None, activate: bool = True) -> str:
    """Add a new random key to the key file at ``path`` (created, mode 0600, if absent) and,
    with ``activate``, make it the active key; returns its id.

    The file is replaced atomically (a reader sees the old or the new ring, never half of
    one), keeping every existing key so that data sealed under them still decrypts.
    """
    key_id = key_id or new_key_id()
    _check_key_id(key_id)
    if path.exists():
        existing = path.read_bytes()
        parse_data_key_file(existing)  # refuse to extend a broken file
        active, keys = _parse_document(existing)
    else:
        active, keys = key_id, {}
    if key_id in keys:
        raise DataKeyFileError(f"{path}: data key {key_id!r} exists already")
    keys = {**keys, key_id: base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")}
    document = {"active": key_id if activate else active, "keys": keys}
    _write_private(path, json.dumps(document, indent=2).encode() + b"\n")
    return key_id


def _parse_document(data: bytes) -> tuple[str, dict[str, object]]:
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (
            f" (line {exc.lineno} column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise DataKeyFileError(f"the data key file is not JSON{where}") from None
    if not isinstance(document, dict) or set(document) != {"active", "keys"}:
        raise DataKeyFileError(
            'the data key file must be a JSON object {"active": KEY_ID, "keys": {KEY_ID: '
            "BASE64, ...}} and nothing else"
        )
    active, keys = document["active"], document["keys"]
    if not isinstance(active, str) or not KEY_ID_PATTERN.fullmatch(active):
        raise DataKeyFileError(f'"active" must be a key id: {_KEY_ID_RULE}')
    if not isinstance(keys, dict):
        raise DataKeyFileError('"keys" must be a JSON object of key id -> base64 key')
    return active, keys


def _check_key_id(key_id: str) -> None:
    # The offending id is not echoed: a malformed file may have a key where an id belongs.
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise DataKeyFileError(f"a data key id is malformed: key ids are {_KEY_ID_RULE}")


def _header(key_id: str) -> str:
    return f"{ENVELOPE_PREFIX}{key_id}:"


def _split(envelope: str) -> tuple[str, bytes]:
    """An envelope's key id and decoded payload; CorruptDataError when it is not well formed."""
    version, _, rest = envelope.partition(":")
    key_id, colon, encoded = rest.partition(":")
    if version != ENVELOPE_VERSION or not colon or not KEY_ID_PATTERN.fullmatch(key_id):
        raise CorruptDataError("encrypted card data has a malformed header")
    try:
        payload = base64.b64decode(encoded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise CorruptDataError(
            f"encrypted card data under data key {key_id!r} is not valid base64url"
        ) from None
    if len(payload) < NONCE_BYTES + TAG_BYTES:
        raise CorruptDataError(f"encrypted card data under data key {key_id!r} is truncated")
    return key_id, payload


def _write_private(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` through a 0600 temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
