"""Antom's signature scheme, byte for byte (fact sheet §4): content, header format, verification."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import re
from dataclasses import dataclass, replace
from urllib.parse import unquote_plus

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vault_service.antom.errors import (
    AntomError,
    InvalidSignatureError,
    MalformedSignatureHeaderError,
    MissingSignatureError,
    SignatureError,
    UnknownKeyVersionError,
)
from vault_service.antom.rsa_keys import PrivateKey
from vault_service.antom.signing import SignatureHeader, Signer, Verifier, signing_content


@dataclass(frozen=True)
class Message:
    """Everything that goes into Antom's signed content."""

    method: str
    path: str
    client_id: str
    time: str
    body: bytes

    def content(self) -> bytes:
        return signing_content(self.method, self.path, self.client_id, self.time, self.body)

    def sign(self, signer: Signer) -> str:
        return signer.sign(self.method, self.path, self.client_id, self.time, self.body)

    def verify(self, verifier: Verifier, header: str | None) -> SignatureHeader:
        return verifier.verify(
            header,
            method=self.method,
            path=self.path,
            client_id=self.client_id,
            time=self.time,
            body=self.body,
        )


# The three worked examples of the fact sheet §4.6, with their byte counts and SHA-256.
WORKED_EXAMPLES = [
    pytest.param(
        Message(
            "POST",
            "/ams/sandbox/api/v1/vaults/createVaultingSession",
            "SANDBOX_5YEXAMPLE00001",
            "1716000000000",
            b'{"paymentMethodType":"CARD","vaultingRequestId":"vr_0001",'
            b'"vaultingNotificationUrl":"https://merchant.example/antom/notify",'
            b'"redirectUrl":"https://merchant.example/return"}',
        ),
        263,
        "b5e5324c6a26f0a75c21c9fb2e71db9c580166824d9c660bf9d9201dceacbb5d",
        id="1-sandbox-create-ms-time-compact",
    ),
    pytest.param(
        Message(
            "POST",
            "/ams/api/v1/vaults/inquireVaulting",
            "5YEXAMPLE00001",
            "2024-05-18T02:40:00+00:00",
            b'{\n   "vaultingRequestId": "vr_0001"\n}',
        ),
        118,
        "759a9d3950af3ed41912931e9c0cdab45e5693120b8ec6674904d4bd057dbbd0",
        id="2-production-inquire-iso-time-indent3",
    ),
    pytest.param(
        Message(
            "POST",
            "/antom/vaulting/notify",
            "SANDBOX_5YEXAMPLE00001",
            "2024-05-18T10:40:05+08:00",
            b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"},'
            b'"vaultingRequestId":"vr_0001","paymentMethodDetail":{"paymentMethodType":"CARD",'
            b'"card":{"cardToken":"tok_x","brand":"VISA"}}}',
        ),
        282,
        "b996db66da33f859d6c2269064c0a27d6050aaafd373384c40ef6a89aab0e105",
        id="3-notification-offset-time",
    ),
]

MESSAGE = Message(
    "POST",
    "/ams/sandbox/api/v1/vaults/createVaultingSession",
    "SANDBOX_5YEXAMPLE00001",
    "1716000000000",
    json.dumps({"vaultingRequestId": "vr_0001", "note": "卡 💳"}, ensure_ascii=False).encode(),
)

# Bytes whose base64 is "+/8=": every character that must be URL-encoded, in one value.
NEEDS_ESCAPES = b"\xfb\xff"


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def signed(key: PrivateKey) -> str:
    """A real header over MESSAGE."""
    return MESSAGE.sign(Signer(key))


def signature_part(header: str) -> str:
    return header.split("signature=", 1)[1]


# -- content -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "length", "sha256"), WORKED_EXAMPLES)
def test_worked_examples_reproduce_byte_count_and_digest(
    message: Message, length: int, sha256: str
) -> None:
    """signing_content builds exactly the §4.6 strings: one space, one LF, dots, raw body."""
    content = message.content()
    assert len(content) == length
    assert hashlib.sha256(content).hexdigest() == sha256


