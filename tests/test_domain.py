"""The domain's transition rules and resume tokens."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.store.strategies import T0, full_card, new_record
from vault_service.domain import (
    MAX_EVENT_ID,
    AntomResult,
    Card,
    EventSource,
    InvalidResumeTokenError,
    Observation,
    Session,
    SessionParameters,
    VaultingRecord,
    VaultingStatus,
    apply_observation,
    decode_resume_token,
    encode_resume_token,
)
from vault_service.secret import Secret

S = VaultingStatus
LATER = T0 + timedelta(minutes=5)

# (current, incoming) -> does the record change? Spelled out pair by pair from the rules in
# domain's docstring rather than recomputed, so that a change to the rules shows up here.
# - a final Antom result (SUCCEEDED, FAILED) is never overwritten;
# - EXPIRED (our inference) is replaced only by a final Antom result;
# - SESSION_CREATED is never news; PROCESSING only moves a freshly created session;
# - anything else moves forward (including to EXPIRED), and the same state twice is no news.
TRANSITIONS: dict[tuple[VaultingStatus, VaultingStatus], bool] = {
    (S.SESSION_CREATED, S.SESSION_CREATED): False,
    (S.SESSION_CREATED, S.PROCESSING): True,
    (S.SESSION_CREATED, S.SUCCEEDED): True,
    (S.SESSION_CREATED, S.FAILED): True,
    (S.SESSION_CREATED, S.EXPIRED): True,
    (S.PROCESSING, S.SESSION_CREATED): False,
    (S.PROCESSING, S.PROCESSING): False,
    (S.PROCESSING, S.SUCCEEDED): True,
    (S.PROCESSING, S.FAILED): True,
    (S.PROCESSING, S.EXPIRED): True,
    (S.SUCCEEDED, S.SESSION_CREATED): False,
    (S.SUCCEEDED, S.PROCESSING): False,
    (S.SUCCEEDED, S.SUCCEEDED): False,
    (S.SUCCEEDED, S.FAILED): False,
    (S.SUCCEEDED, S.EXPIRED): False,
    (S.FAILED, S.SESSION_CREATED): False,
    (S.FAILED, S.PROCESSING): False,
    (S.FAILED, S.SUCCEEDED): False,
    (S.FAILED, S.FAILED): False,
    (S.FAILED, S.EXPIRED): False,
    (S.EXPIRED, S.SESSION_CREATED): False,
    (S.EXPIRED, S.PROCESSING): False,
    (S.EXPIRED, S.SUCCEEDED): True,
    (S.EXPIRED, S.FAILED): True,
    (S.EXPIRED, S.EXPIRED): False,
}


def _record_in(status: VaultingStatus) -> VaultingRecord:
    record = new_record("vr-1")
    return replace(record, status=status, final_at=T0 if status.is_final else None)


def _news(status: VaultingStatus, card: Card | None = None) -> Observation:
    return Observation(status=status, source=EventSource.NOTIFICATION, observed_at=LATER, card=card)


def test_the_table_covers_every_pair() -> None:
    assert set(TRANSITIONS) == {(a, b) for a in VaultingStatus for b in VaultingStatus}


@pytest.mark.parametrize(("current", "incoming"), list(TRANSITIONS), ids=lambda s: s.value)
def test_transition(current: VaultingStatus, incoming: VaultingStatus) -> None:
    record = _record_in(current)
    changed = apply_observation(record, _news(incoming))
    if not TRANSITIONS[current, incoming]:
        assert changed is None
        return
    assert changed is not None
    assert changed.status is incoming
    assert changed.updated_at == LATER
    assert changed.final_at == (LATER if incoming.is_final else None)
    assert (changed.vaulting_request_id, changed.owner, changed.parameters, changed.session) == (
        record.vaulting_request_id,
        record.owner,
        record.parameters,
        record.session,
    )


def test_final_and_antom_final_states() -> None:
    assert {s for s in S if s.is_final} == {S.SUCCEEDED, S.FAILED, S.EXPIRED}
    assert {s for s in S if s.is_antom_final} == {S.SUCCEEDED, S.FAILED}


def test_news_without_details_keeps_the_known_ones() -> None:
    """Guards against a bare inquiry result erasing the card a notification delivered."""
    card = full_card()
    record = replace(
        _record_in(S.PROCESSING),
        card=card,
        antom_result=AntomResult("PROCESSING", "U"),
        acquirer_info=(("acquirerName", "ADYEN"),),
    )
    changed = apply_observation(record, _news(S.EXPIRED))
    assert changed is not None
    assert changed.card == card
    assert changed.antom_result == record.antom_result
    assert changed.acquirer_info == record.acquirer_info


def test_news_with_details_replaces_them() -> None:
    record = replace(_record_in(S.PROCESSING), card=full_card("old-token"))
    news = replace(
        _news(S.SUCCEEDED, card=full_card("new-token")),
        antom_result=AntomResult("SUCCESS", "S"),
        acquirer_info=(("acquirerName", "WORLDPAY"),),
    )
    changed = apply_observation(record, news)
    assert changed is not None
    assert changed.card == full_card("new-token")
    assert changed.antom_result == AntomResult("SUCCESS", "S")
    assert changed.acquirer_info == (("acquirerName", "WORLDPAY"),)


def test_card_repr_hides_the_token_and_address() -> None:
    text = repr(full_card("ALIPAYsecret"))
    assert "ALIPAYsecret" not in text
    assert "Market St" not in text


# Resume tokens.


# Stores make 32-hex-digit log ids; short arbitrary text checks the JSON escaping.
log_ids = st.text("0123456789abcdef", min_size=32, max_size=32) | st.text(max_size=8)


@given(log_ids, st.integers(0, MAX_EVENT_ID))
def test_token_round_trip(log_id: str, event_id: int) -> None:
    assert decode_resume_token(encode_resume_token(log_id, event_id), log_id) == event_id


def test_tokens_are_url_safe_and_opaque() -> None:
    token = encode_resume_token("0123456789abcdef0123456789abcdef", 42)
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    assert "42" not in token


def test_a_token_from_another_log_is_refused() -> None:
    """Guards against resuming at an unrelated position of another deployment's log."""
    token = encode_resume_token("log-a", 7)
    with pytest.raises(InvalidResumeTokenError, match="not issued by this service's log"):
        decode_resume_token(token, "log-b")


