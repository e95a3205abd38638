"""Test cards and the card checks of Antom's hosted card form.

A submitted card is checked and turned at once into what Antom returns about a vaulted card
(token, masked number, BIN, last four, fingerprint, ...). The card number and CVV live only in
the local variables of :func:`read_card`; nothing derived from them allows recovering them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Final

from vault_service.luhn import luhn_valid


class CardOutcome(Enum):
    """What the issuer does with a test card."""

    APPROVE = "approve"
    DECLINE = "decline"
    CHALLENGE = "challenge"


@dataclass(frozen=True, slots=True)
class KnownCard:
    """A test card number with a fixed outcome, like the test cards of Antom's sandbox."""

    number: str
    brand: str
    outcome: CardOutcome
    description: str
    result_code: str = "SUCCESS"
    result_message: str = "success."


TEST_CARDS: Final[Mapping[str, KnownCard]] = {
    card.number: card
    for card in (
        KnownCard("4111111111111111", "VISA", CardOutcome.APPROVE, "vaulted (SUCCESS)"),
        KnownCard("5555555555554444", "MASTERCARD", CardOutcome.APPROVE, "vaulted (SUCCESS)"),
        KnownCard(
            "4000000000000002",
            "VISA",
            CardOutcome.DECLINE,
            "declined (FAIL, DO_NOT_HONOR)",
            result_code="DO_NOT_HONOR",
            result_message="The issuer declined the card: do not honor.",
        ),
        KnownCard(
            "4000000000003220",
            "VISA",
            CardOutcome.CHALLENGE,
            "3-D Secure: PROCESSING, then SUCCESS about 5 s x time scale later",
        ),
    )
}

ISSUER_NAME: Final = "Vault Emulator Test Bank"
ISSUING_COUNTRY: Final = "US"
FUNDING: Final = "CREDIT"
_MIN_PAN_DIGITS: Final = 12
_MAX_PAN_DIGITS: Final = 19
_USER_NAME_LIMITS: Final = {"firstName": 32, "middleName": 32, "lastName": 32, "fullName": 128}
_ADDRESS_LIMITS: Final = {
    "region": 2,
    "state": 8,
    "city": 32,
    "address1": 256,
    "address2": 256,
    "address3": 256,
    "zipCode": 32,
    "label": 64,
    "country": 2,
}


