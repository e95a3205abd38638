"""Key loading: every form Antom and operators use loads; everything else is a clear error."""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import pickle
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from vault_service.antom.rsa_keys import (
    KeyFormatError,
    PrivateKey,
    ensure_key_pair,
    load_private_key,
    load_public_key,
    read_private_key_file,
    read_public_key_file,
)


def bare(pem: bytes) -> str:
    """The one-line base64 body of a PEM block, as Antom's dashboard hands keys out."""
    return "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))


def der(tag: int, content: bytes) -> bytes:
    """One short-form DER element (enough for the hand-made keys below)."""
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


# EC keys on secp112r1 (OID 1.3.132.0.6), which cryptography refuses with UnsupportedAlgorithm
# rather than ValueError; built by hand so that no PEM private key sits in the repository.
_SECP112R1 = der(
    0x30, der(0x06, bytes.fromhex("2a8648ce3d0201")) + der(0x06, b"\x2b\x81\x04\x00\x06")
)
UNSUPPORTED_CURVE_PRIVATE = der(
    0x30,
    der(0x02, b"\x00")
    + _SECP112R1
    + der(0x04, der(0x30, der(0x02, b"\x01") + der(0x04, b"\x01" * 14))),
)
UNSUPPORTED_CURVE_PUBLIC = der(0x30, _SECP112R1 + der(0x03, b"\x00\x04" + b"\x01" * 28))


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def private_forms(key: PrivateKey) -> dict[str, bytes | str]:
    pkcs8, pkcs1 = key.to_pkcs8_pem(), key.to_pkcs1_pem()
    return {
        "pkcs8-pem": pkcs8,
        "pkcs1-pem": pkcs1,
        "pkcs8-pem-str": pkcs8.decode(),
        "pkcs8-pem-crlf": pkcs8.replace(b"\n", b"\r\n"),
        "pkcs8-pem-indented": b"\n  " + pkcs8.replace(b"\n", b"\n  ") + b"\n\n",
        "pkcs8-base64": bare(pkcs8),
        "pkcs1-base64": bare(pkcs1),
        "pkcs8-base64-bytes": bare(pkcs8).encode(),
        "pkcs8-base64-64-columns": "\n".join(pkcs8.decode().splitlines()[1:-1]),
        "pkcs1-base64-padded": f"  {bare(pkcs1)}\n",
    }


@pytest.fixture(scope="module")
def public_forms(key: PrivateKey) -> dict[str, bytes | str]:
    public = key.public_key()
    pkcs1 = public.rsa.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    return {
        "spki-pem": public.to_spki_pem(),
        "spki-base64": public.to_spki_base64(),
        "spki-base64-from-pem": bare(public.to_spki_pem()),
        "pkcs1-pem": pkcs1,
        "pkcs1-base64": bare(pkcs1),
    }


@pytest.fixture(scope="module")
def short_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


PRIVATE_FORMS = [
    "pkcs8-pem",
    "pkcs1-pem",
    "pkcs8-pem-str",
    "pkcs8-pem-crlf",
    "pkcs8-pem-indented",
    "pkcs8-base64",
    "pkcs1-base64",
    "pkcs8-base64-bytes",
    "pkcs8-base64-64-columns",
    "pkcs1-base64-padded",
]
PUBLIC_FORMS = ["spki-pem", "spki-base64", "spki-base64-from-pem", "pkcs1-pem", "pkcs1-base64"]


# -- forms that load -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", PRIVATE_FORMS)
def test_private_key_forms_load(
    key: PrivateKey, private_forms: dict[str, bytes | str], form: str
) -> None:
    """PKCS#8 and PKCS#1, PEM or bare base64, str or bytes, any line breaks: the same key."""
    loaded = load_private_key(private_forms[form])
    assert loaded.rsa.private_numbers() == key.rsa.private_numbers()


@pytest.mark.parametrize("form", PUBLIC_FORMS)
def test_public_key_forms_load(
    key: PrivateKey, public_forms: dict[str, bytes | str], form: str
) -> None:
    """SubjectPublicKeyInfo (what Antom hands out) and PKCS#1, PEM or bare base64."""
    loaded = load_public_key(public_forms[form])
    assert loaded.rsa.public_numbers() == key.rsa.public_key().public_numbers()


def test_exports_reload(key: PrivateKey) -> None:
    """What the wrappers export (for files and for the SDK) loads back as the same key."""
    for exported in (key.to_pkcs8_pem(), key.to_pkcs1_pem()):
        assert load_private_key(exported).rsa.private_numbers() == key.rsa.private_numbers()
    public = key.public_key()
    assert b"BEGIN PUBLIC KEY" in public.to_spki_pem()
    assert load_public_key(public.to_spki_base64()).rsa.public_numbers() == (
        public.rsa.public_numbers()
    )


# -- forms that do not ---------------------------------------------------------------------------

