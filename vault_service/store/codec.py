"""Domain objects <-> database values, shared by every backend.

One encoding for every backend keeps a record's stored form independent of where it is stored
(a move from SQLite to PostgreSQL copies the JSON and token columns as they are, and converts
the integer instants to ``timestamptz``):

* Instants are integer microseconds since the Unix epoch, UTC (:func:`encode_instant`). They
  are exact (no float or text-format rounding), compare and index as plain integers, and fit a
  64-bit SQL integer for every year 1-9999. They decode to aware UTC datetimes. Naive datetimes
  are refused: the domain only deals in aware ones, and guessing a zone would corrupt data.
* The card token is always kept apart from the JSON (its own column, ``None`` when the record
  has no card) so that a later change can encrypt it at rest without touching the JSON.
* Nested values (parameters, card details without the token, addresses, Antom's result,
  acquirer info) are compact JSON. Pairs (labels, env, acquirer info) are JSON arrays of
  ``[key, value]`` so that their order and the domain's tuples round-trip exactly.
* Decoding fills string fields missing from the JSON with the domain's defaults, so that data
  written before a field was added still reads; anything else that does not decode raises
  :class:`~vault_service.store.base.CorruptDataError`.

An event's snapshot is the whole record as one JSON document (:func:`encode_snapshot`), since a
snapshot is read whole and never queried by field.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple, TypeAlias

from vault_service.domain import (
    Address,
    AntomResult,
    Card,
    CardholderName,
    Session,
    SessionParameters,
    VaultingRecord,
    VaultingStatus,
)
from vault_service.store.base import CorruptDataError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_SNAPSHOT_FORMAT: Final = 1

JSONObject: TypeAlias = dict[str, object]
Pairs: TypeAlias = tuple[tuple[str, str], ...]


class RecordRow(NamedTuple):
    """A record as the columns of the ``records`` table, in the order of ``RECORD_COLUMNS``."""

    vaulting_request_id: str
    owner: str
    status: str
    parameters: str
    session_id: str
    session_data: str
    session_expires_at: int
    session_normal_url: str
    card_token: str | None
    card: str | None
    antom_result: str | None
    acquirer_info: str
    created_at: int
    updated_at: int
    final_at: int | None


RECORD_COLUMNS: Final[tuple[str, ...]] = RecordRow._fields


def encode_instant(value: datetime) -> int:
    """Microseconds since the Unix epoch; refuses naive datetimes."""
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the store only accepts timezone-aware ones")
    return (value - _EPOCH) // _MICROSECOND


def decode_instant(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def record_to_row(record: VaultingRecord) -> RecordRow:
    """The ``records`` columns for ``record``."""
    return RecordRow(
        vaulting_request_id=record.vaulting_request_id,
        owner=record.owner,
        status=record.status.value,
        parameters=encode_parameters(record.parameters),
        session_id=record.session.session_id,
        session_data=record.session.session_data,
        session_expires_at=encode_instant(record.session.expires_at),
        session_normal_url=record.session.normal_url,
        card_token=None if record.card is None else record.card.card_token,
        card=None if record.card is None else _dumps(_card_to_json(record.card)),
        antom_result=None
        if record.antom_result is None
        else _dumps(_antom_result_to_json(record.antom_result)),
        acquirer_info=_dumps(_pairs_to_json(record.acquirer_info)),
        created_at=encode_instant(record.created_at),
        updated_at=encode_instant(record.updated_at),
        final_at=None if record.final_at is None else encode_instant(record.final_at),
    )


def encode_parameters(parameters: SessionParameters) -> str:
    """A session's parameters as the JSON text the ``parameters`` columns hold."""
    return _dumps(_parameters_to_json(parameters))


def decode_parameters(text: str) -> SessionParameters:
    """The parameters stored as ``text``; :class:`CorruptDataError` if they do not decode."""
    try:
        return _parameters_from_json(_object(json.loads(text), "parameters"))
    except ValueError as error:
        raise CorruptDataError(f"stored session parameters do not decode: {error}") from error


def record_from_row(row: RecordRow) -> VaultingRecord:
    """The record stored as ``row``."""
    try:
        return _record_from_row(row)
    except (CorruptDataError, ValueError, OverflowError) as error:
        raise CorruptDataError(
            f"the record {row.vaulting_request_id!r} does not decode: {error}"
        ) from error