class CardRejectedError(Exception):
    """The card form refuses a submission; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CardDetail:
    """What Antom reports about a vaulted card; never the number or the CVV."""

    card_token: str
    brand: str
    masked_card_no: str
    bin: str
    last_four: str
    expiry_month: str
    expiry_year: str
    funding: str
    issuing_country: str
    issuer_name: str
    cardholder_name: Mapping[str, str]
    billing_address: Mapping[str, str] | None
    fingerprint: str


@dataclass(frozen=True, slots=True)
class CardVerdict:
    """A checked submission: the issuer's answer and the card's derived details."""

    outcome: CardOutcome
    result_code: str
    result_message: str
    detail: CardDetail


def describe_test_cards() -> str:
    return "; ".join(
        f"{card.number} {card.brand} {card.description}" for card in TEST_CARDS.values()
    )


def read_card(
    submission: Mapping[str, object], *, today: date, fingerprint_secret: bytes
) -> CardVerdict:
    """Check a buyer's submission and derive Antom's view of the card.

    Raises :class:`CardRejectedError` with a message naming the field, never echoing card data.
    """
    number = _card_number(submission.get("cardNo"))
    card = TEST_CARDS.get(number)
    if card is None:
        raise CardRejectedError(
            422,
            "CARD_NOT_SUPPORTED",
            f"cardNo is not an emulator test card; use one of: {describe_test_cards()}",
        )
    month, year = _expiry(submission.get("expiryMonth"), submission.get("expiryYear"), today)
    _check_cvv(submission.get("cvv"))
    detail = CardDetail(
        card_token="ALIPAY" + base64.b64encode(secrets.token_bytes(33)).decode("ascii"),
        brand=card.brand,
        masked_card_no="*" * 12 + number[-4:],
        bin=number[:6],
        last_four=number[-4:],
        expiry_month=f"{month:02d}",
        expiry_year=f"{year % 100:02d}",
        funding=FUNDING,
        issuing_country=ISSUING_COUNTRY,
        issuer_name=ISSUER_NAME,
        cardholder_name=_user_name(submission.get("cardholderName")),
        billing_address=_address(submission.get("billingAddress")),
        fingerprint=hmac.new(fingerprint_secret, number.encode(), hashlib.sha256).hexdigest(),
    )
    return CardVerdict(card.outcome, card.result_code, card.result_message, detail)


def _card_number(value: object) -> str:
    if not isinstance(value, str):
        raise CardRejectedError(400, "INVALID_REQUEST", "cardNo is required and must be a string")
    digits = value.replace(" ", "")
    if not (digits.isascii() and digits.isdigit()) or not (
        _MIN_PAN_DIGITS <= len(digits) <= _MAX_PAN_DIGITS
    ):
        raise CardRejectedError(422, "INVALID_CARD_NUMBER", "cardNo must be 12 to 19 digits")
    if not luhn_valid(digits):
        raise CardRejectedError(422, "INVALID_CARD_NUMBER", "cardNo fails the Luhn check")
    return digits


def _expiry(month_value: object, year_value: object, today: date) -> tuple[int, int]:
    month = _number_field(month_value, "expiryMonth", (1, 2))
    year = _number_field(year_value, "expiryYear", (2, 4))
    if not 1 <= month <= 12:
        raise CardRejectedError(422, "INVALID_EXPIRATION_DATE", "expiryMonth must be 01 to 12")
    if year < 100:
        year += 2000
    if (year, month) < (today.year, today.month):
        raise CardRejectedError(422, "CARD_EXPIRED", "the card expired (expiryMonth/expiryYear)")
    return month, year


def _number_field(value: object, name: str, lengths: tuple[int, int]) -> int:
    """A digits field given as a string (``"07"``) or a JSON number (``7``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        text = str(value).zfill(lengths[0])
    elif isinstance(value, str):
        text = value
    else:
        raise CardRejectedError(400, "INVALID_REQUEST", f"{name} is required")
    if not (text.isascii() and text.isdigit()) or len(text) not in lengths:
        allowed = " or ".join(str(length) for length in lengths)
        raise CardRejectedError(
            422, "INVALID_EXPIRATION_DATE", f"{name} must have {allowed} digits"
        )
    return int(text)


def _check_cvv(value: object) -> None:
    if not isinstance(value, str):
        raise CardRejectedError(400, "INVALID_REQUEST", "cvv is required and must be a string")
    if not (value.isascii() and value.isdigit() and 3 <= len(value) <= 4):
        raise CardRejectedError(422, "INVALID_CVV", "cvv must be 3 or 4 digits")


def _user_name(value: object) -> dict[str, str]:
    """``cardholderName`` as Antom's UserName; a plain string is taken as the full name."""
    if isinstance(value, str):
        value = {"fullName": value}
    if not isinstance(value, Mapping):
        raise CardRejectedError(
            400, "INVALID_REQUEST", "cardholderName is required (a string or a UserName object)"
        )
    name = _string_object(value, _USER_NAME_LIMITS, "cardholderName")
    if not any(item.strip() for item in name.values()):
        raise CardRejectedError(400, "INVALID_REQUEST", "cardholderName must not be empty")
    return name


def _address(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise CardRejectedError(400, "INVALID_REQUEST", "billingAddress must be an Address object")
    return _string_object(value, _ADDRESS_LIMITS, "billingAddress")


def _string_object(
    value: Mapping[object, object], limits: Mapping[str, int], name: str
) -> dict[str, str]:
    """The known string fields of a JSON object, each within its length limit."""
    result: dict[str, str] = {}
    for key, limit in limits.items():
        item = value.get(key)
        if item is None:
            continue
        if not isinstance(item, str) or len(item) > limit:
            raise CardRejectedError(
                400, "INVALID_REQUEST", f"{name}.{key} must be a string of at most {limit} chars"
            )
        result[key] = item
    return result
