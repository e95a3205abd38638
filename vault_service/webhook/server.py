"""Serving the webhook application on a socket bound beforehand.

The notify URL has to be known before :class:`~vault_service.service.vaulting.VaultingService`
is built (it goes into every createVaultingSession), and with port 0 the port is only known
once bound. Binding first (:func:`bind`) and serving later (:func:`serve_webhook`) makes the
order bind → notify URL → service → app → serve possible, in the same event loop as the rest.

The port is open to the internet, so what a sender can make us hold is bounded here, at the
HTTP layer, before the application sees a request:

* **No body is ever inflated.** aiohttp's request parser decompresses a body sent with
  ``Content-Encoding`` as it arrives (``auto_decompress``), before the application can look
  at the header: a 61 KB gzip body became 60 MiB of zeros, inflated even while a refused
  request's unread body was drained. The parser is built with ``auto_decompress=False``, so
  body bytes reach the application and the drain exactly as sent; the application refuses
  any encoding but identity (415) from the headers alone. Antom never compresses.
* **Headers within ``header_timeout`` seconds.** aiohttp arms its keep-alive timer when a
  connection is made and re-arms it after every answer; when it fires while the connection
  is still waiting for a complete request head, the connection is closed (aiohttp's
  ``RequestHandler._process_keepalive``; a request being handled or a body being read is not
  touched, the application's ``body_timeout`` bounds those). Setting ``keepalive_timeout`` to
  the header deadline therefore closes a connection that has not sent complete headers
  within that time of opening or of its last answer, trickling or silent alike, without a
  timer of our own in aiohttp's protocol. The price is that an idle keep-alive connection is
  also closed after that time, which costs Antom a new connection, nothing more.
* **At most ``max_connections`` connections** (:mod:`vault_service.webhook.connections`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from vault_service.webhook.connections import ConnectionCap

DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
DEFAULT_HEADER_TIMEOUT: Final = 15.0
DEFAULT_MAX_CONNECTIONS: Final = 256
"""Far above what Antom needs (one POST per notification, retries spread over hours) and low
enough that a crowd of idle connections stays a small part of the process's file descriptors."""
LINGER_SECONDS: Final = 2.0
"""How long unread body bytes are still drained after an early answer (413, 415, 401 ...):
long enough for an honest sender to finish writing and read the answer instead of a reset,
short enough that an oversized or endless body is not consumed for long."""


class _ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's protocol-layer logger, with a sender's malformed input demoted to one line.

    aiohttp logs a request it cannot parse (a header over 8 KiB, a bad request line) with
    ``logger.exception``: an ERROR with a traceback whose message quotes the offending input.
    On a port open to the internet that is anyone's lever on our error logs, so such a request
    becomes the webhook's usual refusal line. A malformed body (``RequestPayloadError``, which
    is not an ``HttpProcessingError``) reaches this logger only from the drain of a body the
    application left unread, that is after its answer and its one log line: the connection is
    dropped and a debug line says so. Any other exception (a bug) keeps its error and
    traceback.
    """

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            self.logger.warning(
                "notifyVaulting refused with HTTP 400",
                extra={"outcome": "rejected", "reason": "malformed HTTP request"},
            )
            return
        if isinstance(exc, web.RequestPayloadError):
            self.logger.debug(
                "connection dropped: the unread body of an answered request is malformed",
                extra={"reason": "malformed body after the answer"},
            )
            return
        super().exception(msg, *args, **kwargs)


_PROTOCOL_LOG: Final = _ProtocolLog(logging.getLogger("vault_service.webhook.http"))


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host contains ``:``; port 0
    picks a free one, see ``sock.getsockname()[1]``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


class WebhookServer:
    """The webhook serving on its socket; ``await cleanup()`` stops it."""

    __slots__ = ("_connections", "_listener", "_runner")

    def __init__(
        self, runner: web.AppRunner, listener: asyncio.Server, connections: ConnectionCap
    ) -> None:
        self._runner = runner
        self._listener = listener
        self._connections = connections

    @property
    def open_connections(self) -> int:
        """How many accepted connections are open (refused ones are never counted)."""
        return self._connections.open

    async def cleanup(self) -> None:
        """Stop accepting, let in-flight notifications finish for up to the shutdown timeout,
        close every connection and the socket."""
        self._listener.close()
        await self._runner.cleanup()
        await self._listener.wait_closed()


async def serve_webhook(
    app: web.Application,
    sock: socket.socket,
    *,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> WebhookServer:
    """Start serving ``app`` on ``sock`` (which it then owns) in the running event loop.

    A connection that has not sent a complete request head ``header_timeout`` seconds after
    it opened (or after its last answer) is closed, and at most ``max_connections`` are open at
    once (see the module docstring). No access log: the application logs one line per request
    itself, without client headers.
    """
    if not header_timeout > 0:
        raise ValueError("header_timeout must be > 0 seconds")
    runner = web.AppRunner(
        app,
        access_log=None,
        logger=_PROTOCOL_LOG,
        shutdown_timeout=shutdown_timeout,
        lingering_time=LINGER_SECONDS,
        auto_decompress=False,
        keepalive_timeout=header_timeout,
    )
    try:
        await runner.setup()
        connections = ConnectionCap(_handlers(runner), max_connections)
        listener = await asyncio.get_running_loop().create_server(connections, sock=sock)
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return WebhookServer(runner, listener, connections)


def _handlers(runner: web.AppRunner) -> web.Server:
    """aiohttp's factory of per-connection request handlers, once the runner is set up."""
    server = runner.server
    if server is None:
        raise RuntimeError("the aiohttp runner is not set up")
    return server