def _record_from_row(row: RecordRow) -> VaultingRecord:
    return VaultingRecord(
        vaulting_request_id=row.vaulting_request_id,
        owner=row.owner,
        parameters=_parameters_from_json(_object(json.loads(row.parameters), "parameters")),
        session=Session(
            session_id=row.session_id,
            session_data=row.session_data,
            expires_at=decode_instant(row.session_expires_at),
            normal_url=row.session_normal_url,
        ),
        created_at=decode_instant(row.created_at),
        updated_at=decode_instant(row.updated_at),
        status=VaultingStatus(row.status),
        card=_card_from_json(None if row.card is None else json.loads(row.card), row.card_token),
        antom_result=None
        if row.antom_result is None
        else _antom_result_from_json(_object(json.loads(row.antom_result), "antom_result")),
        acquirer_info=_pairs_from_json(json.loads(row.acquirer_info), "acquirer_info"),
        final_at=None if row.final_at is None else decode_instant(row.final_at),
    )


def encode_snapshot(record: VaultingRecord) -> tuple[str, str | None]:
    """``record`` as a JSON document without its card token, and the card token apart."""
    document: JSONObject = {
        "format": _SNAPSHOT_FORMAT,
        "vaulting_request_id": record.vaulting_request_id,
        "owner": record.owner,
        "status": record.status.value,
        "parameters": _parameters_to_json(record.parameters),
        "session": {
            "session_id": record.session.session_id,
            "session_data": record.session.session_data,
            "expires_at": encode_instant(record.session.expires_at),
            "normal_url": record.session.normal_url,
        },
        "card": None if record.card is None else _card_to_json(record.card),
        "antom_result": None
        if record.antom_result is None
        else _antom_result_to_json(record.antom_result),
        "acquirer_info": _pairs_to_json(record.acquirer_info),
        "created_at": encode_instant(record.created_at),
        "updated_at": encode_instant(record.updated_at),
        "final_at": None if record.final_at is None else encode_instant(record.final_at),
    }
    return _dumps(document), None if record.card is None else record.card.card_token


def decode_snapshot(snapshot: str, card_token: str | None) -> VaultingRecord:
    """The record an event's snapshot (and its card token) describe."""
    try:
        return _decode_snapshot(snapshot, card_token)
    except (CorruptDataError, ValueError, OverflowError) as error:
        raise CorruptDataError(f"an event snapshot does not decode: {error}") from error


def _decode_snapshot(snapshot: str, card_token: str | None) -> VaultingRecord:
    document = _object(json.loads(snapshot), "snapshot")
    if (found := document.get("format")) != _SNAPSHOT_FORMAT:
        raise CorruptDataError(f"unknown snapshot format {found!r}")
    session = _object(document.get("session"), "session")
    antom_result = document.get("antom_result")
    final_at = document.get("final_at")
    return VaultingRecord(
        vaulting_request_id=_required_str(document, "vaulting_request_id"),
        owner=_required_str(document, "owner"),
        parameters=_parameters_from_json(_object(document.get("parameters"), "parameters")),
        session=Session(
            session_id=_required_str(session, "session_id"),
            session_data=_required_str(session, "session_data"),
            expires_at=decode_instant(_int(session, "expires_at")),
            normal_url=_str(session, "normal_url"),
        ),
        created_at=decode_instant(_int(document, "created_at")),
        updated_at=decode_instant(_int(document, "updated_at")),
        status=VaultingStatus(_required_str(document, "status")),
        card=_card_from_json(document.get("card"), card_token),
        antom_result=None
        if antom_result is None
        else _antom_result_from_json(_object(antom_result, "antom_result")),
        acquirer_info=_pairs_from_json(document.get("acquirer_info", []), "acquirer_info"),
        final_at=None if final_at is None else decode_instant(_int(document, "final_at")),
    )


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _parameters_to_json(parameters: SessionParameters) -> JSONObject:
    return {
        "payment_method_type": parameters.payment_method_type,
        "redirect_url": parameters.redirect_url,
        "merchant_region": parameters.merchant_region,
        "is_3ds_authentication": parameters.is_3ds_authentication,
        "env": _pairs_to_json(parameters.env),
        "labels": _pairs_to_json(parameters.labels),
    }


def _parameters_from_json(document: JSONObject) -> SessionParameters:
    is_3ds = document.get("is_3ds_authentication")
    if is_3ds is not None and not isinstance(is_3ds, bool):
        raise CorruptDataError(f"is_3ds_authentication must be a boolean or null, not {is_3ds!r}")
    return SessionParameters(
        payment_method_type=_str(document, "payment_method_type", "CARD"),
        redirect_url=_str(document, "redirect_url"),
        merchant_region=_str(document, "merchant_region"),
        is_3ds_authentication=is_3ds,
        env=_pairs_from_json(document.get("env", []), "env"),
        labels=_pairs_from_json(document.get("labels", []), "labels"),
    )


