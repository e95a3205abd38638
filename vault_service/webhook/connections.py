"""A cap on the webhook's open connections, enforced where connections are accepted.

aiohttp has no connection limit: every accepted socket gets a request handler, a parser and a
task, and keeps them until the sender finishes or a timer fires. The header deadline
(:mod:`vault_service.webhook.server`) bounds how long one connection can be held without
sending a request; this cap bounds how many can be held at once, so that a crowd of slow or
idle senders costs a fixed amount of memory and file descriptors, however many there are.

The cap sits in the protocol factory that the listening socket calls for every accepted
connection, because that is the first point where our code runs for a connection and the
last one before aiohttp allocates anything for it. A connection over the cap never meets
aiohttp: it gets a fixed ``503`` with ``Retry-After`` and ``Connection: close`` written straight
away, without its request being read, and is closed. A sender whose request bytes arrived
before that close may see a connection reset instead of the 503 (closing a socket with unread
input resets it); either way nothing was acknowledged, so Antom retries on its schedule. The
connections already accepted are not slowed down: a refusal is a write and a close, done in
the accept callback.

A slot is taken when the factory hands out a handler and given back when that connection is
lost, which asyncio reports exactly once per connection whatever ended it (the sender, a
timer, shutdown). Counting here rather than in aiohttp's own list of connections also counts
the connections accepted in the same burst whose handlers have not started yet, so the cap is
exact under a flood.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, cast

from vault_service.throttle import Throttle

log = logging.getLogger(__name__)

REFUSAL_WARNING_INTERVAL: Final = 60.0
RETRY_AFTER_SECONDS: Final = 5
_REFUSAL_BODY: Final = b'{"error":"too many connections"}'
REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n"
    b"Retry-After: " + str(RETRY_AFTER_SECONDS).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + _REFUSAL_BODY
)
"""Everything a sender beyond the cap receives, before the connection is closed."""


class ConnectionCap:
    """A protocol factory: the wrapped factory's protocol while fewer than ``limit``
    connections it handed out are open, a refusal otherwise."""

    __slots__ = ("_factory", "_limit", "_open", "_warnings")

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limit: int,
        *,
        warnings: Throttle | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("max_connections must be at least 1")
        self._factory = factory
        self._limit = limit
        self._open = 0
        self._warnings = Throttle(REFUSAL_WARNING_INTERVAL) if warnings is None else warnings

    @property
    def open(self) -> int:
        """How many admitted connections are open now (at most the limit)."""
        return self._open

    def __call__(self) -> asyncio.Protocol:
        if self._open >= self._limit:
            self._warn()
            return _Refused()
        self._open += 1
        return _Admitted(self._factory(), self._release)

    def _release(self) -> None:
        self._open -= 1

    def _warn(self) -> None:
        """One line per interval: a flood of refusals must not become a flood of log lines."""
        suppressed = self._warnings.admit()
        if suppressed is None:
            return
        log.warning(
            "webhook connection refused with HTTP 503: the limit of %d open connections is "
            "reached (%d more refused since the last warning)",
            self._limit,
            suppressed,
            extra={
                "outcome": "rejected",
                "reason": "connection limit reached",
                "suppressed": suppressed,
            },
        )


class _Admitted(asyncio.Protocol):
    """aiohttp's handler for one connection, giving the connection's slot back when it ends."""

    __slots__ = ("_inner", "_release")

    def __init__(self, inner: asyncio.Protocol, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        release, self._release = self._release, None
        try:
            self._inner.connection_lost(exc)
        finally:
            if release is not None:
                release()


class _Refused(asyncio.Protocol):
    """A connection beyond the cap: the fixed 503, then closed; its input is never read."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)
        writer.write(REFUSAL)
        writer.close()
