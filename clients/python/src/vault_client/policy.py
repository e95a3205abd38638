"""Deadlines, retries, reconnects and the gRPC channel configuration, shared by both APIs.

The channel gets a gRPC service config by default: every method waits for the channel to be
ready (a restarting server delays calls instead of failing them at once, within their
deadlines), and GetResult and ListResults, reads, are retried by gRPC itself on UNAVAILABLE.
CreateSession is retried by this client instead (:class:`RetryPolicy`), because only the client
reads the server's ``RetryInfo``; StreamResults is resumed by the stream
(:class:`ReconnectPolicy`).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Final

import grpc

from vault_client.errors import VaultError

SERVICE: Final = "vault.v1.VaultService"

CREATE_SESSION_TIMEOUT: Final = 30.0
"""Default budget of one ``create_session`` (every attempt and the waits between them): the
service needs room to reach Antom, and bounds its own Antom call by the deadline it is given."""
GET_RESULT_TIMEOUT: Final = 10.0
"""Default deadline of one ``get_result`` (gRPC's own retries included)."""
LIST_RESULTS_TIMEOUT: Final = 30.0
"""Default deadline of one page of ``list_results`` (gRPC's own retries included)."""

SERVICE_CONFIG: Final = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": SERVICE, "method": "GetResult"},
                    {"service": SERVICE, "method": "ListResults"},
                ],
                "waitForReady": True,
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            },
            {
                "name": [
                    {"service": SERVICE, "method": "CreateSession"},
                    {"service": SERVICE, "method": "StreamResults"},
                ],
                "waitForReady": True,
            },
        ]
    },
    separators=(",", ":"),
)
"""The default gRPC service config (JSON)."""

DEFAULT_CHANNEL_OPTIONS: Final[tuple[tuple[str, int | str], ...]] = (
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    # A restarted or replaced server is found again within a second or two; gRPC's default
    # reconnect backoff grows to two minutes, which a resuming stream would sit out.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Keep an idle stream's connection alive through NATs and proxies; the server allows a
    # ping every 10 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


def channel_options(
    extra: tuple[tuple[str, int | str], ...] = (), *, load_balancing: str | None = None
) -> list[tuple[str, int | str]]:
    """The default options, then ``load_balancing`` (e.g. ``"round_robin"``), then ``extra``
    (later options win)."""
    options = list(DEFAULT_CHANNEL_OPTIONS)
    if load_balancing is not None:
        options.append(("grpc.lb_policy_name", load_balancing))
    options += extra
    return options


_RETRIED_CODES: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True)
class RetryPolicy:
    """How ``create_session`` retries UNAVAILABLE and a server's CANCELLED (always with the same
    ``vaulting_request_id``, so retries are safe): up to ``max_attempts`` calls within the call's
    budget, waiting the server's ``RetryInfo`` delay or a jittered exponential backoff,
    whichever is longer. Each attempt's deadline is ``attempt_timeout`` (or what is left of
    the call's budget, if less).

    CANCELLED counts because a server that shuts down cancels the calls its transport had
    accepted but not yet handed to the service (gRPC core does so on shutdown), which a rolling
    restart under load meets; this client's own cancellations never reach here (asyncio raises
    ``CancelledError``, a blocking call is not cancelled)."""

    max_attempts: int = 4
    attempt_timeout: float = 10.0
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def attempt_timeout_within(self, deadline: float) -> float:
        """The deadline (seconds from now) of an attempt that must end by ``deadline``
        (``time.monotonic()``)."""
        return max(min(self.attempt_timeout, deadline - time.monotonic()), 0.0)

    def delay(self, error: VaultError, attempt: int, remaining: float) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` after ``error``; ``None`` to give up
        (not retryable, attempts used up, or no time left for the wait and a call)."""
        if error.code not in _RETRIED_CODES or attempt >= self.max_attempts:
            return None
        wait = max(error.retry_delay or 0.0, jittered(self, attempt))
        return wait if wait < remaining else None


@dataclass(frozen=True)
class ReconnectPolicy:
    """How ``results()`` reopens a stream that ended with UNAVAILABLE (server draining, a
    connection reaching its age, a replica lost): after a jittered exponential backoff, or the
    server's ``RetryInfo`` delay if longer, for as long as it takes (``max_attempts`` = None) or
    up to ``max_attempts`` reconnects in a row without a message in between."""

    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    multiplier: float = 2.0
    max_attempts: int | None = None

    def delay(self, error: VaultError, attempt: int) -> float | None:
        """Seconds to wait before reconnect ``attempt`` (1-based); ``None`` to give up."""
        if error.code is not grpc.StatusCode.UNAVAILABLE:
            return None
        if self.max_attempts is not None and attempt > self.max_attempts:
            return None
        return max(error.retry_delay or 0.0, jittered(self, attempt))


DEFAULT_RETRY: Final = RetryPolicy()
DEFAULT_RECONNECT: Final = ReconnectPolicy()


def jittered(policy: RetryPolicy | ReconnectPolicy, attempt: int) -> float:
    """A "full jitter" backoff: uniform in [0, min(max, initial * multiplier^(attempt-1))], so
    that many clients cut off at once do not come back at once."""
    ceiling = min(policy.max_backoff, policy.initial_backoff * policy.multiplier ** (attempt - 1))
    return random.uniform(0, ceiling)  # noqa: S311 - spreading load, not a secret
