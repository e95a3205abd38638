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
from vault_service.domain import Card, VaultingRecord
from vault_service.store import CorruptDataError
from vault_service.store.codec import (
    RECORD_COLUMNS,
    RecordRow,
    decode_instant,
    decode_snapshot,
    encode_instant,
    encode_record,
    encode_snapshot,
    record_from_row,
    record_to_row,
    split_legacy_record,
    split_legacy_snapshot,
)
from vault_service.store.sealed_fields import CARD_FIELDS, RECORD_FIELDS


def _all_datetimes(record: VaultingRecord) -> list[datetime]:
    found = [record.created_at, record.updated_at, record.session.expires_at]
    return found if record.final_at is None else [*found, record.final_at]


@given(records)
def test_record_row_round_trip(record: VaultingRecord) -> None:
    decoded = record_from_row(record_to_row(record))
    assert decoded == record
    assert all(value.tzinfo is UTC for value in _all_datetimes(decoded))


@given(records)
def test_a_snapshot_is_the_text_its_document_dumps_to(record: VaultingRecord) -> None:
    """Guards the spliced snapshot: byte for byte what dumping the document as one dict gave
    before its nested documents were shared with the row, and the row encoded with it is
    :func:`record_to_row`'s."""
    snapshot, token, sealed = encode_snapshot(record)
    document = json.loads(snapshot)
    assert list(document) == [
        "format",
        "vaulting_request_id",
        "owner",
        "status",
        "parameters",
        "session",
        "card",
        "antom_result",
        "created_at",
        "updated_at",
        "final_at",
    ]
    compact = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert snapshot == compact
    assert encode_record(record) == (record_to_row(record), snapshot)
    assert (token, sealed) == (record_to_row(record).card_token, record_to_row(record).sealed)


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


SEALED_VALUES = (
    "ALIPAY-token-0001",  # the card token
    "1 Market St",  # the billing address
    "San Francisco",
    "94107",
    "Lovelace",  # the cardholder name
    "2031",  # the expiry
    "fp-1",  # the fingerprint
    "ADYEN",  # acquirer info
    "referenceRequestId",
)


def test_sealed_fields_are_kept_out_of_the_clear_columns() -> None:
    """Guards issue 9 #3: the card token, and every other field sealed_fields marks sealed
    (billing address, cardholder name, expiry, fingerprint, acquirer info), live only in the
    columns the store encrypts (card_token and sealed), in rows and in snapshots; the fields
    in clear stay queryable in the card JSON."""
    record = full_record()
    row = record_to_row(record)
    clear = [
        str(value) for name, value in row._asdict().items() if name not in {"card_token", "sealed"}
    ]
    snapshot, token, sealed = encode_snapshot(record)
    assert token == row.card_token == "ALIPAY-token-0001"
    for value in SEALED_VALUES:
        assert all(value not in column for column in [*clear, snapshot]), value
        assert value in f"{row.card_token}{row.sealed}", value
        assert value in f"{token}{sealed}", value
    card = json.loads(row.card or "")
    assert (card["brand"], card["bin"], card["last_four"]) == ("VISA", "409280", "8764")


def test_every_card_field_is_decided_sealed_or_clear_once() -> None:
    """Guards the one list of sealed fields: a field added to Card fails here until the
    table says whether it is sealed, and why."""
    names = [field.name for field in CARD_FIELDS]
    assert sorted(names) == sorted(Card.__dataclass_fields__)
    assert all(field.why for field in (*CARD_FIELDS, *RECORD_FIELDS))
    assert {field.name for field in RECORD_FIELDS} <= set(VaultingRecord.__dataclass_fields__)


@given(records)
def test_rows_and_snapshots_written_before_the_split_read_and_split(
    record: VaultingRecord,
) -> None:
    """Guards the upgrade of schema version 1 rows (every field in clear JSON, no sealed
    document): they read as they are, and rotate-data-key's split turns them into this
    build's layout with the same content."""
    row = record_to_row(record)
    snapshot, token, sealed = encode_snapshot(record)
    legacy_card = json.loads(row.card) if row.card else None
    document = json.loads(sealed)
    if legacy_card is not None:
        legacy_card.update(document["card"])
    legacy_row = row._replace(
        card=None if legacy_card is None else json.dumps(legacy_card),
        acquirer_info=json.dumps(document["acquirer_info"]),
        sealed=None,
    )
    legacy_snapshot = json.dumps(
        {
            **json.loads(snapshot),
            "card": legacy_card,
            "acquirer_info": document["acquirer_info"],
        }
    )
    assert record_from_row(legacy_row) == record
    assert decode_snapshot(legacy_snapshot, token, None) == record

    card, acquirer_info, split = split_legacy_record(legacy_row.card, legacy_row.acquirer_info)
    assert record_from_row(row._replace(card=card, acquirer_info=acquirer_info, sealed=split)) == (
        record
    )
    split_snapshot, split_sealed = split_legacy_snapshot(legacy_snapshot)
    assert decode_snapshot(split_snapshot, token, split_sealed) == record


def test_a_record_without_a_card_has_no_token_column() -> None:
    record = replace(full_record(), card=None)
    assert record_to_row(record).card_token is None
    assert encode_snapshot(record)[1] is None
    assert json.loads(record_to_row(record).sealed or "") == {
        "acquirer_info": [["acquirerName", "ADYEN"], ["referenceRequestId", "r1"]]
    }


def test_record_columns_follow_the_row_fields() -> None:
    """Backends build their SQL from RECORD_COLUMNS and read rows positionally into RecordRow."""
    assert RecordRow._fields == RECORD_COLUMNS
    assert RECORD_COLUMNS[0] == "vaulting_request_id"


def test_string_fields_missing_from_old_json_take_their_defaults() -> None:
    """Guards reading data written before a field was added: absent strings decode to ""."""
    row = record_to_row(full_record())
    sealed = json.loads(row.sealed or "")
    del sealed["card"]["fingerprint"], sealed["card"]["billing_address"]["address3"]
    parameters = json.loads(row.parameters)
    del parameters["payment_method_type"], parameters["labels"]
    decoded = record_from_row(
        row._replace(sealed=json.dumps(sealed), parameters=json.dumps(parameters))
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
        ("sealed", '{"card": {}, "acquirer_info": {"acquirerName": "ADYEN"}}'),
        ("sealed", '{"acquirer_info": []}'),  # a card without its sealed fields
        ("sealed", "{not json"),
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
    snapshot, token, sealed = encode_snapshot(full_record())
    document = json.loads(snapshot)
    del document[key]
    with pytest.raises(CorruptDataError):
        decode_snapshot(json.dumps(document), token, sealed)


def test_a_snapshot_of_an_unknown_format_is_refused() -> None:
    """Guards against misreading snapshots written by a newer build in a changed format."""
    snapshot, token, sealed = encode_snapshot(full_record())
    document = json.loads(snapshot)
    document["format"] = 2
    with pytest.raises(CorruptDataError, match="format"):
        decode_snapshot(json.dumps(document), token, sealed)
