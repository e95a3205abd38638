"""Hypothesis strategies for domain objects, and hand-written records for example tests.

Text never contains NUL or lone surrogates: PostgreSQL's text and jsonb types refuse them, and
the shared suite stores these values in every backend (the service never receives them either:
they arrive as JSON or protobuf strings).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from hypothesis import strategies as st

from vault_service.domain import (
    Address,
    AntomResult,
    Card,
    CardholderName,
    EventSource,
    Observation,
    Session,
    SessionParameters,
    VaultingRecord,
    VaultingStatus,
)
from vault_service.secret import Secret

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
pairs = st.lists(st.tuples(texts, texts), max_size=4).map(tuple)

_EARLIEST, _LATEST = datetime(1971, 1, 1), datetime(2200, 1, 1)
_utc: st.SearchStrategy[tzinfo] = st.just(UTC)
_offsets: st.SearchStrategy[tzinfo] = st.integers(-23 * 60, 23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
utc_instants = st.datetimes(_EARLIEST, _LATEST, timezones=_utc)
"""Aware UTC datetimes, what the domain uses."""

aware_instants = st.datetimes(_EARLIEST, _LATEST, timezones=_offsets)
"""Aware datetimes in any fixed offset: the store must accept them and give back UTC."""


def _all_text(cls: type[object]) -> dict[str, st.SearchStrategy[str]]:
    return {field.name: texts for field in dataclasses.fields(cls)}  # type: ignore[arg-type]


addresses = st.builds(Address, **_all_text(Address))
cardholder_names = st.builds(CardholderName, **_all_text(CardholderName))
antom_results = st.builds(AntomResult, **_all_text(AntomResult))
cards = st.builds(
    Card,
    **{
        **_all_text(Card),
        "card_token": texts.map(Secret),
        "billing_address": st.none() | addresses,
        "cardholder_name": st.none() | cardholder_names,
    },
)
parameters = st.builds(
    SessionParameters,
    payment_method_type=texts,
    redirect_url=texts,
    merchant_region=texts,
    is_3ds_authentication=st.none() | st.booleans(),
    env=pairs,
    labels=pairs,
)
sessions = st.builds(
    Session,
    session_id=texts,
    session_data=st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=300
    ),
    expires_at=aware_instants,
    normal_url=texts,
)
records = st.builds(
    VaultingRecord,
    vaulting_request_id=texts.filter(bool),
    owner=texts,
    parameters=parameters,
    session=sessions,
    created_at=aware_instants,
    updated_at=aware_instants,
    status=st.sampled_from(VaultingStatus),
    card=st.none() | cards,
    antom_result=st.none() | antom_results,
    acquirer_info=pairs,
    final_at=st.none() | aware_instants,
)


def new_record(vaulting_request_id: str, *, owner: str = "checkout") -> VaultingRecord:
    """A record as CreateSession stores it: session created, no result yet."""
    return VaultingRecord(
        vaulting_request_id=vaulting_request_id,
        owner=owner,
        parameters=SessionParameters(
            redirect_url="https://shop.example/return",
            merchant_region="US",
            labels=(("order", vaulting_request_id),),
        ),
        session=Session(
            session_id=f"session-{vaulting_request_id}",
            session_data=f"data-{vaulting_request_id}",
            expires_at=T0 + timedelta(minutes=30),
        ),
        created_at=T0,
        updated_at=T0,
    )


def full_card(token: str = "ALIPAY-token-0001") -> Card:
    """A card with every field set, including the nested address and name."""
    return Card(
        card_token=Secret(token),
        brand="VISA",
        masked_card_number="************8764",
        bin="409280",
        last_four="8764",
        expiry_month="02",
        expiry_year="2031",
        funding="CREDIT",
        issuing_country="US",
        issuer_name='Bank "Ünïcode" ☃',
        fingerprint="fp-1",
        billing_address=Address(
            region="US",
            state="CA",
            city="San Francisco",
            address1="1 Market St",
            address2="Suite 2",
            address3="c/o 'Ops'",
            zip_code="94107",
        ),
        cardholder_name=CardholderName(
            first_name="Ada", middle_name="K", last_name="Lovelace", full_name="Ada K Lovelace"
        ),
    )


def full_record(vaulting_request_id: str = "vr-full") -> VaultingRecord:
    """A record with every field populated (a final success with all card details)."""
    return VaultingRecord(
        vaulting_request_id=vaulting_request_id,
        owner="payments-api",
        parameters=SessionParameters(
            payment_method_type="CARD",
            redirect_url="https://shop.example/return?x=1&y=2",
            merchant_region="SG",
            is_3ds_authentication=True,
            env=(("terminalType", "WEB"), ("osType", "IOS")),
            labels=(("team", "checkout"), ("emoji", "🧾"), ("team", "duplicate key kept")),
        ),
        session=Session(
            session_id="sess-123",
            session_data="opaque+/=data" * 20,
            expires_at=T0 + timedelta(minutes=30, microseconds=1),
            normal_url="https://antom.example/normal",
        ),
        created_at=T0,
        updated_at=T0 + timedelta(minutes=2, microseconds=999_999),
        status=VaultingStatus.SUCCEEDED,
        card=full_card(),
        antom_result=AntomResult(
            result_code="SUCCESS",
            result_status="S",
            result_message="success",
            vaulting_status="SUCCESS",
        ),
        acquirer_info=(("acquirerName", "ADYEN"), ("referenceRequestId", "r1")),
        final_at=T0 + timedelta(minutes=2, microseconds=999_999),
    )


def observe(
    status: VaultingStatus,
    *,
    at: datetime = T0 + timedelta(minutes=1),
    source: EventSource = EventSource.NOTIFICATION,
    card: Card | None = None,
) -> Observation:
    """News of ``status``; a success carries a card unless one is given."""
    if card is None and status is VaultingStatus.SUCCEEDED:
        card = full_card()
    result = AntomResult(result_code=status.value, result_status="S")
    return Observation(status=status, source=source, observed_at=at, card=card, antom_result=result)
