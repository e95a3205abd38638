"""The codec every backend stores records and event snapshots with."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.store.strategies import aware_instants, full_record, records
from vault_service.domain import VaultingRecord
from vault_service.store import CorruptDataError
from vault_service.store.codec import (
    RECORD_COLUMNS,
    RecordRow,
    decode_instant,
    decode_snapshot,
    encode_instant,
    encode_snapshot,
    record_from_row,
    record_to_row,
)


def _all_datetimes(record: VaultingRecord) -> list[datetime]:
    found = [record.created_at, record.updated_at, record.session.expires_at]
    return found if record.final_at is None else [*found, record.final_at]


@given(records)
def test_record_row_round_trip(record: VaultingRecord) -> None:
    decoded = record_from_row(record_to_row(record))
    assert decoded == record
    assert all(value.tzinfo is UTC for value in _all_datetimes(decoded))


@given(records)
def test_snapshot_round_trip(record: VaultingRecord) -> None:
    decoded = decode_snapshot(*encode_snapshot(record))
    assert decoded == record
    assert all(value.tzinfo is UTC for value in _all_datetimes(decoded))


@given(aware_instants)
def test_instant_round_trip_is_exact_to_the_microsecond(instant: datetime) -> None:
    assert decode_instant(encode_instant(instant)) == instant


@given(aware_instants, aware_instants)
def test_encoded_instants_order_like_the_instants(a: datetime, b: datetime) -> None:
    """Stores compare encoded instants in SQL (``next_check_at <= now``)."""
    assert (encode_instant(a) < encode_instant(b)) == (a < b)


def test_naive_datetimes_are_refused() -> None:
    """Guards against a naive datetime being stored as if it were UTC (off by the host zone)."""
    with pytest.raises(ValueError, match="naive"):
        encode_instant(datetime(2026, 1, 1))


def test_an_offset_datetime_is_stored_as_the_same_instant() -> None:
    paris = datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert decode_instant(encode_instant(paris)) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_the_card_token_is_kept_out_of_the_json() -> None:
    """Guards the at-rest encryption plan: the token lives only in its own column."""
    record = full_record()
    assert record.card is not None
    token = record.card.card_token
    row = record_to_row(record)
    assert row.card_token == token
    assert all(
        token not in str(value) for name, value in row._asdict().items() if name != "card_token"
    )
    snapshot, snapshot_token = encode_snapshot(record)
    assert snapshot_token == token
    assert token not in snapshot


def test_a_record_without_a_card_has_no_token_column() -> None:
    record = replace(full_record(), card=None)
    assert record_to_row(record).card_token is None
    assert encode_snapshot(record)[1] is None


def test_record_columns_follow_the_row_fields() -> None:
    """Backends build their SQL from RECORD_COLUMNS and read rows positionally into RecordRow."""
    assert RecordRow._fields == RECORD_COLUMNS
    assert RECORD_COLUMNS[0] == "vaulting_request_id"


def test_string_fields_missing_from_old_json_take_their_defaults() -> None:
    """Guards reading data written before a field was added: absent strings decode to ""."""
    row = record_to_row(full_record())
    card = json.loads(row.card or "")
    del card["fingerprint"], card["billing_address"]["address3"]
    parameters = json.loads(row.parameters)
    del parameters["payment_method_type"], parameters["labels"]
    decoded = record_from_row(
        row._replace(card=json.dumps(card), parameters=json.dumps(parameters))
    )
    assert decoded.card is not None
    assert decoded.card.fingerprint == ""
    assert decoded.card.billing_address is not None
    assert decoded.card.billing_address.address3 == ""
    assert decoded.parameters.payment_method_type == "CARD"
    assert decoded.parameters.labels == ()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("parameters", "[]"),
        ("parameters", '{"is_3ds_authentication": "yes"}'),
        ("parameters", '{"labels": [["only-a-key"]]}'),
        ("card", '{"brand": 7}'),
        ("antom_result", '"SUCCESS"'),
        ("acquirer_info", '{"acquirerName": "ADYEN"}'),
        ("card", "{not json"),
        ("status", "DONE"),
        ("created_at", 10**18),
    ],
)
def test_undecodable_rows_are_reported_as_corrupt_data(column: str, value: Any) -> None:
    row = record_to_row(full_record())._replace(**{column: value})
    with pytest.raises(CorruptDataError):
        record_from_row(row)


@pytest.mark.parametrize(
    "change",
    [
        {"card": None},  # token without a card
        {"card_token": None},  # card without its token
    ],
)
def test_a_card_and_its_token_go_together(change: dict[str, Any]) -> None:
    with pytest.raises(CorruptDataError):
        record_from_row(record_to_row(full_record())._replace(**change))


@given(st.sampled_from(["format", "vaulting_request_id", "created_at"]))
def test_snapshots_missing_required_fields_are_corrupt(key: str) -> None:
    snapshot, token = encode_snapshot(full_record())
    document = json.loads(snapshot)
    del document[key]
    with pytest.raises(CorruptDataError):
        decode_snapshot(json.dumps(document), token)


def test_a_snapshot_of_an_unknown_format_is_refused() -> None:
    """Guards against misreading snapshots written by a newer build in a changed format."""
    snapshot, token = encode_snapshot(full_record())
    document = json.loads(snapshot)
    document["format"] = 2
    with pytest.raises(CorruptDataError, match="format"):
        decode_snapshot(json.dumps(document), token)
