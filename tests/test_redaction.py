"""The text scrubber behind the log pipeline: every secret shape goes, ordinary text stays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault_service import redaction
from vault_service.antom import PrivateKey, Signer
from vault_service.redaction import REDACTED, redact

CARD_TOKEN = "ALIPAYq3Jx0mZ8Hn2bV5cR7tY9uI1oP4aS6dF8gH0jK2lZ4xC"


def pem_body(pem: bytes) -> str:
    return "".join(pem.decode().splitlines()[1:-1])


def test_a_pem_private_key_is_scrubbed_whole(merchant_key: PrivateKey) -> None:
    """A key pasted into an error message (a failed load, a repr) leaves not one line behind."""
    pem = merchant_key.to_pkcs8_pem().decode().strip()
    text = redact(f"could not load key {pem} from file")
    assert text == f"could not load key {REDACTED} from file"


def test_a_truncated_pem_block_is_scrubbed_to_the_end(merchant_key: PrivateKey) -> None:
    """A message cut short mid-key has no END line; everything after BEGIN is key material."""
    pem = merchant_key.to_pkcs8_pem().decode()
    assert redact("key: " + pem[: len(pem) // 2]) == "key: " + REDACTED


def test_bare_base64_keys_are_scrubbed(merchant_key: PrivateKey) -> None:
    """The Antom dashboard hands keys out as bare base64, with no PEM armour to recognise."""
    private = pem_body(merchant_key.to_pkcs8_pem())
    public = pem_body(merchant_key.public_key().to_spki_pem())
    for key in (private, public):
        text = redact(f"key={key!r}; public {key}")
        assert key not in text
        assert not any(line in text for line in _chunks(key, 32))


def test_signature_header_values_are_scrubbed(merchant_key: PrivateKey) -> None:
    """The Signature header is URL-encoded base64 that %2B/%2F split into short runs, so it is
    recognised by its name, as a header, a dict entry or a query-string value."""
    header = Signer(merchant_key).sign(
        "POST", "/notify", "SANDBOX_X", "2024-01-01T00:00:00Z", b"{}"
    )
    value = header.rpartition("signature=")[2]
    for text in (
        f"Signature: {header}",
        f"headers {{'signature': '{header}'}}",
        f'{{"Signature": "{header}"}}',
        f"signature={value}&x=1",
    ):
        scrubbed = redact(text)
        assert value not in scrubbed, scrubbed
        assert not any(part in scrubbed for part in _chunks(value, 12)), scrubbed
        assert REDACTED in scrubbed


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "378282246310005",
        "6011000990139424",
        "4000000000003220",
        "4222222222222",
        "6250941006528599",
        "4000000000000000006",
    ],
)
def test_card_numbers_are_scrubbed(number: str) -> None:
    """13-19 Luhn-valid digits, in one block or grouped by spaces or dashes, anywhere."""
    for text in (
        f"cardNo {number} declined",
        f"vr-{number}",
        f"[{number}]",
        f"{number}",
    ):
        scrubbed = redact(text)
        assert number not in scrubbed
        assert REDACTED in scrubbed


def test_two_card_numbers_side_by_side_are_both_scrubbed() -> None:
    """A run longer than 19 digits can still be two numbers separated by one space."""
    scrubbed = redact("cards 4111111111111111 5555555555554444 tried")
    assert "4111" not in scrubbed
    assert "4444" not in scrubbed


def test_bearer_tokens_are_scrubbed() -> None:
    """A caller's token in an echoed authorization header must not outlive the request."""
    scrubbed = redact("metadata (('authorization', 'Bearer s3cr3t-t0ken.value_42'),)")
    assert "s3cr3t-t0ken.value_42" not in scrubbed
    assert "Bearer [redacted]" in scrubbed


