"""The data key file and the envelope: strict parsing, hidden keys, authenticated sealing."""

from __future__ import annotations

import base64
import json
import os
import ssl
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault_service.store import CorruptDataError
from vault_service.store.data_keys import (
    DataKeyFileError,
    DataKeyRing,
    UnknownDataKeyError,
    add_data_key,
    envelope_key_id,
    parse_data_key_file,
    read_data_key_file,
)

MATERIAL = base64.b64encode(bytes(range(32))).decode()


def key_file(document: object) -> bytes:
    return json.dumps(document).encode()


def test_a_key_file_loads_with_its_active_key() -> None:
    ring = parse_data_key_file(key_file({"active": "b", "keys": {"a": MATERIAL, "b": MATERIAL}}))
    assert ring.active_key_id == "b"
    assert ring.key_ids == {"a", "b"}


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (b"not json", "not JSON (line 1 column 1)"),
        (key_file(["a"]), "must be a JSON object"),
        (key_file({"active": "a", "keys": {"a": MATERIAL}, "extra": 1}), "and nothing else"),
        (key_file({"active": "a", "keys": {}}), "holds no keys"),
        (key_file({"active": "a b", "keys": {"a": MATERIAL}}), '"active" must be a key id'),
        (key_file({"active": "a", "keys": ["a"]}), '"keys" must be a JSON object'),
        (key_file({"active": "a", "keys": {"b": MATERIAL}}), "active data key 'a' is not among"),
        (key_file({"active": "a", "keys": {"a": 5}}), "'a' must be a base64 string"),
        (key_file({"active": "a", "keys": {"a": "***"}}), "'a' is not valid base64"),
        (key_file({"active": "a", "keys": {"a": MATERIAL[:24]}}), "AES-256 needs 32"),
        (key_file({"active": "a", "keys": {"a": MATERIAL, "x" * 33: MATERIAL}}), "malformed"),
    ],
)
def test_malformed_key_files_are_refused_clearly(contents: bytes, message: str) -> None:
    """Guards the operator's message for each mistake; none may echo key material."""
    with pytest.raises(DataKeyFileError) as refused:
        parse_data_key_file(contents)
    assert message in str(refused.value)
    assert MATERIAL not in str(refused.value)
    assert MATERIAL[:24] not in str(refused.value)


def test_a_key_in_the_place_of_a_key_id_is_not_echoed() -> None:
    """Guards against a swapped id and key (a common hand-editing slip) printing the key."""
    with pytest.raises(DataKeyFileError) as refused:
        parse_data_key_file(key_file({"active": "a", "keys": {"a": MATERIAL, MATERIAL: "a"}}))
    assert MATERIAL not in str(refused.value)


def test_keys_never_show_in_repr_or_str() -> None:
    """Guards logs and tracebacks: a ring (or a key) printed by accident shows no material."""
    ring = parse_data_key_file(key_file({"active": "a", "keys": {"a": MATERIAL}}))
    material = bytes(range(32))
    for shown in (repr(ring), str(ring), repr(ring._keys.active), str(ring._keys)):
        assert MATERIAL not in shown
        assert repr(material) not in shown
        assert material.hex() not in shown
    assert repr(ring) == "DataKeyRing(active='a', keys=['a'])"


def test_a_sealed_value_opens_only_with_its_context() -> None:
    """Guards the row binding: the same ciphertext under another context fails to open."""
    ring = DataKeyRing.generate("k1")
    envelope = ring.seal(b"ALIPAY-secret", b"records.card_token:a")
    assert envelope.startswith("v1:k1:")
    assert "ALIPAY" not in envelope
    assert envelope_key_id(envelope) == "k1"
    assert ring.open(envelope, b"records.card_token:a") == b"ALIPAY-secret"
    with pytest.raises(CorruptDataError, match="belongs to another row"):
        ring.open(envelope, b"records.card_token:b")
    assert ring.seal(b"ALIPAY-secret", b"c") != ring.seal(b"ALIPAY-secret", b"c")  # fresh nonces


