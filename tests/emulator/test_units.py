"""Small pure pieces: request paths and times, the Luhn check, card derivation."""

from __future__ import annotations

from datetime import date

import pytest

from vault_service.emulator.cards import (
    TEST_CARDS,
    CardOutcome,
    CardRejectedError,
    read_card,
)
from vault_service.emulator.wire import is_request_time, signed_path
from vault_service.luhn import luhn_valid

SECRET = b"k" * 32
TODAY = date(2026, 6, 15)


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/ams/api/v1/vaults/inquireVaulting", "/ams/api/v1/vaults/inquireVaulting"),
        (
            "https://open-sea-global.alipay.com/ams/sandbox/api/v1/vaults/inquireVaulting",
            "/ams/sandbox/api/v1/vaults/inquireVaulting",
        ),
        ("http://h:8080/ams/x?a=1&b=%2f", "/ams/x?a=1&b=%2f"),
        ("/ams/x%2Fy?q", "/ams/x%2Fy?q"),
        ("https://h", "/"),
    ],
)
def test_signed_path_keeps_the_path_as_sent(target: str, path: str):
    assert signed_path(target) == path


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("1716000000000", True),
        ("2024-05-18T02:40:00+00:00", True),
        ("2024-05-18T10:40:00+0800", True),
        ("2024-05-18T02:40:00.1234567Z", True),
        ("2024-05-18T02:40:00", False),
        ("١٧١٦٠٠٠٠٠٠٠٠٠", False),
        ("12345678901234567", False),
        ("", False),
    ],
)
def test_request_time_forms(value: str, accepted: bool):
    assert is_request_time(value) is accepted


def test_every_test_card_passes_luhn_and_a_typo_does_not():
    assert all(luhn_valid(number) for number in TEST_CARDS)
    assert not luhn_valid("4111111111111121")


def _submission(card_no: str, **fields: object) -> dict[str, object]:
    return {
        "cardNo": card_no,
        "expiryMonth": "6",
        "expiryYear": "26",
        "cvv": "123",
        "cardholderName": "A B",
        **fields,
    }


def test_derived_card_details():
    verdict = read_card(_submission("5555555555554444"), today=TODAY, fingerprint_secret=SECRET)
    detail = verdict.detail
    assert verdict.outcome is CardOutcome.APPROVE
    assert (detail.brand, detail.bin, detail.last_four) == ("MASTERCARD", "555555", "4444")
    assert detail.masked_card_no == "*" * 12 + "4444"
    assert (detail.expiry_month, detail.expiry_year) == ("06", "26")
    assert detail.funding == "CREDIT"
    assert detail.cardholder_name == {"fullName": "A B"}
    assert detail.billing_address is None
    again = read_card(_submission("5555555555554444"), today=TODAY, fingerprint_secret=SECRET)
    other = read_card(_submission("5555555555554444"), today=TODAY, fingerprint_secret=b"x")
    assert again.detail.fingerprint == detail.fingerprint != other.detail.fingerprint
    assert again.detail.card_token != detail.card_token


def test_outcomes_of_the_special_cards():
    declined = read_card(_submission("4000000000000002"), today=TODAY, fingerprint_secret=SECRET)
    assert (declined.outcome, declined.result_code) == (CardOutcome.DECLINE, "DO_NOT_HONOR")
    challenged = read_card(_submission("4000000000003220"), today=TODAY, fingerprint_secret=SECRET)
    assert challenged.outcome is CardOutcome.CHALLENGE


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"expiryMonth": "5", "expiryYear": "2026"}, "CARD_EXPIRED"),
        ({"expiryMonth": "12", "expiryYear": "25"}, "CARD_EXPIRED"),
        ({"expiryMonth": 13}, "INVALID_EXPIRATION_DATE"),
        ({"expiryYear": True}, "INVALID_REQUEST"),
        ({"cvv": "12a"}, "INVALID_CVV"),
        ({"cvv": 123}, "INVALID_REQUEST"),
    ],
)
def test_refusals(fields: dict[str, object], code: str):
    with pytest.raises(CardRejectedError) as refusal:
        read_card(_submission("4111111111111111", **fields), today=TODAY, fingerprint_secret=SECRET)
    assert refusal.value.code == code
    assert "4111111111111111" not in refusal.value.message
