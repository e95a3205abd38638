"""Scrub secrets out of free text: the log pipeline's last line of defence.

The allowlist in :mod:`vault_service.logs` keeps unknown context fields out of the log, but a
message, an allowlisted field or a traceback can still carry a secret that some library put
into an exception text (a request body, a header, a repr of a card). :func:`redact` replaces
anything that looks like a key, a signature, a card token, a card number, a bearer token or a
known-secret field's value with :data:`REDACTED`, and leaves ordinary text alone: request ids,
timestamps, short numbers and hex ids do not match any pattern.
"""

from __future__ import annotations

import re
from typing import Final

from vault_service.luhn import luhn_valid

REDACTED: Final = "[redacted]"

_PEM: Final = re.compile(r"-----BEGIN[^-\n]*-----(?:.*?-----END[^-\n]*-----|.*)", re.DOTALL)

SECRET_FIELD_NAMES: Final = (
    "cardToken",
    "card_token",
    "cardNo",
    "card_no",
    "cardNumber",
    "card_number",
    "pan",
    "cvv",
    "cvc",
    "cvv2",
    "securityCode",
    "security_code",
    "billingAddress",
    "billing_address",
    "address1",
    "address2",
    "address3",
    "zipCode",
    "zip_code",
    "cardholderName",
    "cardholder_name",
    "fullName",
    "firstName",
    "middleName",
    "lastName",
    "fingerprint",
    "privateKey",
    "private_key",
    "signature",
    "authorization",
    "token",
    "access_token",
    "password",
    "secret",
)
"""Field names whose values are secret wherever they appear as ``name: value`` or
``name=value`` (JSON, Python reprs, query strings, headers)."""

_QUOTED: Final = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
_OBJECT: Final = r"\{[^{}]*\}|\[[^\[\]]*\]"
_BARE: Final = r"[^\s,;&}\])\"']+"
_SECRET_FIELD: Final = re.compile(
    r"(?P<name>[\"']?\b(?:"
    + "|".join(re.escape(name) for name in SECRET_FIELD_NAMES)
    + r")\b[\"']?\s*[:=]\s*)"
    + rf"(?P<value>{_QUOTED}|{_OBJECT}|{_BARE})",
    re.IGNORECASE,
)
_CREDENTIAL: Final = re.compile(r"\b(?P<scheme>(?:bearer|basic)\s+)[^\s,;\"']+", re.IGNORECASE)
_SCHEME_WORD: Final = re.compile(r"bearer|basic", re.IGNORECASE)
"""What every match of :data:`_CREDENTIAL` contains, matched the same way."""
_CARD_TOKEN: Final = re.compile(r"ALIPAY[A-Za-z0-9+/_-]{16,}=*")
_BASE64_RUN: Final = re.compile(r"[A-Za-z0-9+/]{40,}=*")
_DIGIT_RUN: Final = re.compile(r"(?<!\d)\d(?:[ -]?\d){11,}(?!\d)")
_MIN_BASE64_RUN: Final = 40
_MIN_DIGIT_RUN: Final = 12
"""The shortest text :data:`_BASE64_RUN` and :data:`_DIGIT_RUN` can match."""
_SEPARATOR: Final = re.compile(r"[ -]")
_PATH_SLASH_DENSITY: Final = 16

_MIN_CARD_DIGITS: Final = 13
_MAX_CARD_DIGITS: Final = 19


def redact(text: str) -> str:
    """``text`` with every secret-looking part replaced by :data:`REDACTED`.

    Each pattern runs only on text that has what any of its matches must contain (a PEM
    armour line, a scheme word, a ``:`` or ``=``, ``ALIPAY``, enough characters): most values
    of a log line (its level, logger, outcome, request id) have none of it, and every line
    scrubs every value, one per acknowledged notification among them.
    """
    if "-----BEGIN" in text:
        text = _PEM.sub(REDACTED, text)
    # Credentials before field values: "Authorization: Bearer <token>" would otherwise have
    # only its scheme word taken as the field's value, leaving the token.
    if _SCHEME_WORD.search(text):
        text = _CREDENTIAL.sub(lambda match: match["scheme"] + REDACTED, text)
    if ":" in text or "=" in text:
        text = _SECRET_FIELD.sub(_redact_field_value, text)
    if "ALIPAY" in text:
        text = _CARD_TOKEN.sub(REDACTED, text)
    if len(text) >= _MIN_BASE64_RUN:
        text = _BASE64_RUN.sub(_redact_base64, text)
    if len(text) >= _MIN_DIGIT_RUN:
        text = _DIGIT_RUN.sub(_redact_card_number, text)
    return text


def _redact_field_value(match: re.Match[str]) -> str:
    value = match["value"]
    if value[0] in "\"'":
        return f"{match['name']}{value[0]}{REDACTED}{value[0]}"
    return match["name"] + REDACTED


def _redact_base64(match: re.Match[str]) -> str:
    """Keys, signatures and ciphertexts are long runs mixing upper case, lower case and digits
    (or carrying a ``+``); hex digests, numbers and single-case identifiers of the same length
    are not secrets, and neither are URL paths, whose ``/`` come far denser than base64's one
    in 64."""
    run = match[0]
    if run.count("/") * _PATH_SLASH_DENSITY >= len(run):
        return run
    mixed = (
        any(c.isupper() for c in run)
        and any(c.islower() for c in run)
        and any(c.isdigit() for c in run)
    )
    return REDACTED if mixed or "+" in run else run


def _redact_card_number(match: re.Match[str]) -> str:
    """A run of digit groups (single spaces or dashes between them) hides a card number when
    consecutive groups holding 13-19 digits pass the Luhn check; that finds a number written
    as one block, in groups of four, or two numbers side by side, without testing every
    stretch of a long number (each test is a one-in-ten chance of scrubbing an innocent one)."""
    groups = _SEPARATOR.split(match[0])
    for first in range(len(groups)):
        digits = ""
        for group in groups[first:]:
            digits += group
            if len(digits) > _MAX_CARD_DIGITS:
                break
            if len(digits) >= _MIN_CARD_DIGITS and luhn_valid(digits):
                return REDACTED
    return match[0]
