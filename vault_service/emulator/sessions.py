"""Vaulting sessions, one per ``vaultingRequestId``, and their lifecycle.

A session waits for the buyer's card, may wait for 3-D Secure, and ends ``SUCCESS`` or
``FAIL``. A session that expires before it ends is closed with ``ORDER_IS_CLOSED``. Expiry is
applied by a timer (so the failure is notified even when nobody asks) and again on every
lookup (so a lookup never sees a session the timer has not closed yet). Each final result is
reported once to the ``on_final`` callback, which delivers the notification.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from vault_service.emulator.cards import CardDetail, CardOutcome, CardVerdict
from vault_service.emulator.params import CreateParams
from vault_service.emulator.wire import WallClock

SESSION_REGION: Final = "SG"
_SESSION_DATA_NUMBER: Final = "188"
_SHARED_PREFIX: Final = 42

SUCCESS: Final = "SUCCESS"
SUCCESS_MESSAGE: Final = "success."
VERIFICATION_IN_PROCESS: Final = "VERIFICATION_IN_PROCESS"
VERIFICATION_MESSAGE: Final = "The verification is still under process."
ORDER_IS_CLOSED: Final = "ORDER_IS_CLOSED"
ORDER_IS_CLOSED_MESSAGE: Final = "The vaulting session expired before the card was vaulted."


class Phase(Enum):
    """Where a session is; ``vaultingStatus`` is PROCESSING for the first two."""

    AWAITING_CARD = "awaiting_card"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RepeatInconsistentError(Exception):
    """A ``vaultingRequestId`` was reused with different parameters."""


@dataclass(eq=False, slots=True)
class Session:
    """One vaulting session. ``create_response`` is the exact body replayed to repeats."""

    params: CreateParams
    session_id: str
    session_data: str
    normal_url: str
    created_at: float
    expires_at: float
    create_response: bytes = b""
    phase: Phase = Phase.AWAITING_CARD
    result_code: str = VERIFICATION_IN_PROCESS
    result_message: str = VERIFICATION_MESSAGE
    card: CardDetail | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def vaulting_request_id(self) -> str:
        return self.params.vaulting_request_id

    @property
    def final(self) -> bool:
        return self.phase in {Phase.SUCCEEDED, Phase.FAILED}

    @property
    def closed_by_expiry(self) -> bool:
        return self.phase is Phase.FAILED and self.result_code == ORDER_IS_CLOSED


class SessionStore:
    """All sessions of one emulator, in memory, indexed the three ways they are looked up.

    ``session_ttl`` and ``challenge_delay`` are in seconds (the latter already time-scaled);
    ``page_url`` turns a session id into the hosted card page's URL; ``clock`` is the wall
    time sessions are created, and found expired, by.
    """

    def __init__(
        self,
        *,
        session_ttl: float,
        challenge_delay: float,
        page_url: Callable[[str], str],
        on_final: Callable[[Session], None],
        clock: WallClock,
    ) -> None:
        self._ttl = session_ttl
        self._clock = clock
        self._challenge_delay = challenge_delay
        self._page_url = page_url
        self._on_final = on_final
        self._by_request_id: dict[str, Session] = {}
        self._by_session_data: dict[str, Session] = {}
        self._by_session_id: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_request_id)

    def open(self, params: CreateParams) -> tuple[Session, bool]:
        """The session for ``params`` and whether it is new; a repeat must match exactly."""
        existing = self._by_request_id.get(params.vaulting_request_id)
        if existing is not None:
            if existing.params != params:
                raise RepeatInconsistentError(params.vaulting_request_id)
            return existing, False
        session_id = base64.b64encode(secrets.token_bytes(48)).decode("ascii")
        now = self._clock()
        session = Session(
            params=params,
            session_id=session_id,
            session_data=_session_data(session_id),
            normal_url=self._page_url(session_id),
            created_at=now,
            expires_at=now + self._ttl,
        )
        loop = asyncio.get_running_loop()
        session.timers.append(loop.call_later(self._ttl, self._expire, session))
        self._by_request_id[params.vaulting_request_id] = session
        self._by_session_data[session.session_data] = session
        self._by_session_id[session_id] = session
        return session, True

    def by_request_id(self, vaulting_request_id: str) -> Session | None:
        return self._refreshed(self._by_request_id.get(vaulting_request_id))

    def by_session_data(self, session_data: str) -> Session | None:
        return self._refreshed(self._by_session_data.get(session_data))

    def by_session_id(self, session_id: str) -> Session | None:
        return self._refreshed(self._by_session_id.get(session_id))

    def submit(self, session: Session, verdict: CardVerdict) -> None:
        """Apply the issuer's answer for a card the buyer entered on an open session."""
        if session.final or session.phase is not Phase.AWAITING_CARD:
            raise RuntimeError("a card can only be submitted once, to an open session")
        session.card = verdict.detail
        if verdict.outcome is CardOutcome.CHALLENGE:
            session.phase = Phase.VERIFYING
            loop = asyncio.get_running_loop()
            session.timers.append(
                loop.call_later(self._challenge_delay, self._challenge_passed, session)
            )
        elif verdict.outcome is CardOutcome.APPROVE:
            self._finish(session, Phase.SUCCEEDED, SUCCESS, SUCCESS_MESSAGE)
        else:
            self._finish(session, Phase.FAILED, verdict.result_code, verdict.result_message)

    def close(self) -> None:
        """Stop every pending timer; no session changes state after this."""
        for session in self._by_request_id.values():
            _cancel_timers(session)

    def _refreshed(self, session: Session | None) -> Session | None:
        if session is not None and not session.final and self._clock() >= session.expires_at:
            self._expire(session)
        return session

    def _expire(self, session: Session) -> None:
        if not session.final:
            self._finish(session, Phase.FAILED, ORDER_IS_CLOSED, ORDER_IS_CLOSED_MESSAGE)

    def _challenge_passed(self, session: Session) -> None:
        if session.phase is Phase.VERIFYING:
            self._finish(session, Phase.SUCCEEDED, SUCCESS, SUCCESS_MESSAGE)

    def _finish(self, session: Session, phase: Phase, code: str, message: str) -> None:
        session.phase = phase
        session.result_code = code
        session.result_message = message
        _cancel_timers(session)
        self._on_final(session)


def _cancel_timers(session: Session) -> None:
    for timer in session.timers:
        timer.cancel()
    session.timers.clear()


def _session_data(session_id: str) -> str:
    """``vaultingSessionData`` shaped like Antom's: ``<88 b64>&&<region>&&<n>&&<b64 JSON>``.

    The first part is 64 random bytes whose base64 text starts with the session id's first 42
    characters, as in Antom's sample; the last part carries the front-end SDK configuration.
    """
    opaque = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
    opaque = session_id[:_SHARED_PREFIX] + opaque[_SHARED_PREFIX:]
    versions = {v: {"targetWebVerison": v} for v in ("1.1.0", "1.2.0")}
    config = {
        "extendInfo": json.dumps(
            {"versionMap": {"web": versions, "iOS": versions, "Android": versions}},
            separators=(",", ":"),
        ),
        "paymentSessionConfig": {
            "paymentMethodCategoryType": "CARD",
            "productScene": "VAULTING",
            "productSceneVersion": "1.0",
        },
    }
    encoded = base64.b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()
    return "&&".join((opaque, SESSION_REGION, _SESSION_DATA_NUMBER, encoded))