def _token_of(payload: object) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return "v1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


GOOD = encode_resume_token("log", 5)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("v1.", id="prefix-only"),
        pytest.param("v2." + GOOD[3:], id="other-version"),
        pytest.param(GOOD[3:], id="no-prefix"),
        pytest.param("v1.%%%%", id="not-base64"),
        pytest.param("v1." + base64.urlsafe_b64encode(b"\xff\xfe").decode(), id="not-utf8"),
        pytest.param("v1." + base64.urlsafe_b64encode(b"[1,").decode(), id="not-json"),
        pytest.param(_token_of({"log": "log", "id": 5}), id="object"),
        pytest.param(_token_of(["log"]), id="one-item"),
        pytest.param(_token_of(["log", 5, 6]), id="three-items"),
        pytest.param(_token_of(["log", "5"]), id="string-id"),
        pytest.param(_token_of(["log", 5.0]), id="float-id"),
        pytest.param(_token_of([5, 5]), id="numeric-log"),
        pytest.param(_token_of(["log", -1]), id="negative-id"),
        pytest.param(_token_of(["log", True]), id="boolean-id"),
        pytest.param(_token_of(["log", MAX_EVENT_ID + 1]), id="id-beyond-64-bits"),
        pytest.param(_token_of(["log", 10**150]), id="huge-id"),
        pytest.param("v1." + "A" * 300, id="oversized"),
        pytest.param(GOOD[:3] + "!!!!" + GOOD[3:], id="stray-characters"),
        pytest.param(GOOD + "==", id="padded"),
        pytest.param(GOOD + "\n", id="trailing-newline"),
        pytest.param(_token_of(["log", 5]).replace("v1.", "v1. "), id="inner-space"),
        pytest.param(
            "v1." + base64.urlsafe_b64encode(b'[ "log", 5 ]').decode().rstrip("="),
            id="non-canonical-json",
        ),
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    """Guards StreamResults against resuming anywhere but where a token we issued points:
    ``true`` would read as event 1, a 64-bit overflow would crash the store's query, and
    stray characters are otherwise skipped by base64 decoding."""
    with pytest.raises(InvalidResumeTokenError, match="malformed"):
        decode_resume_token(token, "log")


def test_the_largest_event_id_is_accepted() -> None:
    assert decode_resume_token(encode_resume_token("log", MAX_EVENT_ID), "log") == MAX_EVENT_ID
    assert decode_resume_token(encode_resume_token("log", 0), "log") == 0


def test_a_success_learned_without_the_card_takes_the_token_later() -> None:
    """Regression: a SUCCESS inquiry without paymentMethodDetail made the record final, and the
    notification carrying the card token was then dropped as a duplicate."""
    moment = datetime(2026, 11, 25, tzinfo=UTC)
    base = VaultingRecord(
        vaulting_request_id="vr",
        owner="o",
        parameters=SessionParameters(),
        session=Session("s", "d", moment),
        created_at=moment,
        updated_at=moment,
    )
    bare = apply_observation(
        base, Observation(VaultingStatus.SUCCEEDED, EventSource.INQUIRY, moment)
    )
    assert bare is not None
    with_card = Observation(
        VaultingStatus.SUCCEEDED,
        EventSource.NOTIFICATION,
        moment,
        card=Card(card_token=Secret("ALIPAYtok"), brand="VISA"),
    )
    completed = apply_observation(bare, with_card)
    assert completed is not None
    assert completed.card is not None
    assert completed.card.card_token.reveal() == "ALIPAYtok"
    assert completed.final_at == bare.final_at
    assert apply_observation(completed, with_card) is None
    failed = Observation(
        VaultingStatus.FAILED, EventSource.NOTIFICATION, moment, card=with_card.card
    )
    assert apply_observation(bare, failed) is None
