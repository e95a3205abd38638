"""The emulator on a real socket, as an async context manager.

::

    config = EmulatorConfig(antom_private_key=antom_key, merchant_public_key=merchant_pub)
    async with EmulatorServer(config) as emulator:
        client = AntomClient(AntomClientConfig(gateway=emulator.base_url, ...), ...)
        ...
        assert emulator.state.stats.calls("createVaultingSession") == 1

With ``port=0`` (the default) the operating system picks a free port; ``base_url`` tells which.
Leaving the block stops accepting connections, finishes or cancels in-flight requests, cancels
pending notification deliveries and timers, and closes the delivery HTTP client.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from typing import Final

from aiohttp import web

from vault_service.antom import PublicKey
from vault_service.emulator.app import build_app
from vault_service.emulator.config import EmulatorConfig
from vault_service.emulator.state import EmulatorState
from vault_service.emulator.tolerance import DuplicateHeaderTolerance
from vault_service.emulator.wire import WallClock

_SHUTDOWN_TIMEOUT: Final = 2.0
_WILDCARD_HOSTS: Final = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


class EmulatorServer:
    """One emulator listening on ``config.host``/``config.port``; single use.

    ``clock`` is the emulated Antom's wall time; a test moves it to see what Antom does later
    (a session past its expiry) without waiting.
    """

    def __init__(self, config: EmulatorConfig, *, clock: WallClock = time.time) -> None:
        self._config = config
        self._state = EmulatorState(config, clock=clock)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._base_url: str | None = None

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    @property
    def state(self) -> EmulatorState:
        """Sessions, faults, call stats and notification attempts, for in-process tests."""
        return self._state

    @property
    def antom_public_key(self) -> PublicKey:
        """The key that verifies the emulator's answers and notifications."""
        return self._config.antom_private_key.public_key()

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` of the running emulator: the Antom gateway URL to configure."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not running")
        return self._base_url

    async def start(self) -> None:
        if self._base_url is not None:
            raise RuntimeError("an EmulatorServer runs once")
        tls = _tls_context(self._config)
        sock = _bind(self._config.host, self._config.port)
        try:
            scheme = "http" if tls is None else "https"
            self._base_url = _base_url(scheme, self._config.host, sock.getsockname()[1])
            self._state.public_base_url = self._base_url
            runner = web.AppRunner(
                build_app(self._state), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
            )
            self._runner = runner
            await runner.setup()
            self._listener = await asyncio.get_running_loop().create_server(
                _protocol_factory(runner), sock=sock, ssl=tls
            )
        except BaseException:
            if self._listener is None:
                sock.close()
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening, drain connections, then stop deliveries; safe to call twice."""
        listener, self._listener = self._listener, None
        runner, self._runner = self._runner, None
        if listener is not None:
            listener.close()
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            await listener.wait_closed()


def _protocol_factory(runner: web.AppRunner) -> Callable[[], asyncio.Protocol]:
    """aiohttp's per-connection handler, behind the duplicate-header tolerance."""
    server = runner.server
    if server is None:
        raise RuntimeError("the aiohttp runner is not set up")
    return lambda: DuplicateHeaderTolerance(server())


def _tls_context(config: EmulatorConfig) -> ssl.SSLContext | None:
    """The server side of TLS when the config names a certificate; TLS 1.2 or newer, as
    Antom's gateways require."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def _base_url(scheme: str, host: str, port: int) -> str:
    reachable = _WILDCARD_HOSTS.get(host, host)
    if ":" in reachable:
        reachable = f"[{reachable}]"
    return f"{scheme}://{reachable}:{port}"
