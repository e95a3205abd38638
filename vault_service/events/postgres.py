"""Cross-replica wake-ups: one PostgreSQL LISTEN connection per replica feeding the EventHub.

Every event append NOTIFYs in its own transaction, so a replica learns within milliseconds that
another replica committed an event. The payload is only a hint: subscribers read the log from
their own cursors. Hence nothing is lost when the LISTEN connection drops (a failover,
``pg_terminate_backend``, a network cut): the listener reconnects with backoff, LISTENs again and
wakes the hub once, and the streams catch up from the log.

LISTEN needs a session of its own; through a pooler in transaction mode the registration lands
on whatever server connection the pool picked and notifications never arrive. The listener
proves delivery at start with a NOTIFY round trip and refuses to start when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Final

import asyncpg

from vault_service.errors import ConfigurationError
from vault_service.events.hub import EventHub
from vault_service.store import EVENTS_CHANNEL

log = logging.getLogger(__name__)

PROBE_TIMEOUT: Final = 5.0
_PROBE_PREFIX: Final = "probe:"


class ListenUnavailableError(ConfigurationError):
    """LISTEN/NOTIFY does not work on this database connection; the message names the
    setting to change."""


class PostgresWakeups:
    """Keeps one LISTEN connection alive and turns each NOTIFY into ``hub.notify()``.

    ``channel`` is the one the store NOTIFYs on after each event append; only tests that
    stand alone from the store pick another.
    """

    def __init__(
        self,
        dsn: str,
        hub: EventHub,
        *,
        channel: str = EVENTS_CHANNEL,
        probe_interval: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._hub = hub
        self._channel = channel
        self._probe_interval = probe_interval
        self._max_backoff = max_backoff
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._probe_seen = asyncio.Event()
        self._probe_token = ""
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0

    async def start(self) -> None:
        """Connect, LISTEN and prove delivery; then keep the connection alive in the background.

        Raises :class:`ListenUnavailableError` when notifications do not come back.
        """
        self._connection = await self._listen()
        self._task = asyncio.create_task(self._supervise(), name="pg-wakeups")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop()

    async def _listen(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(
            self._dsn, server_settings={"application_name": "vault-service-listen"}
        )
        try:
            self._lost.clear()
            connection.add_termination_listener(self._on_termination)
            await connection.add_listener(self._channel, self._on_notify)
            self._probe_seen.clear()
            self._probe_token = _PROBE_PREFIX + secrets.token_hex(8)
            await connection.execute("SELECT pg_notify($1, $2)", self._channel, self._probe_token)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self._probe_seen.wait()
            except TimeoutError:
                raise ListenUnavailableError(
                    "VAULT_DATABASE_URL: PostgreSQL LISTEN/NOTIFY does not deliver on this"
                    " connection; a pooler in transaction mode cannot carry LISTEN: point"
                    " VAULT_DATABASE_URL at PostgreSQL directly or at a session-mode pool"
                ) from None
        except BaseException:
            await _close_quietly(connection)
            raise
        return connection

    def _on_termination(self, connection: object) -> None:
        # Only the current connection's end matters: a replaced one closing late must not
        # make the supervisor drop its healthy successor.
        if connection is self._connection:
            self._lost.set()

    def _on_notify(
        self,
        _connection: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        _pid: int,
        _channel: str,
        payload: object,
    ) -> None:
        if payload == self._probe_token:
            self._probe_seen.set()
            return
        self._hub.notify()

    async def _supervise(self) -> None:
        """Reconnect whenever the connection is lost or stops answering; wake everyone after."""
        backoff = 0.1
        while True:
            if not await self._healthy():
                await self._drop()
                try:
                    self._connection = await self._listen()
                except Exception as exc:  # whatever the driver raises: never stop retrying
                    log.warning(
                        "LISTEN connection lost; reconnecting",
                        extra={"error": type(exc).__name__},
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(self._max_backoff, backoff * 2)
                    continue
                backoff = 0.1
                self.reconnects += 1
                log.info("LISTEN connection restored; subscribers catch up from the log")
                self._hub.notify()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_interval):
                    await self._lost.wait()

    async def _healthy(self) -> bool:
        connection = self._connection
        if connection is None or connection.is_closed() or self._lost.is_set():
            return False
        try:
            async with asyncio.timeout(self._probe_interval):
                await connection.execute("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        return True

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await _close_quietly(connection)


async def _close_quietly(connection: asyncpg.Connection) -> None:
    """Close a connection that may already be broken, without waiting long on it."""
    if connection.is_closed():
        return
    with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        async with asyncio.timeout(1):
            await connection.close()