NOT_PRIVATE = "not an unencrypted PKCS#8 or PKCS#1 private key"
NOT_PUBLIC = "not a SubjectPublicKeyInfo or PKCS#1 public key"
GARBAGE = [
    pytest.param("", "the key is empty", "the key is empty", id="empty-str"),
    pytest.param(b"", "the key is empty", "the key is empty", id="empty-bytes"),
    pytest.param(" \n\t ", "the key is empty", "the key is empty", id="whitespace"),
    pytest.param(
        "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n", "empty", "empty", id="armour"
    ),
    pytest.param("not a key!", "neither PEM nor base64", "neither PEM nor base64", id="text"),
    pytest.param("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", NOT_PRIVATE, NOT_PUBLIC, id="truncated"),
    pytest.param(
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCB", "neither PEM", "neither PEM", id="bad-padding"
    ),
    pytest.param(
        base64.b64encode(hashlib.sha512(b"noise").digest() * 8), NOT_PRIVATE, NOT_PUBLIC, id="noise"
    ),
    pytest.param("clé", "neither PEM nor base64", "neither PEM nor base64", id="non-ascii"),
    pytest.param(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n",
        "neither PEM nor base64",
        "neither PEM nor base64",
        id="legacy-encrypted-pem",
    ),
]


@pytest.mark.parametrize(("data", "message", "_"), GARBAGE)
def test_garbage_private_key_is_a_key_format_error(data: bytes | str, message: str, _: str) -> None:
    """Empty, non-base64, truncated and random input each give a KeyFormatError that says why."""
    with pytest.raises(KeyFormatError, match=re.escape(message)):
        load_private_key(data)


@pytest.mark.parametrize(("data", "_", "message"), GARBAGE)
def test_garbage_public_key_is_a_key_format_error(data: bytes | str, _: str, message: str) -> None:
    """The same inputs refused as public keys, with the public-key wording."""
    with pytest.raises(KeyFormatError, match=re.escape(message)):
        load_public_key(data)


def test_short_private_key_is_refused(short_key: rsa.RSAPrivateKey) -> None:
    """1024-bit keys are refused (Antom's RSA256 uses 2048-bit keys), naming both sizes."""
    pem = short_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFormatError, match="at least 2048 bits, got 1024"):
        load_private_key(pem)


def test_short_public_key_is_refused(short_key: rsa.RSAPrivateKey) -> None:
    """A 1024-bit public key is refused too (no verifying against a weak Antom key)."""
    pem = short_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match="at least 2048 bits, got 1024"):
        load_public_key(pem)


@pytest.mark.parametrize("form", ["pkcs8-pem", "pkcs1-pem", "pkcs8-base64", "pkcs1-base64"])
def test_private_key_given_as_public_key(private_forms: dict[str, bytes | str], form: str) -> None:
    """Pasting the private key where Antom's public key belongs is named as exactly that."""
    with pytest.raises(KeyFormatError, match="this is a private key, but a public key is expected"):
        load_public_key(private_forms[form])


@pytest.mark.parametrize("form", ["spki-pem", "spki-base64", "pkcs1-base64"])
def test_public_key_given_as_private_key(public_forms: dict[str, bytes | str], form: str) -> None:
    """The opposite mix-up is named too."""
    with pytest.raises(KeyFormatError, match="this is a public key, but a private key is expected"):
        load_private_key(public_forms[form])


def test_encrypted_private_key_is_refused(key: PrivateKey) -> None:
    """The service has no passphrase to give: an encrypted PKCS#8 key is a KeyFormatError."""
    pem = key.rsa.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyFormatError, match="unencrypted"):
        load_private_key(pem)


