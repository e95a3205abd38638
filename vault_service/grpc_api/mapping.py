"""Proto messages <-> domain values, field for field, with no decisions of its own.

Requests are validated (:mod:`.validation`) before they reach this module, so the conversions
here never fail on caller input. Domain values come from our own store, so every field of the
contract that the domain knows about is filled in here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import (
    Address,
    AntomResult,
    Card,
    CardholderName,
    EventSource,
    ResultFilter,
    SessionParameters,
    VaultingRecord,
    VaultingStatus,
)
from vault_service.service import (
    Checkpoint,
    CreatedSession,
    Page,
    StreamItem,
    UnreadableItem,
)

DEFAULT_PAYMENT_METHOD_TYPE: Final = "CARD"
UNREADABLE_REASON: Final = (
    "the stored event fails its integrity check or does not decode; read the result with GetResult"
)

_STATUS: Final[dict[VaultingStatus, pb.VaultingStatus.ValueType]] = {
    VaultingStatus.SESSION_CREATED: pb.VAULTING_STATUS_SESSION_CREATED,
    VaultingStatus.PROCESSING: pb.VAULTING_STATUS_PROCESSING,
    VaultingStatus.SUCCEEDED: pb.VAULTING_STATUS_SUCCEEDED,
    VaultingStatus.FAILED: pb.VAULTING_STATUS_FAILED,
    VaultingStatus.EXPIRED: pb.VAULTING_STATUS_EXPIRED,
}
_STATUS_OF: Final = {number: status for status, number in _STATUS.items()}
_SOURCE: Final[dict[EventSource, pb.EventSource.ValueType]] = {
    EventSource.NOTIFICATION: pb.EVENT_SOURCE_NOTIFICATION,
    EventSource.INQUIRY: pb.EVENT_SOURCE_INQUIRY,
    EventSource.EXPIRY: pb.EVENT_SOURCE_EXPIRY,
}
_ACQUIRER_FIELDS: Final = frozenset(pb.AcquirerInfo.DESCRIPTOR.fields_by_name)


def session_request(request: pb.CreateSessionRequest) -> tuple[str, SessionParameters]:
    """The id and the parameters of a (validated) CreateSession request.

    Defaults are applied and ``env`` and ``labels`` are sorted so that two requests the contract
    calls equal give equal :class:`SessionParameters`: that equality decides idempotent replays.
    """
    return request.vaulting_request_id, SessionParameters(
        payment_method_type=request.payment_method_type or DEFAULT_PAYMENT_METHOD_TYPE,
        redirect_url=request.redirect_url,
        merchant_region=request.merchant_region,
        is_3ds_authentication=(
            request.is_3ds_authentication if request.HasField("is_3ds_authentication") else None
        ),
        env=tuple(sorted(_given_fields(request.env, ""))),
        labels=tuple(sorted(request.labels.items())),
    )


def _given_fields(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    """``(proto path, text)`` for every field the caller set, nested messages flattened.

    Driven by the descriptor so that a field added to ``Env`` is stored without a change here.
    ``ListFields`` lists exactly the given fields: non-zero scalars, and ``optional`` ones
    (such as ``time_zone_offset``, where 0 means UTC) whenever they are present. Enums are
    stored under Antom's names (``TERMINAL_TYPE_WEB`` -> ``WEB``), the vocabulary of risk review.
    """
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from _given_fields(value, path + ".")
        elif field.enum_type is not None:
            names = field.enum_type.values_by_number
            yield path, names[value].name.removeprefix(names[0].name.removesuffix("UNSPECIFIED"))
        elif field.type == FieldDescriptor.TYPE_BOOL:
            yield path, "true" if value else "false"
        else:
            yield path, str(value)


def created_session(created: CreatedSession) -> pb.CreateSessionResponse:
    record = created.record
    session = record.session
    return pb.CreateSessionResponse(
        vaulting_request_id=record.vaulting_request_id,
        vaulting_session_id=session.session_id,
        session_data=session.session_data,
        expire_time=timestamp(session.expires_at),
        normal_url=session.normal_url,
        created=created.created,
    )


def vaulting_result(record: VaultingRecord) -> pb.VaultingResult:
    result = pb.VaultingResult(
        vaulting_request_id=record.vaulting_request_id,
        status=_STATUS[record.status],
        labels=dict(record.parameters.labels),
        vaulting_session_id=record.session.session_id,
        session_expire_time=timestamp(record.session.expires_at),
        create_time=timestamp(record.created_at),
        update_time=timestamp(record.updated_at),
    )
    if record.card is not None:
        result.card.CopyFrom(_card(record.card))
    if record.antom_result is not None:
        result.antom_result.CopyFrom(_antom_result(record.antom_result))
        result.antom_vaulting_status = record.antom_result.vaulting_status
    acquirer_info = {k: v for k, v in record.acquirer_info if k in _ACQUIRER_FIELDS}
    if acquirer_info:
        result.acquirer_info.CopyFrom(pb.AcquirerInfo(**acquirer_info))
    if record.final_at is not None:
        result.final_time.CopyFrom(timestamp(record.final_at))
    return result


def result_filter(owner: str | None, request: pb.ListResultsRequest) -> ResultFilter:
    """The filters of a (validated) ListResults request, for the records ``owner`` may read."""
    return ResultFilter(
        owner=owner,
        statuses=frozenset(_STATUS_OF[number] for number in request.statuses) or None,
        labels=tuple(sorted(request.labels.items())),
        updated_from=request.update_time_start.ToDatetime(tzinfo=UTC)
        if request.HasField("update_time_start")
        else None,
        updated_before=request.update_time_end.ToDatetime(tzinfo=UTC)
        if request.HasField("update_time_end")
        else None,
    )


def list_results(page: Page) -> pb.ListResultsResponse:
    return pb.ListResultsResponse(
        results=[vaulting_result(record) for record in page.records],
        next_page_token=page.next_page_token,
    )


def stream_item(item: StreamItem) -> pb.StreamResultsResponse:
    """One StreamResults message: an event, a checkpoint carrying only the cursor, or the
    report of an event that cannot be read."""
    if isinstance(item, Checkpoint):
        return pb.StreamResultsResponse(
            checkpoint=pb.Checkpoint(
                resume_token=item.resume_token, checkpoint_time=timestamp(item.at)
            )
        )
    if isinstance(item, UnreadableItem):
        return pb.StreamResultsResponse(
            unreadable_event=pb.UnreadableEvent(
                resume_token=item.resume_token,
                vaulting_request_id=item.vaulting_request_id,
                reason=UNREADABLE_REASON,
            )
        )
    event = item.event
    return pb.StreamResultsResponse(
        event=pb.ResultEvent(
            resume_token=item.resume_token,
            result=vaulting_result(event.record),
            event_time=timestamp(event.occurred_at),
            source=_SOURCE[event.source],
        )
    )


def timestamp(moment: datetime) -> Timestamp:
    """A Timestamp of an aware datetime (the store keeps every time in UTC)."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _card(card: Card) -> pb.Card:
    message = pb.Card(
        card_token=card.card_token.reveal(),
        brand=card.brand,
        masked_card_number=card.masked_card_number,
        bin=card.bin,
        last_four=card.last_four,
        expiry_month=card.expiry_month,
        expiry_year=card.expiry_year,
        funding=card.funding,
        issuing_country=card.issuing_country,
        issuer_name=card.issuer_name,
        fingerprint=card.fingerprint,
    )
    if card.billing_address is not None:
        message.billing_address.CopyFrom(_address(card.billing_address))
    if card.cardholder_name is not None:
        message.cardholder_name.CopyFrom(_cardholder_name(card.cardholder_name))
    return message


def _address(address: Address) -> pb.Address:
    return pb.Address(
        region=address.region,
        state=address.state,
        city=address.city,
        address1=address.address1,
        address2=address.address2,
        address3=address.address3,
        zip_code=address.zip_code,
    )


def _cardholder_name(name: CardholderName) -> pb.CardholderName:
    return pb.CardholderName(
        first_name=name.first_name,
        middle_name=name.middle_name,
        last_name=name.last_name,
        full_name=name.full_name,
    )


def _antom_result(result: AntomResult) -> pb.AntomResult:
    return pb.AntomResult(
        result_code=result.result_code,
        result_status=result.result_status,
        result_message=result.result_message,
    )
