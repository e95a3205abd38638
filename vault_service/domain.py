"""The vaulting record, its states and transitions, events and resume tokens. Pure: no I/O.

A record moves ``SESSION_CREATED -> PROCESSING -> SUCCEEDED | FAILED``, or to ``EXPIRED`` when
the session lapses without a result. Transitions are monotonic so that duplicate, late or
reordered observations (Antom retries notifications; an inquiry can race a notification) never
move a record backwards: a final Antom result is never overwritten, and a non-final one never
replaces a final one. ``EXPIRED`` is our own inference from the session's expiry time, so a
final result that Antom reports afterwards still replaces it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

from vault_service.errors import InvalidArgumentError
from vault_service.secret import Secret

MAX_VAULTING_REQUEST_ID_CHARS: Final = 64
ANONYMOUS_OWNER: Final = "anonymous"
MAX_EVENT_ID: Final = 2**63 - 1
"""The largest event id: event ids are signed 64-bit SQL integers in every backend."""

Clock = Callable[[], datetime]
"""Where the use cases read the time (aware UTC); injected so that tests can move it."""


def utc_now() -> datetime:
    """The real :data:`Clock`."""
    return datetime.now(UTC)


class VaultingStatus(enum.StrEnum):
    SESSION_CREATED = "SESSION_CREATED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def is_antom_final(self) -> bool:
        """Final by Antom's word (not our expiry inference)."""
        return self in {VaultingStatus.SUCCEEDED, VaultingStatus.FAILED}


_FINAL: Final = frozenset({VaultingStatus.SUCCEEDED, VaultingStatus.FAILED, VaultingStatus.EXPIRED})


class EventSource(enum.StrEnum):
    """What told us about a state change."""

    NOTIFICATION = "NOTIFICATION"
    INQUIRY = "INQUIRY"
    EXPIRY = "EXPIRY"


@dataclass(frozen=True, slots=True)
class Address:
    """The buyer's billing address: personal data, so its repr says only that it is there."""

    region: str = ""
    state: str = ""
    city: str = ""
    address1: str = ""
    address2: str = ""
    address3: str = ""
    zip_code: str = ""

    def __repr__(self) -> str:
        return "Address(<hidden>)"


@dataclass(frozen=True, slots=True)
class CardholderName:
    """The buyer's name on the card: personal data, so its repr says only that it is there."""

    first_name: str = ""
    middle_name: str = ""
    last_name: str = ""
    full_name: str = ""

    def __repr__(self) -> str:
        return "CardholderName(<hidden>)"


NO_CARD_TOKEN: Final = Secret("")
"""The token of a card Antom described without one (an inquiry answer may)."""


@dataclass(frozen=True, slots=True)
class Card:
    """What Antom returns about a vaulted card; never the PAN or CVV.

    The card token is a :class:`~vault_service.secret.Secret`: whoever holds it can charge the
    card, so only the edges that must hand it on (the store's codec, the gRPC mapping) reveal
    it. The repr also leaves out every other field the store seals at rest
    (:mod:`vault_service.store.sealed_fields`): what identifies the card or the buyer.
    """

    card_token: Secret = NO_CARD_TOKEN
    brand: str = ""
    masked_card_number: str = ""
    bin: str = ""
    last_four: str = ""
    expiry_month: str = field(default="", repr=False)
    expiry_year: str = field(default="", repr=False)
    funding: str = ""
    issuing_country: str = ""
    issuer_name: str = ""
    fingerprint: str = field(default="", repr=False)
    billing_address: Address | None = None
    cardholder_name: CardholderName | None = None


@dataclass(frozen=True, slots=True)
class AntomResult:
    """Antom's own outcome codes for the vaulting (from a notification or an inquiry)."""

    result_code: str = ""
    result_status: str = ""
    result_message: str = ""
    vaulting_status: str = ""
    """Antom's ``vaultingStatus`` word exactly as sent, including one this build does not
    know (Antom may add some); empty when Antom sent none."""


@dataclass(frozen=True, slots=True)
class SessionParameters:
    """What the caller asked for; equal parameters make a repeated CreateSession a replay."""

    payment_method_type: str = "CARD"
    redirect_url: str = ""
    merchant_region: str = ""
    is_3ds_authentication: bool | None = None
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """The createVaultingSession request first sent for an id: who asked, with what, and the
    exact body. Antom's idempotency compares a retry with the first attempt, and the body holds
    our notify URL (a setting that may change between an attempt and its retry), so every retry
    sends these bytes again rather than building new ones."""

    owner: str
    parameters: SessionParameters
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Session:
    """What Antom's createVaultingSession gave back."""

    session_id: str
    session_data: str
    expires_at: datetime
    normal_url: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    """What we learned about a vaulting request, from a notification, an inquiry or expiry.

    ``status`` is ``None`` when Antom reported a ``vaultingStatus`` this build does not know
    (its word is in ``antom_result.vaulting_status``): the observation is recorded but moves no
    status (see :func:`apply_observation`).
    """

    status: VaultingStatus | None
    source: EventSource
    observed_at: datetime
    card: Card | None = None
    antom_result: AntomResult | None = None
    acquirer_info: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Sealed at rest and kept out of the repr: it may hold the acquirer's card token."""


