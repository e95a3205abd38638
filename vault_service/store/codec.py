"""Domain objects <-> database values, shared by every backend.

One encoding for every backend keeps a record's stored form independent of where it is stored
(a move from SQLite to PostgreSQL copies the JSON and token columns as they are, and converts
the integer instants to ``timestamptz``):

* Instants are integer microseconds since the Unix epoch, UTC (:func:`encode_instant`). They
  are exact (no float or text-format rounding), compare and index as plain integers, and fit a
  64-bit SQL integer for every year 1-9999. They decode to aware UTC datetimes. Naive datetimes
  are refused: the domain only deals in aware ones, and guessing a zone would corrupt data.
* The card token is always kept apart from the JSON (its own column, ``None`` when the record
  has no card), and so are the other sealed fields (:mod:`vault_service.store.sealed_fields`):
  the card fields marked sealed and the acquirer info go into one JSON document of their own,
  the row's ``sealed`` column, which the store encrypts (:mod:`vault_service.store.sealing`);
  the JSON columns keep only clear fields. A row written before that split (``sealed`` is
  ``None``) holds every field in its JSON columns and still reads; ``rotate-data-key`` moves
  its sealed fields out (:func:`split_legacy_record`, :func:`split_legacy_snapshot`).
* Nested values (parameters, card details without the token, addresses, Antom's result,
  acquirer info) are compact JSON. Pairs (labels, env, acquirer info) are JSON arrays of
  ``[key, value]`` so that their order and the domain's tuples round-trip exactly.
* Decoding fills string fields missing from the JSON with the domain's defaults, so that data
  written before a field was added still reads; anything else that does not decode raises
  :class:`~vault_service.store.base.CorruptDataError`.

An event's snapshot is the whole record as one JSON document (:func:`encode_snapshot`), since a
snapshot is read whole and never queried by field; its sealed fields are split off the same way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
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
from vault_service.secret import Secret
from vault_service.store.base import CorruptDataError
from vault_service.store.sealed_fields import SEALED_CARD_FIELDS

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
    sealed: str | None


RECORD_COLUMNS: Final[tuple[str, ...]] = RecordRow._fields


def encode_instant(value: datetime) -> int:
    """Microseconds since the Unix epoch; refuses naive datetimes."""
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the store only accepts timezone-aware ones")
    return (value - _EPOCH) // _MICROSECOND


def decode_instant(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


class _Encoded(NamedTuple):
    """A record's nested documents as JSON text, encoded once for its row and its snapshot
    (a notification writes both, and encoding them was a sixth of a store write's time)."""

    parameters: str
    card: str | None
    antom_result: str | None
    sealed: str


def _encode(record: VaultingRecord) -> _Encoded:
    card, sealed = _split(record)
    return _Encoded(
        parameters=encode_parameters(record.parameters),
        card=None if card is None else _dumps(card),
        antom_result=None
        if record.antom_result is None
        else _dumps(_antom_result_to_json(record.antom_result)),
        sealed=sealed,
    )


def record_to_row(record: VaultingRecord) -> RecordRow:
    """The ``records`` columns for ``record``; ``card_token`` and ``sealed`` in plaintext,
    for the store to seal."""
    return _row(record, _encode(record))


def encode_record(record: VaultingRecord) -> tuple[RecordRow, str]:
    """:func:`record_to_row` and :func:`encode_snapshot`'s document together, each nested
    document encoded once (the snapshot's card token and sealed document are the row's)."""
    encoded = _encode(record)
    return _row(record, encoded), _snapshot(record, encoded)


def _row(record: VaultingRecord, encoded: _Encoded) -> RecordRow:
    return RecordRow(
        vaulting_request_id=record.vaulting_request_id,
        owner=record.owner,
        status=record.status.value,
        parameters=encoded.parameters,
        session_id=record.session.session_id,
        session_data=record.session.session_data,
        session_expires_at=encode_instant(record.session.expires_at),
        session_normal_url=record.session.normal_url,
        card_token=_card_token(record),
        card=encoded.card,
        antom_result=encoded.antom_result,
        acquirer_info="[]",  # sealed: in the sealed document
        created_at=encode_instant(record.created_at),
        updated_at=encode_instant(record.updated_at),
        final_at=None if record.final_at is None else encode_instant(record.final_at),
        sealed=encoded.sealed,
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
    card, acquirer_info = _join(
        None if row.card is None else json.loads(row.card),
        json.loads(row.acquirer_info),
        row.sealed,
    )
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
        card=_card_from_json(card, row.card_token),
        antom_result=None
        if row.antom_result is None
        else _antom_result_from_json(_object(json.loads(row.antom_result), "antom_result")),
        acquirer_info=_pairs_from_json(acquirer_info, "acquirer_info"),
        final_at=None if row.final_at is None else decode_instant(row.final_at),
    )


def encode_snapshot(record: VaultingRecord) -> tuple[str, str | None, str]:
    """``record`` as a JSON document without its sealed fields, and apart, in plaintext for
    the store to seal, its card token and the document of its other sealed fields."""
    encoded = _encode(record)
    return _snapshot(record, encoded), _card_token(record), encoded.sealed


def _snapshot(record: VaultingRecord, encoded: _Encoded) -> str:
    """The snapshot document, spliced from the nested documents already ``encoded``: the same
    text as ``_dumps`` of the document as a dict (these keys in this order, compact
    separators, strings escaped by the same function), without encoding them again."""
    session = record.session
    final_at = None if record.final_at is None else encode_instant(record.final_at)
    return (
        f'{{"format":{_SNAPSHOT_FORMAT},'
        f'"vaulting_request_id":{_string(record.vaulting_request_id)},'
        f'"owner":{_string(record.owner)},'
        f'"status":{_string(record.status.value)},'
        f'"parameters":{encoded.parameters},'
        f'"session":{{"session_id":{_string(session.session_id)},'
        f'"session_data":{_string(session.session_data)},'
        f'"expires_at":{encode_instant(session.expires_at)},'
        f'"normal_url":{_string(session.normal_url)}}},'
        f'"card":{_or_null(encoded.card)},'
        f'"antom_result":{_or_null(encoded.antom_result)},'
        f'"created_at":{encode_instant(record.created_at)},'
        f'"updated_at":{encode_instant(record.updated_at)},'
        f'"final_at":{_or_null(final_at)}}}'
    )


def _card_token(record: VaultingRecord) -> str | None:
    return None if record.card is None else record.card.card_token.reveal()


def _or_null(value: str | int | None) -> str:
    return "null" if value is None else str(value)


def decode_snapshot(snapshot: str, card_token: str | None, sealed: str | None) -> VaultingRecord:
    """The record an event's snapshot, card token and sealed document describe (``sealed``
    is ``None`` for an event written before the split)."""
    try:
        return _decode_snapshot(snapshot, card_token, sealed)
    except (CorruptDataError, ValueError, OverflowError) as error:
        raise CorruptDataError(f"an event snapshot does not decode: {error}") from error


def _decode_snapshot(snapshot: str, card_token: str | None, sealed: str | None) -> VaultingRecord:
    document = _object(json.loads(snapshot), "snapshot")
    if (found := document.get("format")) != _SNAPSHOT_FORMAT:
        raise CorruptDataError(f"unknown snapshot format {found!r}")
    card, acquirer_info = _join(document.get("card"), document.get("acquirer_info", []), sealed)
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
        card=_card_from_json(card, card_token),
        antom_result=None
        if antom_result is None
        else _antom_result_from_json(_object(antom_result, "antom_result")),
        acquirer_info=_pairs_from_json(acquirer_info, "acquirer_info"),
        final_at=None if final_at is None else decode_instant(_int(document, "final_at")),
    )