def test_every_seal_takes_twelve_fresh_bytes_of_openssl_randomness_as_its_nonce(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards the nonce source: 96 random bits per seal from a CSPRNG, never a counter."""
    drawn: list[bytes] = []

    def rand_bytes(n: int) -> bytes:
        assert n == 12
        drawn.append(os.urandom(n))
        return drawn[-1]

    monkeypatch.setattr(ssl, "RAND_bytes", rand_bytes)
    ring = DataKeyRing.generate("k1")
    envelopes = [ring.seal(b"ALIPAY-secret", b"c") for _ in range(3)]
    nonces = [base64.urlsafe_b64decode(e.removeprefix("v1:k1:"))[:12] for e in envelopes]
    assert nonces == drawn


def test_seals_never_repeat_a_nonce() -> None:
    ring = DataKeyRing.generate("k1")
    envelopes = [ring.seal(b"x", b"c") for _ in range(2000)]
    assert len({base64.urlsafe_b64decode(e[6:])[:12] for e in envelopes}) == 2000


def test_an_envelope_sealed_with_an_os_urandom_nonce_still_opens() -> None:
    """A value sealed before nonces came from OpenSSL (os.urandom) reads as before."""
    material = bytes(range(32))
    nonce = os.urandom(12)
    sealed = AESGCM(material).encrypt(nonce, b"ALIPAY-old", b"v1:old:" + b"records.sealed:a")
    envelope = "v1:old:" + base64.urlsafe_b64encode(nonce + sealed).decode()
    ring = DataKeyRing("old", {"old": material})
    assert ring.open(envelope, b"records.sealed:a") == b"ALIPAY-old"


@pytest.mark.parametrize(
    "tamper",
    [
        # A ciphertext character away from the end: the last base64 group may carry padding
        # bits that decode to the same bytes (this flaked once in 20 runs at e[-2]).
        lambda e: e[:-10] + ("A" if e[-10] != "A" else "B") + e[-9:],
        lambda e: e[:20],  # truncated
        lambda e: e + "!",  # not base64url
        lambda e: "v1:k1" + e[5:].replace(":", ";", 1),  # header without its separator
        lambda e: "v2" + e[2:],  # unknown envelope version
    ],
)
def test_a_tampered_envelope_is_corrupt_data(tamper: Callable[[str], str]) -> None:
    ring = DataKeyRing.generate("k1")
    envelope = ring.seal(b"ALIPAY-secret", b"ctx")
    with pytest.raises(CorruptDataError) as refused:
        ring.open(tamper(envelope), b"ctx")
    assert "ALIPAY" not in str(refused.value)


def test_an_unknown_key_id_names_the_key_and_nothing_else() -> None:
    envelope = DataKeyRing.generate("retired").seal(b"ALIPAY-secret", b"ctx")
    with pytest.raises(UnknownDataKeyError, match="data key 'retired'") as refused:
        DataKeyRing.generate("k2").open(envelope, b"ctx")
    assert refused.value.key_id == "retired"
    assert envelope.split(":")[2] not in str(refused.value)


def test_add_data_key_creates_a_private_file_and_keeps_old_keys(tmp_path: Path) -> None:
    """Guards rotation's first step: the new key becomes active, the old one still opens what
    it sealed, and the file is readable by its owner only."""
    path = tmp_path / "keys" / "data-keys.json"
    first = add_data_key(path)
    envelope = read_data_key_file(path).seal(b"ALIPAY-secret", b"ctx")
    second = add_data_key(path, key_id="k2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = read_data_key_file(path)
    assert ring.active_key_id == "k2"
    assert ring.key_ids == frozenset({first, "k2"})
    assert ring.open(envelope, b"ctx") == b"ALIPAY-secret"
    staged = add_data_key(path, activate=False)
    assert read_data_key_file(path).active_key_id == second
    with pytest.raises(DataKeyFileError, match="exists already"):
        add_data_key(path, key_id=staged)
    assert sorted(p.name for p in path.parent.iterdir()) == ["data-keys.json"]


def test_add_data_key_refuses_to_extend_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "data-keys.json"
    path.write_text('{"active": "a", "keys": {"a": "short"}}')
    with pytest.raises(DataKeyFileError):
        add_data_key(path)
    assert path.read_text() == '{"active": "a", "keys": {"a": "short"}}'


def test_reading_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataKeyFileError, match=r"absent\.json: cannot read"):
        read_data_key_file(tmp_path / "absent.json")