def test_content_keeps_body_bytes_verbatim_and_encodes_the_rest_as_utf8() -> None:
    """The body is never decoded or re-encoded (even invalid UTF-8 passes through); the other
    parts are UTF-8; there is no CR anywhere."""
    body = b'{"a": "\\u00e9"}\r\n\xff'
    content = signing_content("POST", "/p/é", "cid", "t", body)
    assert content == b"POST /p/\xc3\xa9\ncid.t." + body
    assert content.count(b"\r") == body.count(b"\r")


# -- sign / verify -------------------------------------------------------------------------------


def test_sign_verify_round_trip(key: PrivateKey, signed: str) -> None:
    """What the Signer produces, a Verifier holding the matching public key accepts."""
    parsed = MESSAGE.verify(Verifier(key.public_key()), signed)
    assert parsed == SignatureHeader("RSA256", "1", parsed.signature)
    assert len(parsed.signature) == 256  # 2048-bit key


def test_signature_is_plain_pkcs1v15_sha256_over_the_content(key: PrivateKey, signed: str) -> None:
    """Independent of our Verifier: undo the URL and base64 encodings by hand and check the raw
    RSASSA-PKCS1-v1_5/SHA-256 signature with cryptography directly."""
    raw = base64.b64decode(unquote_plus(signature_part(signed)), validate=True)
    key.public_key().rsa.verify(raw, MESSAGE.content(), padding.PKCS1v15(), hashes.SHA256())


def test_signing_is_deterministic(key: PrivateKey, signed: str) -> None:
    """PKCS#1 v1.5 signatures are deterministic; the SDK comparisons rely on it."""
    assert MESSAGE.sign(Signer(key)) == signed


def test_header_format_matches_every_sdk(signed: str) -> None:
    """``algorithm=RSA256,keyVersion=1,signature=<url-encoded base64>``: no spaces, no raw
    ``+ / =`` (Java and PHP split on ``=`` and break otherwise)."""
    assert re.fullmatch(r"algorithm=RSA256,keyVersion=1,signature=[A-Za-z0-9%]+", signed)


def test_signer_key_version_goes_into_header(key: PrivateKey) -> None:
    """A rotated key's version travels in ``keyVersion`` and survives parsing."""
    header = MESSAGE.sign(Signer(key, key_version="2"))
    assert header.startswith("algorithm=RSA256,keyVersion=2,signature=")
    assert MESSAGE.verify(Verifier(key.public_key()), header).key_version == "2"


@pytest.mark.parametrize("version", ["", "v1", "1,2", "1 ", "²", "-1"])
def test_signer_refuses_a_key_version_its_header_could_not_carry(
    key: PrivateKey, version: str
) -> None:
    """A Signer never produces a header our own parser (or Antom) would reject."""
    with pytest.raises(ValueError, match="keyVersion"):
        Signer(key, key_version=version)


@pytest.mark.parametrize(
    "tampered",
    [
        pytest.param(replace(MESSAGE, body=MESSAGE.body + b"\n"), id="body-trailing-newline"),
        pytest.param(
            replace(MESSAGE, body=json.dumps(json.loads(MESSAGE.body), indent=3).encode()),
            id="body-same-json-reformatted",
        ),
        pytest.param(
            replace(MESSAGE, body=json.dumps(json.loads(MESSAGE.body)).encode()),
            id="body-same-json-escaped",
        ),
        pytest.param(
            replace(MESSAGE, path="/ams/api/v1/vaults/createVaultingSession"),
            id="path-production-instead-of-sandbox",
        ),
        pytest.param(replace(MESSAGE, client_id="SANDBOX_5YEXAMPLE00002"), id="client-id"),
        pytest.param(replace(MESSAGE, time="1716000000001"), id="time"),
        pytest.param(replace(MESSAGE, time="2024-05-18T02:40:00+00:00"), id="time-same-instant"),
        pytest.param(replace(MESSAGE, method="post"), id="method-lower-case"),
        pytest.param(replace(MESSAGE, method="GET"), id="method"),
    ],
)
def test_tampering_with_any_part_fails(key: PrivateKey, signed: str, tampered: Message) -> None:
    """Every part of the content is covered and compared byte for byte (no canonicalisation)."""
    with pytest.raises(InvalidSignatureError):
        tampered.verify(Verifier(key.public_key()), signed)


