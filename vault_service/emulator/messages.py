"""The JSON documents Antom sends, built as plain dicts to stay faithful to the wire.

Field names, nesting and the trailing dot in ``success.`` follow Antom's samples; the card
object lists only what Antom returns about a vaulted card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from vault_service.emulator.cards import CardDetail
from vault_service.emulator.sessions import Phase, Session
from vault_service.emulator.wire import antom_time, compact_json

ExpirySpelling = Literal["expiry", "expired"]

SUCCESS_RESULT: Final = {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success."}
UNKNOWN_EXCEPTION_MESSAGE: Final = "An API calling is failed, which is caused by unknown reasons."
_VAULTING_STATUS: Final = {
    Phase.AWAITING_CARD: "PROCESSING",
    Phase.VERIFYING: "PROCESSING",
    Phase.SUCCEEDED: "SUCCESS",
    Phase.FAILED: "FAIL",
}


@dataclass(frozen=True, slots=True)
class Answer:
    """An API answer's body plus what the one-line call log reports about it."""

    body: bytes
    result_status: str
    result_code: str


def result(code: str, status: str, message: str) -> dict[str, str]:
    return {"resultCode": code, "resultStatus": status, "resultMessage": message}


def failure(code: str, message: str, status: str = "F") -> Answer:
    return Answer(compact_json({"result": result(code, status, message)}), status, code)


def create_response(session: Session) -> bytes:
    return compact_json(
        {
            "result": SUCCESS_RESULT,
            "vaultingSessionData": session.session_data,
            "vaultingSessionId": session.session_id,
            "vaultingSessionExpiryTime": antom_time(session.expires_at),
            "normalUrl": session.normal_url,
        }
    )


def inquiry_response(session: Session) -> bytes:
    document: dict[str, object] = {
        "result": SUCCESS_RESULT,
        "vaultingRequestId": session.vaulting_request_id,
        "vaultingStatus": _VAULTING_STATUS[session.phase],
        "vaultingResultCode": session.result_code,
        "vaultingResultMessage": session.result_message,
    }
    if session.phase is Phase.SUCCEEDED:
        document["paymentMethodDetail"] = _payment_method_detail(session, "expiry")
    return compact_json(document)


def notification_body(session: Session, spelling: ExpirySpelling) -> bytes:
    """The notifyVaulting body for a session that reached its final result."""
    if session.phase is Phase.SUCCEEDED:
        outcome = result(session.result_code, "S", "success")
    else:
        outcome = result(session.result_code, "F", session.result_message)
    return compact_json(
        {
            "result": outcome,
            "vaultingRequestId": session.vaulting_request_id,
            "paymentMethodDetail": _payment_method_detail(session, spelling),
            "vaultingCreateTime": antom_time(session.created_at),
        }
    )


def _payment_method_detail(session: Session, spelling: ExpirySpelling) -> dict[str, object]:
    detail: dict[str, object] = {"paymentMethodType": "CARD"}
    if session.card is not None:
        detail["card"] = card_json(
            session.card, vaulted=session.phase is Phase.SUCCEEDED, spelling=spelling
        )
    return detail


def card_json(card: CardDetail, *, vaulted: bool, spelling: ExpirySpelling) -> dict[str, object]:
    """Antom's card object; the token and fingerprint exist only for a vaulted card."""
    document: dict[str, object] = {}
    if vaulted:
        document["cardToken"] = card.card_token
    document.update(
        {
            "brand": card.brand,
            "maskedCardNo": card.masked_card_no,
            "bin": card.bin,
            "lastFour": card.last_four,
            f"{spelling}Month": card.expiry_month,
            f"{spelling}Year": card.expiry_year,
            "funding": card.funding,
            "issuingCountry": card.issuing_country,
            "issuerName": card.issuer_name,
            "cardholderName": dict(card.cardholder_name),
        }
    )
    if card.billing_address is not None:
        document["billingAddress"] = dict(card.billing_address)
    if vaulted:
        document["fingerprint"] = card.fingerprint
    return document
