"""Everything one running emulator knows, wired together.

Handlers reach it through the aiohttp application (:data:`STATE_KEY`); tests that run the
emulator in-process reach it through :attr:`EmulatorServer.state` to inspect sessions, stats and
notification attempts or to change faults without HTTP.
"""

from __future__ import annotations

import secrets
import time
from typing import Final
from urllib.parse import quote

from aiohttp import web

from vault_service.antom import Signer, Verifier
from vault_service.emulator.config import EmulatorConfig
from vault_service.emulator.faults import Faults
from vault_service.emulator.messages import notification_body
from vault_service.emulator.notifier import Notifier
from vault_service.emulator.sessions import Session, SessionStore
from vault_service.emulator.stats import CallStats
from vault_service.emulator.wire import WallClock

CHALLENGE_SECONDS: Final = 5.0
BUYER_PAGE_PATH: Final = "/emulator/buyer"


class EmulatorState:
    """The emulator's keys, sessions, faults, call counts and notification deliveries.

    ``public_base_url`` is where the emulator is reachable; it goes into each session's
    ``normalUrl`` and is set by :class:`EmulatorServer` once the port is bound. ``clock`` is
    the emulated Antom's wall time (:data:`~vault_service.emulator.wire.WallClock`).
    """

    def __init__(self, config: EmulatorConfig, *, clock: WallClock = time.time) -> None:
        self.config = config
        self.clock = clock
        self.public_base_url = f"http://{config.host}:{config.port}"
        self.signer = Signer(config.antom_private_key)
        self.verifier = Verifier(config.merchant_public_key)
        self.fingerprint_secret = secrets.token_bytes(32)
        self.faults = Faults(config.faults)
        self.stats = CallStats()
        self.notifier = Notifier(
            signer=self.signer,
            client_id=config.client_id,
            time_scale=config.time_scale,
            attempt_timeout=config.notification_timeout,
            faults=self.faults,
            clock=clock,
        )
        self.sessions = SessionStore(
            session_ttl=config.session_ttl,
            challenge_delay=CHALLENGE_SECONDS * config.time_scale,
            page_url=self._page_url,
            on_final=self._notify,
            clock=clock,
        )

    async def start(self) -> None:
        await self.notifier.start()

    async def aclose(self) -> None:
        """Freeze every session, then cancel pending deliveries and close their HTTP client."""
        self.sessions.close()
        await self.notifier.aclose()

    def _page_url(self, session_id: str) -> str:
        query = quote(session_id, safe="")
        return f"{self.public_base_url}{BUYER_PAGE_PATH}?vaultingSessionId={query}"

    def _notify(self, session: Session) -> None:
        self.notifier.deliver(
            session.vaulting_request_id,
            session.params.vaulting_notification_url,
            notification_body(session, self.config.expiry_spelling),
        )


STATE_KEY: Final = web.AppKey("vault_emulator_state", EmulatorState)