def test_signature_from_another_key_fails(key: PrivateKey, other_key: PrivateKey) -> None:
    """A well-formed signature by an untrusted key is rejected."""
    with pytest.raises(InvalidSignatureError):
        MESSAGE.verify(Verifier(key.public_key()), MESSAGE.sign(Signer(other_key)))


def test_rotation_verifier_with_two_keys_accepts_either(
    key: PrivateKey, other_key: PrivateKey
) -> None:
    """During a key rotation both the old and the new public key are trusted, each under the
    keyVersion it is registered as."""
    old, new = MESSAGE.sign(Signer(key)), MESSAGE.sign(Signer(other_key, "2"))
    verifier = Verifier({"1": key.public_key(), "2": other_key.public_key()})
    assert MESSAGE.verify(verifier, old).key_version == "1"
    assert MESSAGE.verify(verifier, new).key_version == "2"


def test_rotation_old_verifier_rejects_new_key(key: PrivateKey, other_key: PrivateKey) -> None:
    """Before the new key is registered, its signatures are refused (the rotation test above
    therefore proves the second key is really consulted)."""
    with pytest.raises(UnknownKeyVersionError):
        MESSAGE.verify(Verifier({"1": key.public_key()}), MESSAGE.sign(Signer(other_key, "2")))
    with pytest.raises(InvalidSignatureError):
        MESSAGE.verify(Verifier({"1": key.public_key()}), MESSAGE.sign(Signer(other_key)))


def test_key_is_chosen_by_key_version_not_tried_in_turn(
    key: PrivateKey, other_key: PrivateKey
) -> None:
    """Guards version binding: a signature by the version-2 key that claims version 1 (or the
    reverse) is refused, so a retired version's key cannot sign under another number."""
    verifier = Verifier({"1": key.public_key(), "2": other_key.public_key()})
    with pytest.raises(InvalidSignatureError):
        MESSAGE.verify(verifier, MESSAGE.sign(Signer(other_key, "1")))
    with pytest.raises(InvalidSignatureError):
        MESSAGE.verify(verifier, MESSAGE.sign(Signer(key, "2")))


def test_a_signature_without_key_version_means_version_1(
    key: PrivateKey, other_key: PrivateKey
) -> None:
    """Antom's default keyVersion is 1: a header without one is checked with the version-1
    key, and refused when only other versions are configured."""
    header = MESSAGE.sign(Signer(key)).replace("keyVersion=1,", "")
    assert MESSAGE.verify(Verifier({"1": key.public_key()}), header).key_version == "1"
    with pytest.raises(UnknownKeyVersionError):
        MESSAGE.verify(Verifier({"2": key.public_key()}), header)


@pytest.mark.parametrize("versions", [{}, {"v1": 0}, {"": 0}, {"1 ": 0}])
def test_verifier_needs_keys_under_versions_a_header_can_name(
    key: PrivateKey, versions: dict[str, int]
) -> None:
    """An empty trust list or a version no header can carry is a configuration error, not a
    verifier that silently rejects everything."""
    with pytest.raises(ValueError, match=r"at least one|keyVersion"):
        Verifier({version: key.public_key() for version in versions})


def test_swapped_keys_take_effect_for_every_holder(key: PrivateKey, other_key: PrivateKey) -> None:
    """Guards in-place reloads: after ``swap`` the same Signer signs with the new key and the
    same Verifier trusts only the new keys; a rejected swap changes nothing."""
    signer, verifier = Signer(key), Verifier({"1": key.public_key()})
    signer.swap(other_key)
    assert MESSAGE.sign(signer) == MESSAGE.sign(Signer(other_key))
    with pytest.raises(InvalidSignatureError):
        MESSAGE.verify(verifier, MESSAGE.sign(signer))
    verifier.swap({"1": other_key.public_key()})
    MESSAGE.verify(verifier, MESSAGE.sign(signer))
    with pytest.raises(ValueError, match="at least one"):
        verifier.swap({})
    MESSAGE.verify(verifier, MESSAGE.sign(signer))
    assert verifier.key_versions == frozenset({"1"})


