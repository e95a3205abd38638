"""What Antom tells about a vaulting (a notification or an inquiry answer) as a domain Observation.

Antom speaks in two vocabularies: a notification's ``result`` is the vaulting outcome (S stored,
F failed), while an inquiry's ``result`` only says whether the inquiry worked and the outcome is
in ``vaultingStatus``. Both end up here as one Observation with the card details Antom returned.
The card token becomes a :class:`~vault_service.secret.Secret` here, where it leaves Antom's
wire model.
"""

from __future__ import annotations

from datetime import datetime

from vault_service.antom import (
    AcquirerInfo,
    InquireVaultingResponse,
    PaymentMethodDetail,
    VaultingNotification,
)
from vault_service.domain import (
    Address,
    AntomResult,
    Card,
    CardholderName,
    EventSource,
    Observation,
    VaultingStatus,
)
from vault_service.secret import Secret

_INQUIRY_STATUS = {
    "SUCCESS": VaultingStatus.SUCCEEDED,
    "FAIL": VaultingStatus.FAILED,
    "PROCESSING": VaultingStatus.PROCESSING,
}


def from_notification(notification: VaultingNotification, now: datetime) -> Observation:
    """A notification: ``S`` means stored, ``F`` failed, ``U`` (undocumented) still open.

    APO notifications may also carry ``vaultingStatus``; when present it is the finer word,
    and one this build does not know gives no status (:class:`Observation`).
    """
    result = notification.result
    status: VaultingStatus | None
    if notification.vaulting_status is not None:
        status = _INQUIRY_STATUS.get(notification.vaulting_status)
    elif result.result_status == "S":
        status = VaultingStatus.SUCCEEDED
    elif result.result_status == "F":
        status = VaultingStatus.FAILED
    else:
        status = VaultingStatus.PROCESSING
    return Observation(
        status=status,
        source=EventSource.NOTIFICATION,
        observed_at=now,
        card=_card(notification.payment_method_detail),
        antom_result=AntomResult(
            result_code=result.result_code,
            result_status=result.result_status,
            result_message=result.result_message,
            vaulting_status=notification.vaulting_status or "",
        ),
        acquirer_info=_acquirer_info(notification.acquirer_info),
    )


def from_inquiry(answer: InquireVaultingResponse, now: datetime) -> Observation | None:
    """An inquiry answer, or ``None`` when it carries no vaulting status to act on (one this
    build does not know still gives an Observation, without a status)."""
    if answer.vaulting_status is None:
        return None
    return Observation(
        status=_INQUIRY_STATUS.get(answer.vaulting_status),
        source=EventSource.INQUIRY,
        observed_at=now,
        card=_card(answer.payment_method_detail),
        antom_result=AntomResult(
            result_code=answer.vaulting_result_code or "",
            result_status={"SUCCESS": "S", "FAIL": "F"}.get(answer.vaulting_status, "U"),
            result_message=answer.vaulting_result_message or "",
            vaulting_status=answer.vaulting_status,
        ),
        acquirer_info=_acquirer_info(answer.acquirer_info),
    )


def expiry(now: datetime) -> Observation:
    return Observation(status=VaultingStatus.EXPIRED, source=EventSource.EXPIRY, observed_at=now)


def _card(detail: PaymentMethodDetail | None) -> Card | None:
    card = detail.card if detail is not None else None
    if card is None:
        return None
    address = card.billing_address
    name = card.cardholder_name
    return Card(
        card_token=Secret(card.card_token or ""),
        brand=card.brand or "",
        masked_card_number=card.masked_card_no or "",
        bin=card.bin or "",
        last_four=card.last_four or card.last4 or "",
        expiry_month=card.expiry_month or "",
        expiry_year=card.expiry_year or "",
        funding=card.funding or "",
        issuing_country=card.issuing_country or "",
        issuer_name=card.issuer_name or "",
        fingerprint=card.fingerprint or "",
        billing_address=None
        if address is None
        else Address(
            region=address.region or "",
            state=address.state or "",
            city=address.city or "",
            address1=address.address1 or "",
            address2=address.address2 or "",
            address3=address.address3 or "",
            zip_code=address.zip_code or "",
        ),
        cardholder_name=None
        if name is None
        else CardholderName(
            first_name=name.first_name or "",
            middle_name=name.middle_name or "",
            last_name=name.last_name or "",
            full_name=name.full_name or "",
        ),
    )


def _acquirer_info(info: AcquirerInfo | None) -> tuple[tuple[str, str], ...]:
    if info is None:
        return ()
    return tuple(sorted((k, v) for k, v in info.model_dump().items() if v))