def _card_to_json(card: Card) -> JSONObject:
    return {
        "brand": card.brand,
        "masked_card_number": card.masked_card_number,
        "bin": card.bin,
        "last_four": card.last_four,
        "expiry_month": card.expiry_month,
        "expiry_year": card.expiry_year,
        "funding": card.funding,
        "issuing_country": card.issuing_country,
        "issuer_name": card.issuer_name,
        "fingerprint": card.fingerprint,
        "billing_address": None
        if card.billing_address is None
        else _address_to_json(card.billing_address),
        "cardholder_name": None
        if card.cardholder_name is None
        else _cardholder_name_to_json(card.cardholder_name),
    }


def _card_from_json(value: object, card_token: str | None) -> Card | None:
    if value is None:
        if card_token is not None:
            raise CorruptDataError("a card token is stored without a card")
        return None
    if card_token is None:
        raise CorruptDataError("a card is stored without its card token column")
    document = _object(value, "card")
    address = document.get("billing_address")
    name = document.get("cardholder_name")
    return Card(
        card_token=card_token,
        brand=_str(document, "brand"),
        masked_card_number=_str(document, "masked_card_number"),
        bin=_str(document, "bin"),
        last_four=_str(document, "last_four"),
        expiry_month=_str(document, "expiry_month"),
        expiry_year=_str(document, "expiry_year"),
        funding=_str(document, "funding"),
        issuing_country=_str(document, "issuing_country"),
        issuer_name=_str(document, "issuer_name"),
        fingerprint=_str(document, "fingerprint"),
        billing_address=None
        if address is None
        else _address_from_json(_object(address, "billing_address")),
        cardholder_name=None
        if name is None
        else _cardholder_name_from_json(_object(name, "cardholder_name")),
    )


def _address_to_json(address: Address) -> JSONObject:
    return {
        "region": address.region,
        "state": address.state,
        "city": address.city,
        "address1": address.address1,
        "address2": address.address2,
        "address3": address.address3,
        "zip_code": address.zip_code,
    }


def _address_from_json(document: JSONObject) -> Address:
    return Address(
        region=_str(document, "region"),
        state=_str(document, "state"),
        city=_str(document, "city"),
        address1=_str(document, "address1"),
        address2=_str(document, "address2"),
        address3=_str(document, "address3"),
        zip_code=_str(document, "zip_code"),
    )


def _cardholder_name_to_json(name: CardholderName) -> JSONObject:
    return {
        "first_name": name.first_name,
        "middle_name": name.middle_name,
        "last_name": name.last_name,
        "full_name": name.full_name,
    }


def _cardholder_name_from_json(document: JSONObject) -> CardholderName:
    return CardholderName(
        first_name=_str(document, "first_name"),
        middle_name=_str(document, "middle_name"),
        last_name=_str(document, "last_name"),
        full_name=_str(document, "full_name"),
    )


def _antom_result_to_json(result: AntomResult) -> JSONObject:
    return {
        "result_code": result.result_code,
        "result_status": result.result_status,
        "result_message": result.result_message,
        "vaulting_status": result.vaulting_status,
    }


def _antom_result_from_json(document: JSONObject) -> AntomResult:
    return AntomResult(
        result_code=_str(document, "result_code"),
        result_status=_str(document, "result_status"),
        result_message=_str(document, "result_message"),
        vaulting_status=_str(document, "vaulting_status"),
    )


def _pairs_to_json(pairs: Pairs) -> list[list[str]]:
    return [[key, value] for key, value in pairs]


def _pairs_from_json(value: object, what: str) -> Pairs:
    if not isinstance(value, list):
        raise CorruptDataError(f"{what} must be a JSON array of [key, value] pairs")
    pairs: list[tuple[str, str]] = []
    for item in value:
        match item:
            case [str() as key, str() as pair_value]:
                pairs.append((key, pair_value))
            case _:
                raise CorruptDataError(f"{what} holds {item!r}, not a [key, value] pair of strings")
    return tuple(pairs)


def _object(value: object, what: str) -> JSONObject:
    if not isinstance(value, dict):
        raise CorruptDataError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _str(document: JSONObject, key: str, default: str = "") -> str:
    value = document.get(key, default)
    if not isinstance(value, str):
        raise CorruptDataError(f"{key} must be a string, not {value!r}")
    return value


def _required_str(document: JSONObject, key: str) -> str:
    if key not in document:
        raise CorruptDataError(f"{key} is missing")
    return _str(document, key)


def _int(document: JSONObject, key: str) -> int:
    value = document.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CorruptDataError(f"{key} must be an integer, not {value!r}")
    return value
