"""Serving on a pre-bound socket: the order app.py relies on (bind, then build, then serve)."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from tests.fixtures.antom import CLIENT_ID
from vault_service.antom import PrivateKey, VaultingNotification, Verifier
from vault_service.webhook import bind, build_webhook_app, serve_webhook

from .conftest import PATH


class _NullSink:
    async def record_notification(self, notification: VaultingNotification, raw: bytes) -> None:
        """Nothing reaches it in these tests."""


def _ipv6_loopback() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        pytest.param(
            "::1", marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
        ),
    ],
)
async def test_serves_on_the_bound_socket_until_cleanup(
    host: str, antom_key: PrivateKey, http: aiohttp.ClientSession
) -> None:
    """Guards the hand-over: the port is known before the app exists, the app answers on it,
    and cleanup releases it."""
    sock = bind(host, 0)
    port = sock.getsockname()[1]
    app = build_webhook_app(
        _NullSink(), path=PATH, client_id=CLIENT_ID, verifier=Verifier(antom_key.public_key())
    )
    server = await serve_webhook(app, sock)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}{PATH}"
    try:
        async with http.get(url) as response:
            assert response.status == 405
    finally:
        await server.cleanup()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url):
            pass