def test_non_rsa_keys_are_refused() -> None:
    """An Ed25519 key parses but is not RSA: KeyFormatError, private and public."""
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(KeyFormatError, match="not an RSA key"):
        load_private_key(
            ed.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with pytest.raises(KeyFormatError, match="not an RSA key"):
        load_public_key(
            ed.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


@pytest.mark.parametrize(
    ("loader", "data"),
    [
        pytest.param(load_private_key, UNSUPPORTED_CURVE_PRIVATE, id="private"),
        pytest.param(load_public_key, UNSUPPORTED_CURVE_PUBLIC, id="public"),
    ],
)
def test_key_of_unsupported_algorithm_is_a_key_format_error(
    loader: Callable[[str], object], data: bytes
) -> None:
    """cryptography raises UnsupportedAlgorithm (not a ValueError) for some keys; the loaders
    still answer KeyFormatError (regression: it used to escape)."""
    with pytest.raises(KeyFormatError, match="not an RSA key"):
        loader(base64.b64encode(data).decode())


# -- the wrappers keep the key to themselves -----------------------------------------------------


def test_private_key_repr_and_str_hide_the_key(key: PrivateKey) -> None:
    """repr, str, format and containers print a fixed text, never a number or base64 of the key."""
    expected = "PrivateKey(<2048-bit RSA, hidden>)"
    numbers = key.rsa.private_numbers()
    secrets = [str(numbers.d), f"{numbers.d:x}", str(numbers.p), bare(key.to_pkcs8_pem())[40:80]]
    for shown in (repr(key), str(key), f"{key}", f"{key!r}", repr([key]), str({"k": key})):
        assert expected in shown
        assert not any(secret in shown for secret in secrets)
    assert repr(key) == expected


def test_public_key_repr(key: PrivateKey) -> None:
    """The public wrapper prints its size only (short, stable log lines)."""
    assert repr(key.public_key()) == "PublicKey(<2048-bit RSA>)"
    assert str(key.public_key()) == "PublicKey(<2048-bit RSA>)"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_private_key_cannot_be_pickled(key: PrivateKey, protocol: int) -> None:
    """No protocol can serialise the private key (into a cache, a queue, a crash dump...)."""
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(key, protocol=protocol)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps({"nested": [key]}, protocol=protocol)


def test_private_key_cannot_be_copied_or_given_attributes(key: PrivateKey) -> None:
    """Copying goes through the same refusal; slots leave no __dict__ to stash material in."""
    with pytest.raises(TypeError):
        copy.deepcopy(key)
    with pytest.raises(AttributeError):
        key.pem = b"..."  # type: ignore[attr-defined]


def test_generate_makes_2048_bit_keys() -> None:
    """The default generated key meets the minimum size the loaders enforce."""
    assert PrivateKey.generate().rsa.key_size == 2048


# -- files ---------------------------------------------------------------------------------------


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask, so that only the code decides the private key's mode."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_zero")
def test_ensure_key_pair_creates_0600_private_key(tmp_path: Path) -> None:
    """A missing pair is generated: PKCS#8 PEM private key with mode 0600 (whatever the umask),
    SPKI PEM public key, parent directories created, both files matching the returned keys."""
    private_path, public_path = tmp_path / "keys" / "dev" / "merchant.pem", tmp_path / "pub.pem"
    key, public = ensure_key_pair(private_path, public_path)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert read_private_key_file(private_path).rsa.private_numbers() == key.rsa.private_numbers()
    assert read_public_key_file(public_path).rsa.public_numbers() == public.rsa.public_numbers()
    assert public.rsa.public_numbers() == key.rsa.public_key().public_numbers()


def test_ensure_key_pair_reloads_existing_keys(tmp_path: Path) -> None:
    """An existing pair is loaded, not regenerated, and its files are left untouched."""
    private_path, public_path = tmp_path / "merchant.pem", tmp_path / "merchant.pub.pem"
    first, _ = ensure_key_pair(private_path, public_path)
    files = private_path.read_bytes(), public_path.read_bytes()
    again, public = ensure_key_pair(private_path, public_path)
    assert again.rsa.private_numbers() == first.rsa.private_numbers()
    assert public.rsa.public_numbers() == first.rsa.public_key().public_numbers()
    assert (private_path.read_bytes(), public_path.read_bytes()) == files


def test_ensure_key_pair_uses_an_operator_supplied_private_key(
    key: PrivateKey, tmp_path: Path
) -> None:
    """A private key put in place by hand (PKCS#1 here) is used, and its public half written."""
    private_path, public_path = tmp_path / "merchant.pem", tmp_path / "merchant.pub.pem"
    private_path.write_bytes(key.to_pkcs1_pem())
    loaded, public = ensure_key_pair(private_path, public_path)
    assert loaded.rsa.private_numbers() == key.rsa.private_numbers()
    assert load_public_key(public_path.read_bytes()).rsa.public_numbers() == (
        public.rsa.public_numbers()
    )
    assert private_path.read_bytes() == key.to_pkcs1_pem()


def test_ensure_key_pair_does_not_replace_a_broken_private_key(tmp_path: Path) -> None:
    """A corrupt private key file is an error naming the file, never silently regenerated."""
    private_path = tmp_path / "merchant.pem"
    private_path.write_text("garbage!")
    with pytest.raises(KeyFormatError, match=r"merchant\.pem: the key is neither PEM nor base64"):
        ensure_key_pair(private_path, tmp_path / "merchant.pub.pem")
    assert private_path.read_text() == "garbage!"


def test_key_file_errors_name_the_file(key: PrivateKey, tmp_path: Path) -> None:
    """read_*_key_file prefix the path so an operator knows which setting is wrong."""
    swapped = tmp_path / "antom-public.pem"
    swapped.write_bytes(key.to_pkcs8_pem())
    with pytest.raises(KeyFormatError, match=r"antom-public\.pem: this is a private key"):
        read_public_key_file(swapped)
    empty = tmp_path / "merchant.pem"
    empty.write_bytes(b"")
    with pytest.raises(KeyFormatError, match=r"merchant\.pem: the key is empty"):
        read_private_key_file(empty)
