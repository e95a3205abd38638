"""Serving the webhook application on a socket bound beforehand.

The notify URL has to be known before :class:`~vault_service.service.vaulting.VaultingService`
is built (it goes into every createVaultingSession), and with port 0 the port is only known
once bound. Binding first (:func:`bind`) and serving later (:func:`serve_webhook`) makes the
order bind → notify URL → service → app → serve possible, in the same event loop as the rest.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
LINGER_SECONDS: Final = 2.0
"""How long unread body bytes are still drained after an early answer (413, 415, 401 ...):
long enough for an honest sender to finish writing and read the answer instead of a reset,
short enough that an oversized or endless body is not consumed for long."""


class _ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's protocol-layer logger, with malformed HTTP demoted to one fixed line.

    aiohttp logs a request it cannot parse (a header over 8 KiB, a bad request line) with
    ``logger.exception``: an ERROR with a traceback whose message quotes the offending input.
    On a port open to the internet that is anyone's lever on our error logs, so such a request
    becomes the webhook's usual refusal line; any other exception (a bug) keeps its error and
    traceback.
    """

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info"), HttpProcessingError):
            self.logger.warning(
                "notifyVaulting refused with HTTP 400",
                extra={"outcome": "rejected", "reason": "malformed HTTP request"},
            )
            return
        super().exception(msg, *args, **kwargs)


_PROTOCOL_LOG: Final = _ProtocolLog(logging.getLogger("vault_service.webhook.http"))


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host contains ``:``; port 0
    picks a free one, see ``sock.getsockname()[1]``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


async def serve_webhook(
    app: web.Application,
    sock: socket.socket,
    *,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
) -> web.AppRunner:
    """Start serving ``app`` on ``sock`` (which it then owns) in the running event loop.

    Returns the runner; ``await runner.cleanup()`` stops accepting, lets in-flight
    notifications finish for up to ``shutdown_timeout`` seconds, and closes the socket. No
    access log: the application logs one line per request itself, without client headers.
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        logger=_PROTOCOL_LOG,
        shutdown_timeout=shutdown_timeout,
        lingering_time=LINGER_SECONDS,
    )
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
