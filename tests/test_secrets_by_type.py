"""Secrets by type (issue 10): printing the objects that carry secrets shows none of them.

Logging an object, formatting an exception or a failed assertion calls ``repr`` or ``str``.
The database URL hides its password; a card, an observation, a result (a vaulting record) and
the event that carries one hide every field the store seals at rest
(:mod:`vault_service.store.sealed_fields`): the card token (a :class:`Secret`), the billing
address and cardholder name (personal data, hidden by their own types), the expiry, the
fingerprint, and the acquirer info (which may hold the acquirer's card token). The values
looked for come from that table, so a field sealed later and left printable fails here.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from vault_service.database_url import parse_database_url
from vault_service.domain import (
    Address,
    Card,
    CardholderName,
    Event,
    EventSource,
    Observation,
    Session,
    SessionParameters,
    VaultingRecord,
    VaultingStatus,
)
from vault_service.secret import Secret
from vault_service.store.sealed_fields import CARD_FIELDS, RECORD_FIELDS

T0 = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
MARK = "-Qx7secret"


def _hidden(name: str) -> str:
    return f"{name}{MARK}"


def _card_value(name: str, sealed: bool) -> object:
    if name == "card_token":
        return Secret(_hidden(name))
    if name == "billing_address":
        return Address(**{f.name: _hidden(f.name) for f in fields(Address)})
    if name == "cardholder_name":
        return CardholderName(**{f.name: _hidden(f.name) for f in fields(CardholderName)})
    return _hidden(name) if sealed else f"{name}-shown"


CARD = Card(**{field.name: _card_value(field.name, field.sealed) for field in CARD_FIELDS})  # type: ignore[arg-type]
SEALED_RECORD_FIELDS = {field.name for field in RECORD_FIELDS if field.sealed}
ACQUIRER_INFO = (("acquirer_card_token", _hidden("acquirer_card_token")),)
OBSERVATION = Observation(
    VaultingStatus.SUCCEEDED,
    EventSource.NOTIFICATION,
    T0,
    card=CARD,
    acquirer_info=ACQUIRER_INFO,
)
RECORD = VaultingRecord(
    vaulting_request_id="vr-secret",
    owner="checkout",
    parameters=SessionParameters(),
    session=Session("sid-1", "session-data", T0 + timedelta(minutes=30)),
    created_at=T0,
    updated_at=T0,
    status=VaultingStatus.SUCCEEDED,
    card=CARD,
    acquirer_info=ACQUIRER_INFO,
    final_at=T0,
)
DATABASE_PASSWORDS = ("pg-pass-Qx7", "query-pass-Qx7")
DATABASE_URL = parse_database_url(
    f"postgresql://vault:{DATABASE_PASSWORDS[0]}@db.internal:5432/vault"
    f"?sslmode=require&password={DATABASE_PASSWORDS[1]}"
)


@pytest.mark.parametrize(
    "carrier",
    [
        DATABASE_URL,
        CARD,
        OBSERVATION,
        RECORD,
        Event(7, EventSource.NOTIFICATION, T0, RECORD),
        CARD.billing_address,
        CARD.cardholder_name,
    ],
    ids=["database URL", "card", "observation", "result", "event", "address", "name"],
)
def test_repr_and_str_show_no_secret(carrier: object) -> None:
    """Guards issue 10's acceptance: no secret in ``repr()`` or ``str()`` of the objects that
    carry them (the database URL's repr used to print its password)."""
    text = repr(carrier) + str(carrier)
    assert MARK not in text
    for password in DATABASE_PASSWORDS:
        assert password not in text


def test_the_fields_that_are_not_secret_still_show() -> None:
    """Hiding is per field: a card's repr still says what card it is, and a URL where it
    points, so the test above is looking at real output."""
    shown = [f"{field.name}-shown" for field in CARD_FIELDS if not field.sealed]
    assert shown
    for value in shown:
        assert value in repr(CARD)
    assert "db.internal:5432/vault" in repr(DATABASE_URL)
    assert {"acquirer_info"} == SEALED_RECORD_FIELDS


def test_the_card_token_is_revealed_only_when_asked() -> None:
    """The token is still there for the edges that hand it on (codec, gRPC mapping)."""
    assert CARD.card_token.reveal() == _hidden("card_token")