def test_card_tokens_are_scrubbed_even_when_short() -> None:
    """Antom's card tokens are recognised by their prefix, below the generic base64 length."""
    short = "ALIPAYab12CD34ef56GH78"
    scrubbed = redact(f"token {CARD_TOKEN} and {short}")
    assert CARD_TOKEN not in scrubbed
    assert short not in scrubbed


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('{"cardToken": "tok-plain"}', "tok-plain"),
        ("{'cvv': '737'}", "737"),
        ('{"cvc":"1234"}', "1234"),
        ("cardNo=4000 0000", "4000 0000"),
        ("card_no: 4000x", "4000x"),
        (
            '{"billingAddress": {"address1": "221B Baker Street", "city": "London"}}',
            "221B Baker Street",
        ),
        (
            "CardDetail(card_token='tok-x', billing_address={'address1': '1 Main St'})",
            "1 Main St",
        ),
        ("CardDetail(card_token='tok-x', brand='VISA')", "tok-x"),
        ('{"cardholderName": {"fullName": "Grace Hopper"}}', "Grace Hopper"),
        ('{"firstName": "Grace", "lastName": "Hopper"}', "Hopper"),
        ("private_key=abc.def", "abc.def"),
        ('{"password": "hunter2"}', "hunter2"),
    ],
)
def test_known_secret_fields_are_scrubbed_in_dict_looking_text(text: str, secret: str) -> None:
    """Request bodies, reprs and query strings name their secrets; the value goes, the name
    stays so the line still says what was there."""
    scrubbed = redact(text)
    assert secret not in scrubbed
    assert REDACTED in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "vaulting_request_id=vr-2024-05-01-checkout-000042",
        "e2e-visa",
        "123e4567-e89b-12d3-a456-426614174000",
        "2024-05-01T12:30:45.123+00:00",
        "2026-11-26T02:02:10.544Z",
        "attempt 3 of 6, HTTP 503, port 50051",
        "notifyVaulting refused with HTTP 401",
        "/ams/api/v1/vaults/createVaultingSession",
        "/ams/sandbox/api/v1/vaults/inquireVaulting",
        "http://127.0.0.1:8080/antom/vaulting/notify",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "order 4111111111111112 (not Luhn-valid)",
        "signature rejected (InvalidSignatureError)",
        "maskedCardNo ************1111, bin 411111, lastFour 1111",
        "SANDBOX_VAULTTEST0001",
        "CheckoutOrderForCustomerNumberTwelvexyzabcdefg",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """Request ids, timestamps, paths, short numbers and digests keep the log useful."""
    assert redact(text) == text


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text) - size + 1, size)]


@pytest.mark.parametrize(
    "line",
    [
        "Authorization: Bearer " + "ab12" * 16,
        "authorization=Bearer " + "ab12" * 16,
        "{'authorization': 'Bearer " + "ab12" * 16 + "'}",
        "Authorization: Basic " + "ab12" * 16,
    ],
)
def test_a_credential_after_an_authorization_field_is_scrubbed(line: str) -> None:
    """Regression: the field rule took the scheme word ("Bearer") as the authorization
    field's value and replaced only that, leaving a hex token (which no other rule matches)."""
    assert "ab12" not in redact(line)


def _every_pattern(text: str) -> str:
    """``redact`` as it was before its shortcuts: every pattern on every text."""
    text = redaction._PEM.sub(redaction.REDACTED, text)
    text = redaction._CREDENTIAL.sub(lambda match: match["scheme"] + redaction.REDACTED, text)
    text = redaction._SECRET_FIELD.sub(redaction._redact_field_value, text)
    text = redaction._CARD_TOKEN.sub(redaction.REDACTED, text)
    text = redaction._BASE64_RUN.sub(redaction._redact_base64, text)
    return redaction._DIGIT_RUN.sub(redaction._redact_card_number, text)


_FRAGMENTS = st.sampled_from(
    [
        "-----BEGIN PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
        "Bearer ",
        "BASIC ",
        "ba\u017fic ",  # a long s: IGNORECASE matches it as s
        "bas\u0130c ",  # a dotted capital I
        "cardToken",
        "token=",
        ": ",
        "ALIPAY",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "AbC1+/" * 8,
        "1234567890",
        "\n",
    ]
)


@given(st.lists(_FRAGMENTS | st.text(max_size=12), max_size=10).map("".join))
def test_the_shortcuts_change_nothing_redact_returns(text: str) -> None:
    """Regression guard for the checks that skip a pattern on text without what its matches
    need: on any text, ``redact`` gives what running every pattern gives."""
    assert redaction.redact(text) == _every_pattern(text)
