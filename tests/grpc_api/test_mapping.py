"""Proto <-> domain mapping: nothing dropped, nothing invented."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import (
    Address,
    AntomResult,
    Card,
    CardholderName,
    Event,
    EventSource,
    Session,
    SessionParameters,
    VaultingRecord,
    VaultingStatus,
)
from vault_service.grpc_api import mapping
from vault_service.secret import Secret
from vault_service.service import Checkpoint, StreamedEvent

T0 = datetime(2026, 11, 25, 8, 30, 15, 123000, tzinfo=UTC)
ACQUIRER_FIELDS = sorted(pb.AcquirerInfo.DESCRIPTOR.fields_by_name)


def filled(kind: type[Any]) -> dict[str, str | Secret]:
    """A distinct non-empty value for every string field of a domain dataclass (in a
    :class:`Secret` for a secret one)."""
    values: dict[str, str | Secret] = {}
    for f in fields(kind):
        if f.type == "str":
            values[f.name] = f"{f.name}-value"
        elif f.type == "Secret":
            values[f.name] = Secret(f"{f.name}-value")
    return values


FULL_RECORD = VaultingRecord(
    vaulting_request_id="vr-full",
    owner="checkout",
    parameters=SessionParameters(labels=(("order", "o-1"), ("team", "payments"))),
    session=Session("sid-1", "session-data", T0 + timedelta(minutes=30), "https://antom/x"),
    created_at=T0,
    updated_at=T0 + timedelta(seconds=5),
    status=VaultingStatus.SUCCEEDED,
    card=Card(
        **filled(Card),
        billing_address=Address(**filled(Address)),
        cardholder_name=CardholderName(**filled(CardholderName)),
    ),
    antom_result=AntomResult("SUCCESS", "S", "success", vaulting_status="SUCCESS"),
    acquirer_info=tuple((name, f"{name}-value") for name in ACQUIRER_FIELDS),
    final_at=T0 + timedelta(seconds=5),
)


def unset_fields(message: Message, prefix: str = "") -> list[str]:
    """Paths of every field left at its default, nested messages included."""
    missing: list[str] = []
    for field in message.DESCRIPTOR.fields:
        path = prefix + field.name
        value = getattr(message, field.name)
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if not message.HasField(field.name):
                missing.append(path)
            elif field.message_type.full_name != "google.protobuf.Timestamp":
                missing += unset_fields(value, path + ".")
        elif not value:
            missing.append(path)
    return missing


def back_to_domain(message: Message, kind: type[Any]) -> object:
    """The domain value with the string fields of ``message`` (the way back of the mapping)."""
    wrap = {"str": str, "Secret": Secret}
    return kind(
        **{
            f.name: wrap[f.type](getattr(message, f.name))
            for f in fields(kind)
            if f.type in wrap and f.name in message.DESCRIPTOR.fields_by_name
        }
    )


def test_a_fully_populated_record_round_trips_through_the_contract() -> None:
    """Every field of VaultingResult (card, address, name, Antom and acquirer data, times)
    is filled from a full record, survives the wire, and maps back to the same values."""
    result = pb.VaultingResult.FromString(mapping.vaulting_result(FULL_RECORD).SerializeToString())
    assert unset_fields(result) == []
    card = FULL_RECORD.card
    assert card is not None
    assert back_to_domain(result.card, Card) == replace(
        card, billing_address=None, cardholder_name=None
    )
    assert back_to_domain(result.card.billing_address, Address) == card.billing_address
    assert back_to_domain(result.card.cardholder_name, CardholderName) == card.cardholder_name
    assert (
        replace(
            back_to_domain(result.antom_result, AntomResult),
            vaulting_status=result.antom_vaulting_status,
        )
        == FULL_RECORD.antom_result
    )
    assert sorted((f.name, v) for f, v in result.acquirer_info.ListFields()) == list(
        FULL_RECORD.acquirer_info
    )
    assert result.status == pb.VAULTING_STATUS_SUCCEEDED
    assert tuple(sorted(result.labels.items())) == FULL_RECORD.parameters.labels
    assert result.vaulting_session_id == "sid-1"
    assert result.session_expire_time.ToDatetime(tzinfo=UTC) == FULL_RECORD.session.expires_at
    assert result.create_time.ToDatetime(tzinfo=UTC) == FULL_RECORD.created_at
    assert result.update_time.ToDatetime(tzinfo=UTC) == FULL_RECORD.updated_at
    assert result.final_time.ToDatetime(tzinfo=UTC) == FULL_RECORD.final_at


def test_an_open_record_has_no_final_time_card_or_antom_data() -> None:
    """What the domain does not know stays unset, rather than empty messages that a client
    would read as "reported, but blank"."""
    record = VaultingRecord(
        vaulting_request_id="vr-open",
        owner="checkout",
        parameters=SessionParameters(),
        session=Session("sid", "data", T0),
        created_at=T0,
        updated_at=T0,
        acquirer_info=(("not_a_proto_field", "x"),),
    )
    result = mapping.vaulting_result(record)
    assert result.status == pb.VAULTING_STATUS_SESSION_CREATED
    for name in ("card", "antom_result", "acquirer_info", "final_time"):
        assert not result.HasField(name), name


def test_every_domain_status_and_source_has_a_proto_value() -> None:
    """A status or source added to the domain without a proto value would crash streams."""
    for status in VaultingStatus:
        record = replace(FULL_RECORD, status=status)
        assert mapping.vaulting_result(record).status != pb.VAULTING_STATUS_UNSPECIFIED
    for source in EventSource:
        item = StreamedEvent("tok", Event(1, source, T0, FULL_RECORD))
        assert mapping.stream_item(item).event.source != pb.EVENT_SOURCE_UNSPECIFIED


def test_stream_items_map_to_events_and_checkpoints() -> None:
    """An event carries its token, time, source and full result; a checkpoint its cursor."""
    event = mapping.stream_item(
        StreamedEvent("tok-7", Event(7, EventSource.INQUIRY, T0, FULL_RECORD))
    )
    assert event.WhichOneof("kind") == "event"
    assert event.event.resume_token == "tok-7"
    assert event.event.source == pb.EVENT_SOURCE_INQUIRY
    assert event.event.event_time.ToDatetime(tzinfo=UTC) == T0
    assert event.event.result == mapping.vaulting_result(FULL_RECORD)
    checkpoint = mapping.stream_item(Checkpoint("tok-8", T0))
    assert checkpoint.WhichOneof("kind") == "checkpoint"
    assert checkpoint.checkpoint.resume_token == "tok-8"
    assert checkpoint.checkpoint.checkpoint_time.ToDatetime(tzinfo=UTC) == T0


def test_session_request_applies_defaults() -> None:
    """An empty payment method type is CARD, and absent optionals are absent."""
    vaulting_request_id, parameters = mapping.session_request(
        pb.CreateSessionRequest(vaulting_request_id="vr-1")
    )
    assert vaulting_request_id == "vr-1"
    assert parameters == SessionParameters()
    _, with_false = mapping.session_request(
        pb.CreateSessionRequest(vaulting_request_id="vr-1", is_3ds_authentication=False)
    )
    assert with_false.is_3ds_authentication is False


def test_session_request_keeps_every_given_env_field_under_its_proto_path() -> None:
    """Env is stored as sorted (path, text) pairs: enums by Antom's names, a present zero
    time-zone offset (UTC) and a false flag kept, unset fields left out."""
    _, parameters = mapping.session_request(
        pb.CreateSessionRequest(
            vaulting_request_id="vr-env",
            env=pb.Env(
                terminal_type=pb.TERMINAL_TYPE_WEB,
                os_type=pb.OS_TYPE_IOS,
                client_ip="203.0.113.7",
                screen_width=1920,
                time_zone_offset=0,
                browser_info=pb.BrowserInfo(java_enabled=False, language="en-US"),
            ),
        )
    )
    assert parameters.env == (
        ("browser_info.java_enabled", "false"),
        ("browser_info.language", "en-US"),
        ("client_ip", "203.0.113.7"),
        ("os_type", "IOS"),
        ("screen_width", "1920"),
        ("terminal_type", "WEB"),
        ("time_zone_offset", "0"),
    )


def test_equal_requests_give_equal_parameters() -> None:
    """Map order on the wire does not matter: equal requests must be idempotent replays."""
    one = pb.CreateSessionRequest(vaulting_request_id="vr", labels={"a": "1", "b": "2"})
    other = pb.CreateSessionRequest(vaulting_request_id="vr", payment_method_type="CARD")
    other.labels["b"] = "2"
    other.labels["a"] = "1"
    assert mapping.session_request(one) == mapping.session_request(other)