@dataclass(frozen=True, slots=True)
class VaultingRecord:
    vaulting_request_id: str
    owner: str
    parameters: SessionParameters
    session: Session
    created_at: datetime
    updated_at: datetime
    status: VaultingStatus = VaultingStatus.SESSION_CREATED
    card: Card | None = None
    antom_result: AntomResult | None = None
    acquirer_info: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """As :attr:`Observation.acquirer_info`: kept out of the repr."""
    final_at: datetime | None = None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.parameters.labels)

    @property
    def card_pending(self) -> bool:
        """SUCCEEDED, but the card token is not known yet (an inquiry answered SUCCESS without
        ``paymentMethodDetail`` and the notification was lost): only Antom can still say it."""
        has_token = self.card is not None and bool(self.card.card_token)
        return self.status is VaultingStatus.SUCCEEDED and not has_token

    @property
    def awaits_antom(self) -> bool:
        """Whether asking Antom may still teach us something (``refresh`` asks only then):
        Antom has not given its final word, or gave it without the card token."""
        return not self.status.is_antom_final or self.card_pending

    @property
    def reconciled(self) -> bool:
        """Whether the reconciler is done with the record (it leaves the schedule): final, and
        not a success still waiting for its card token. EXPIRED is final here: the reconciler
        inferred it and stops asking; a late notification can still replace it."""
        return self.status.is_final and not self.card_pending


@dataclass(frozen=True, slots=True)
class ResultFilter:
    """Which records a listing returns (ListResults): every condition given must hold.

    ``owner`` ``None`` lists every owner's (an admin); ``statuses`` ``None`` any status;
    ``labels`` are pairs that must all be among the record's labels, exactly; the update-time
    bounds are ``updated_from <= updated_at < updated_before``, each optional.
    """

    owner: str | None
    statuses: frozenset[VaultingStatus] | None = None
    labels: tuple[tuple[str, str], ...] = ()
    updated_from: datetime | None = None
    updated_before: datetime | None = None


ListPosition = tuple[datetime, str]
"""Where a listing stands: the ``(updated_at, vaulting_request_id)`` of the last record returned;
the next page holds the records after it in that order."""


def apply_observation(record: VaultingRecord, observation: Observation) -> VaultingRecord | None:
    """The record after ``observation``, or ``None`` when it changes nothing (no event then)."""
    current, incoming = record.status, observation.status
    if incoming is None:
        # A vaultingStatus this build does not know: kept as Antom's word on an open record
        # (shown to callers, and the record still expires), never a transition.
        if current.is_final or observation.antom_result in (None, record.antom_result):
            return None
        return replace(
            record, antom_result=observation.antom_result, updated_at=observation.observed_at
        )
    if current.is_antom_final:
        if incoming is current and _completes_card(record.card, observation.card):
            # A success first learned without the card (an inquiry answer without
            # paymentMethodDetail) still takes the token when it arrives; nothing else changes.
            return replace(record, card=observation.card, updated_at=observation.observed_at)
        return None
    if current is VaultingStatus.EXPIRED and not incoming.is_antom_final:
        return None
    if incoming is VaultingStatus.SESSION_CREATED:
        return None
    if incoming is VaultingStatus.PROCESSING and current is not VaultingStatus.SESSION_CREATED:
        return None
    return replace(
        record,
        status=incoming,
        card=observation.card if observation.card is not None else record.card,
        antom_result=observation.antom_result
        if observation.antom_result is not None
        else record.antom_result,
        acquirer_info=observation.acquirer_info or record.acquirer_info,
        updated_at=observation.observed_at,
        final_at=observation.observed_at if incoming.is_final else None,
    )


def _completes_card(known: Card | None, incoming: Card | None) -> bool:
    has_token = known is not None and bool(known.card_token)
    return not has_token and incoming is not None and bool(incoming.card_token)


@dataclass(frozen=True, slots=True)
class Event:
    """A committed state change; ``event_id`` orders the log and backs the resume token."""

    event_id: int
    source: EventSource
    occurred_at: datetime
    record: VaultingRecord


class InvalidResumeTokenError(InvalidArgumentError):
    """A resume token was malformed or was not issued by this event log; the message says
    which."""

    def __init__(self, why: str) -> None:
        super().__init__({"resume_token": why}, why)

    @property
    def public_message(self) -> str:
        return f"invalid resume_token: {self}"


_CURSOR_PREFIX: Final = "v1."
_MAX_TOKEN_CHARS: Final = 200


def encode_resume_token(log_id: str, event_id: int) -> str:
    """An opaque token naming a position in one event log.

    ``log_id`` identifies the log (one per database) so that a token from another deployment
    is refused instead of silently resuming at an unrelated position.
    """
    payload = json.dumps([log_id, event_id], separators=(",", ":")).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_resume_token(token: str, log_id: str) -> int:
    """The event id in ``token``; raises :class:`InvalidResumeTokenError` for any other token.

    Only the exact text :func:`encode_resume_token` produces is accepted: base64 decoding alone
    skips stray characters and JSON accepts ``true`` for an integer position (``bool`` is an
    ``int``), so a mangled token could otherwise resume somewhere. The id is bounded to
    :data:`MAX_EVENT_ID` so that the store can always bind it as an SQL integer.
    """
    if not token.startswith(_CURSOR_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
        raise InvalidResumeTokenError("the resume token is malformed")
    body = token[len(_CURSOR_PREFIX) :]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidResumeTokenError("the resume token is malformed") from None
    match decoded:
        case [str() as token_log, int() as event_id] if (
            not isinstance(event_id, bool) and 0 <= event_id <= MAX_EVENT_ID
        ):
            pass
        case _:
            raise InvalidResumeTokenError("the resume token is malformed")
    if encode_resume_token(token_log, event_id) != token:
        raise InvalidResumeTokenError("the resume token is malformed")
    if token_log != log_id:
        raise InvalidResumeTokenError("the resume token was not issued by this service's log")
    return event_id