@pytest.mark.parametrize(
    "header", [None, "", "algorithm=RSA256,keyVersion=1,signature=", "signature="]
)
def test_missing_signature(key: PrivateKey, header: str | None) -> None:
    """No header, an empty header or an empty signature is MissingSignatureError."""
    with pytest.raises(MissingSignatureError):
        MESSAGE.verify(Verifier(key.public_key()), header)


def test_malformed_header_is_reported_as_malformed_not_invalid(key: PrivateKey) -> None:
    """The Verifier lets the parser's error through rather than reporting a mismatch."""
    with pytest.raises(MalformedSignatureHeaderError):
        MESSAGE.verify(Verifier(key.public_key()), "algorithm=RSA256,keyVersion=1")


@pytest.mark.parametrize("length", [1, 255, 257, 512])
def test_signature_of_wrong_length_is_invalid(key: PrivateKey, length: int) -> None:
    """A signature that is not 256 bytes is a mismatch, not a crash."""
    header = SignatureHeader("RSA256", "1", b"\xff" * length).render()
    with pytest.raises(InvalidSignatureError):
        MESSAGE.verify(Verifier(key.public_key()), header)


def test_signature_errors_form_one_family() -> None:
    """Callers can catch SignatureError for all of them; none is retryable."""
    for error in (
        MalformedSignatureHeaderError,
        InvalidSignatureError,
        MissingSignatureError,
        UnknownKeyVersionError,
    ):
        assert issubclass(error, SignatureError)
        assert issubclass(error, AntomError)
        assert error.retryable is False


def test_signer_and_verifier_repr_show_no_key(key: PrivateKey) -> None:
    """Logging a Signer or a Verifier cannot leak key material; a Signer cannot be pickled."""
    assert repr(Signer(key, "3")) == "Signer(key_version='3')"
    two = Verifier({"2": key.public_key(), "1": key.public_key()})
    assert repr(two) == "Verifier(key_versions=['1', '2'])"
    assert repr(Verifier(key.public_key())) == "Verifier(key_versions=any)"
    with pytest.raises(TypeError):
        pickle.dumps(Signer(key))


# -- header: rendering ---------------------------------------------------------------------------


def test_render_url_encodes_plus_slash_equals() -> None:
    """``+ / =`` become ``%2B %2F %3D`` (upper-case hex, as Python/Java/Go/PHP send)."""
    assert SignatureHeader("RSA256", "1", NEEDS_ESCAPES).render() == (
        "algorithm=RSA256,keyVersion=1,signature=%2B%2F8%3D"
    )


def test_fact_sheet_url_encoding_illustration() -> None:
    """§4.6: base64 ``ab+/cd==`` travels as ``ab%2B%2Fcd%3D%3D`` (that text is not canonical
    base64, so the rendering half uses ``ab+/cQ==``, the canonical spelling of the same bytes)."""
    parsed = SignatureHeader.parse("algorithm=RSA256,keyVersion=7,signature=ab%2B%2Fcd%3D%3D")
    assert parsed == SignatureHeader("RSA256", "7", base64.b64decode("ab+/cd=="))
    assert parsed.render() == "algorithm=RSA256,keyVersion=7,signature=ab%2B%2FcQ%3D%3D"


@settings(max_examples=200)
@given(signature=st.binary(max_size=600), version=st.from_regex(r"[0-9]{1,6}", fullmatch=True))
def test_render_then_parse_round_trips(signature: bytes, version: str) -> None:
    """Anything we render, we parse back unchanged; the rendering has no space and no raw
    ``+ / =`` inside the signature."""
    rendered = SignatureHeader("RSA256", version, signature).render()
    assert " " not in rendered
    assert re.fullmatch(r"[A-Za-z0-9%]*", signature_part(rendered))
    assert SignatureHeader.parse(rendered) == SignatureHeader("RSA256", version, signature)


