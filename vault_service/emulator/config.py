"""How one emulator instance runs: identity, keys, timing, listen address, initial faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from vault_service.antom import PrivateKey, PublicKey
from vault_service.emulator.faults import FaultPlan
from vault_service.emulator.messages import ExpirySpelling

DEFAULT_CLIENT_ID: Final = "SANDBOX_VAULTDEV0001"
DEFAULT_SESSION_TTL: Final = 1800.0
DEFAULT_NOTIFICATION_TIMEOUT: Final = 10.0
_MAX_PORT: Final = 65535


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Settings of one emulator.

    ``antom_private_key`` signs the emulator's answers and notifications (the service verifies
    them with its public half); ``merchant_public_key`` verifies the service's requests.
    ``time_scale`` multiplies every emulated delay (notification retry intervals, the 3-D
    Secure wait), so tests can run Antom's 24-hour retry schedule in milliseconds;
    ``session_ttl`` is the session lifetime in real seconds and is not scaled.
    ``notification_timeout`` caps one notification attempt. ``port`` 0 picks a free port.
    ``tls_cert_file`` and ``tls_key_file`` (PEM, together) make it serve HTTPS, as Antom does,
    so that the service's trust settings can be tried against it.
    """

    antom_private_key: PrivateKey
    merchant_public_key: PublicKey
    client_id: str = DEFAULT_CLIENT_ID
    host: str = "127.0.0.1"
    port: int = 0
    time_scale: float = 1.0
    session_ttl: float = DEFAULT_SESSION_TTL
    expiry_spelling: ExpirySpelling = "expiry"
    notification_timeout: float = DEFAULT_NOTIFICATION_TIMEOUT
    faults: FaultPlan = field(default_factory=FaultPlan)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_id.isprintable():
            raise ValueError("the client id must be a non-empty printable string")
        if not 0 <= self.port <= _MAX_PORT:
            raise ValueError(f"the port must be between 0 and {_MAX_PORT}")
        if not self.time_scale > 0:
            raise ValueError("the time scale must be > 0")
        if not self.session_ttl > 0:
            raise ValueError("the session TTL must be > 0 seconds")
        if not self.notification_timeout > 0:
            raise ValueError("the notification timeout must be > 0 seconds")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("the TLS certificate and key files go together: give both")
        if self.expiry_spelling not in ("expiry", "expired"):
            raise ValueError("the expiry spelling must be 'expiry' or 'expired'")