def split_legacy_record(card: str | None, acquirer_info: str) -> tuple[str | None, str, str]:
    """The ``card``, ``acquirer_info`` and (plaintext) ``sealed`` columns of a row written
    before the sealed fields were split off, as this build writes them."""
    try:
        document = None if card is None else _object(json.loads(card), "card")
        pairs = _pairs_from_json(json.loads(acquirer_info), "acquirer_info")
    except (CorruptDataError, ValueError) as error:
        raise CorruptDataError(f"a record row does not decode: {error}") from error
    clear, sealed = _split_documents(document, pairs)
    return None if clear is None else _dumps(clear), "[]", sealed


def split_legacy_snapshot(snapshot: str) -> tuple[str, str]:
    """An event snapshot written before the sealed fields were split off, as this build
    writes it, and its (plaintext) ``sealed`` document."""
    try:
        document = _object(json.loads(snapshot), "snapshot")
        card = document.get("card")
        pairs = _pairs_from_json(document.pop("acquirer_info", []), "acquirer_info")
        clear, sealed = _split_documents(None if card is None else _object(card, "card"), pairs)
    except (CorruptDataError, ValueError) as error:
        raise CorruptDataError(f"an event snapshot does not decode: {error}") from error
    return _dumps({**document, "card": clear}), sealed


def _split(record: VaultingRecord) -> tuple[JSONObject | None, str]:
    """``record``'s card JSON without its sealed fields, and the sealed document."""
    card = None if record.card is None else _card_to_json(record.card)
    return _split_documents(card, record.acquirer_info)


def _split_documents(
    card: JSONObject | None, acquirer_info: Pairs
) -> tuple[JSONObject | None, str]:
    sealed: JSONObject = {"acquirer_info": _pairs_to_json(acquirer_info)}
    if card is None:
        return None, _dumps(sealed)
    sealed["card"] = {key: value for key, value in card.items() if key in SEALED_CARD_FIELDS}
    return {key: value for key, value in card.items() if key not in SEALED_CARD_FIELDS}, _dumps(
        sealed
    )


def _join(card: object, acquirer_info: object, sealed: str | None) -> tuple[object, object]:
    """The whole card document and the acquirer info of a row: its clear card fields joined
    with its sealed document, or (``sealed`` is ``None``) a row written before the split, as
    it is."""
    if sealed is None:
        return card, acquirer_info
    document = _object(json.loads(sealed), "sealed")
    sealed_card = document.get("card")
    if card is None:
        if sealed_card is not None:
            raise CorruptDataError("sealed card fields are stored without a card")
        return None, document.get("acquirer_info")
    joined = {**_object(card, "card"), **_object(sealed_card, "the sealed card fields")}
    return joined, document.get("acquirer_info")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_string: Final = encode_basestring
"""A string as :func:`_dumps` writes it (``ensure_ascii=False`` escapes with this function)."""


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
        card_token=Secret(card_token),
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