# -- header: parsing what senders send -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "version"),
    [
        pytest.param("algorithm=RSA256,keyVersion=1,signature=%2B%2F8%3D", "1", id="sdk-form"),
        pytest.param("algorithm=RSA256, keyVersion=1, signature=%2B%2F8%3D", "1", id="docs-spaces"),
        pytest.param("algorithm=RSA256 , keyVersion=1 ,signature=%2B%2F8%3D", "1", id="ragged"),
        pytest.param("algorithm=RSA256,keyVersion=2,signature=%2B%2F8%3D", "2", id="version-2"),
        pytest.param("algorithm=RSA256,keyVersion=10,signature=%2B%2F8%3D", "10", id="version-10"),
        pytest.param("algorithm=RSA256,keyVersion=0,signature=%2B%2F8%3D", "0", id="version-0"),
        pytest.param("algorithm=RSA256,keyVersion=1,signature=%2b%2f8%3d", "1", id="lower-hex"),
        pytest.param("algorithm=RSA256,keyVersion=1,signature=%2B%2f8%3d", "1", id="mixed-hex"),
        pytest.param("algorithm=RSA256,keyVersion=1,signature=+/8=", "1", id="raw-base64"),
        pytest.param("algorithm=RSA256,keyVersion=1,signature=+%2F8=", "1", id="half-encoded"),
        pytest.param("signature=%2B%2F8%3D", "1", id="defaults"),
        pytest.param("keyVersion=3,algorithm=RSA256,signature=%2B%2F8%3D", "3", id="reordered"),
    ],
)
def test_parse_accepts_every_documented_form(value: str, version: str) -> None:
    """SDK form, the docs' ``, `` spacing, any keyVersion, either hex case (.NET sends lower
    case), and raw base64 (``+`` is not turned into a space)."""
    assert SignatureHeader.parse(value) == SignatureHeader("RSA256", version, NEEDS_ESCAPES)


def test_verifier_accepts_docs_spacing_and_lower_case_escapes(key: PrivateKey, signed: str) -> None:
    """A real signature re-spelled as the docs and .NET would spell it still verifies."""
    respelled = signed.replace(",", ", ")
    respelled = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), respelled)
    assert respelled != signed
    MESSAGE.verify(Verifier(key.public_key()), respelled)


def test_verifier_accepts_raw_base64(key: PrivateKey, signed: str) -> None:
    """A sender that forgot to URL-encode (raw ``+ / =``) is still understood."""
    raw = f"algorithm=RSA256,keyVersion=1,signature={unquote_plus(signature_part(signed))}"
    MESSAGE.verify(Verifier(key.public_key()), raw)


def test_unknown_pairs_are_ignored() -> None:
    """Extra name=value pairs (a future field) do not break parsing."""
    parsed = SignatureHeader.parse("algorithm=RSA256,keyVersion=1,charset=UTF-8,signature=AAAA")
    assert parsed == SignatureHeader("RSA256", "1", b"\x00\x00\x00")


# -- header: parsing garbage ---------------------------------------------------------------------

VALID_PREFIX = "algorithm=RSA256,keyVersion=1,"

MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("garbage", id="no-pairs"),
    pytest.param("a,b,c", id="garbage-parts"),
    pytest.param("algorithm=RSA256,keyVersion=1", id="no-signature"),
    pytest.param("algorithm=RSA256;keyVersion=1;signature=AAAA", id="semicolons"),
    pytest.param(VALID_PREFIX + "Signature=AAAA", id="signature-name-case"),
    pytest.param(VALID_PREFIX + "signature=AAAA,", id="trailing-comma"),
    pytest.param("algorithm=RSA256,,signature=AAAA", id="empty-part"),
    pytest.param("=RSA256,signature=AAAA", id="empty-name"),
    pytest.param(VALID_PREFIX + "signature=AAAA,junk", id="garbage-pair"),
    pytest.param(VALID_PREFIX + "signature=!!!!", id="bad-base64-chars"),
    pytest.param(VALID_PREFIX + "signature=AAA", id="bad-base64-padding"),
    pytest.param(VALID_PREFIX + "signature=AA AA", id="space-inside"),
    pytest.param(VALID_PREFIX + "signature=A%ZZA", id="bad-percent-escape"),
    pytest.param(VALID_PREFIX + "signature=%FF%FEAAAA", id="escape-not-utf8"),
    pytest.param(VALID_PREFIX + "signature=%C3%A9AAA", id="escape-not-ascii"),
    pytest.param(VALID_PREFIX + "signature=ÄAAA", id="non-ascii"),
    pytest.param("algorithm=RSA512,keyVersion=1,signature=AAAA", id="wrong-algorithm"),
    pytest.param("algorithm=rsa256,keyVersion=1,signature=AAAA", id="algorithm-case"),
    pytest.param("algorithm=,keyVersion=1,signature=AAAA", id="empty-algorithm"),
    pytest.param("algorithm=RSA256,keyVersion=one,signature=AAAA", id="version-word"),
    pytest.param("algorithm=RSA256,keyVersion=,signature=AAAA", id="version-empty"),
    pytest.param("algorithm=RSA256,keyVersion=-1,signature=AAAA", id="version-negative"),
    pytest.param("algorithm=RSA256,keyVersion=1.0,signature=AAAA", id="version-decimal"),
    pytest.param("algorithm=RSA256,keyVersion=²,signature=AAAA", id="version-superscript"),
    pytest.param("algorithm=RSA256,keyVersion=\u0661,signature=AAAA", id="version-arabic-digit"),
    pytest.param(VALID_PREFIX + "signature=AAAA,signature=AAAA", id="repeated-signature"),
    pytest.param("algorithm=RSA256,algorithm=RSA256,signature=AAAA", id="repeated-algorithm"),
    pytest.param("keyVersion=1,keyVersion=2,signature=AAAA", id="repeated-version"),
    pytest.param(VALID_PREFIX + "signature=" + "A" * 4096, id="oversized"),
]


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_headers_raise_malformed_error(value: str) -> None:
    """Each of these is MalformedSignatureHeaderError (a SignatureError), nothing else."""
    with pytest.raises(MalformedSignatureHeaderError) as caught:
        SignatureHeader.parse(value)
    assert isinstance(caught.value, SignatureError)


def test_header_length_limit_is_above_any_real_header(signed: str) -> None:
    """A 4096-bit signature's header (about 750 characters) is far below the limit."""
    big = SignatureHeader("RSA256", "1", b"\xff" * 512).render()
    assert SignatureHeader.parse(big).signature == b"\xff" * 512
    assert len(signed) < len(big) < 4096


NAMES = st.sampled_from(
    ["algorithm", "keyVersion", "signature", "Signature", "", "x", " signature"]
)
VALUES = (
    st.text(alphabet=st.sampled_from("AZaz09+/=%2BFfC3 ,²\u0661é\x00"), max_size=12) | st.text()
)
PAIRS = st.lists(st.tuples(NAMES, st.sampled_from(["=", "", "=="]), VALUES), max_size=5)
SEPARATORS = st.sampled_from([",", ", ", " ,", ",,"])


@st.composite
def header_like(draw: st.DrawFn) -> str:
    """Text shaped like a Signature header, to reach the checks past the pair splitting."""
    separator = draw(SEPARATORS)
    return separator.join(name + eq + value for name, eq, value in draw(PAIRS))


@settings(max_examples=500)
@given(value=st.text() | header_like() | st.text(min_size=4000, max_size=4200))
@example("algorithm=RSA256,keyVersion=²,signature=AAAA")
@example("signature=%ED%A0%80")
@example("signature=\ud800")
def test_parse_raises_only_malformed_error(value: str) -> None:
    """On any text, parse returns a well-formed header or raises MalformedSignatureHeaderError;
    no ValueError, UnicodeError, IndexError or binascii.Error escapes."""
    try:
        parsed = SignatureHeader.parse(value)
    except MalformedSignatureHeaderError:
        return
    assert parsed.algorithm == "RSA256"
    assert parsed.key_version.isascii()
    assert parsed.key_version.isdigit()
    assert SignatureHeader.parse(parsed.render()) == parsed
