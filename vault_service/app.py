"""Wiring: every component of ``vault-service serve`` in one event loop, started and stopped
in dependency order.

The webhook socket is bound first because the notify URL Antom is given (by default this
process's own webhook address) must be known before the first session is created. Shutdown
runs the other way round: stop taking calls and notifications, stop the reconciler, then close
the Antom pool and the store, so nothing is written after the store is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from vault_service.antom.client import AntomClient, AntomClientConfig
from vault_service.antom.keys import KeyFormatError, read_private_key_file, read_public_key_file
from vault_service.antom.signing import Signer, Verifier
from vault_service.config import ConfigError, Settings
from vault_service.events import EventHub
from vault_service.grpc_api.server import Health, build_grpc_server, stop_grpc_server
from vault_service.grpc_api.servicer import VaultServicer
from vault_service.pg_wakeups import ListenUnavailableError, PostgresWakeups
from vault_service.service.reconciler import Reconciler
from vault_service.service.streaming import ResultStreams
from vault_service.service.vaulting import VaultingService
from vault_service.store.factory import DatabaseURL, open_store, parse_database_url
from vault_service.store.postgres import EVENTS_CHANNEL
from vault_service.webhook import bind, build_webhook_app, serve_webhook

log = logging.getLogger(__name__)

RECONCILE_MAX_DELAY = timedelta(minutes=15)


def database_of(url: str) -> DatabaseURL:
    try:
        return parse_database_url(url)
    except ValueError as exc:
        raise ConfigError(f"VAULT_DATABASE_URL: {exc}") from None


def load_keys(settings: Settings) -> tuple[Signer, Verifier]:
    """Parse both keys once at start; a bad key is a configuration error, not a traceback."""
    try:
        merchant = read_private_key_file(settings.merchant_private_key_file)
        antom = read_public_key_file(settings.antom_public_key_file)
        return Signer(merchant, settings.antom_key_version), Verifier(antom)
    except (KeyFormatError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class RunningService:
    """A started service; :meth:`stop` takes it down within the shutdown grace."""

    settings: Settings
    grpc_port: int
    http_port: int
    notify_url: str
    servicer: VaultServicer
    _resources: contextlib.AsyncExitStack

    async def stop(self) -> None:
        """Reconciler, gRPC (drained), webhook, Antom pool, store: the reverse of start."""
        log.info("shutting down: draining calls")
        await self._resources.aclose()
        log.info("stopped")


async def start(settings: Settings) -> RunningService:
    """Open the store, bind both ports, start serving; raise ConfigError on bad settings."""
    signer, verifier = load_keys(settings)
    antom_config = AntomClientConfig(
        gateway=settings.antom_base_url,
        client_id=settings.antom_client_id,
        key_version=settings.antom_key_version,
        budget=settings.antom_timeout,
        allow_plain_http=settings.antom_uses_http,
    )
    async with contextlib.AsyncExitStack() as resources:
        database = database_of(settings.database_url)
        store = await open_store(
            settings.database_url,
            auto_migrate=settings.auto_migrate,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        resources.push_async_callback(store.close)
        try:
            sock = bind(settings.http_listen.host, settings.http_listen.port)
        except OSError as exc:
            raise ConfigError(
                f"VAULT_HTTP_LISTEN: cannot listen on {settings.http_listen}: {exc.strerror}"
            ) from None
        resources.callback(sock.close)
        http_port = int(sock.getsockname()[1])
        notify_url = settings.notify_url_for(http_port)
        hub = EventHub()
        if database.backend == "postgresql":
            # Several replicas share the database: learn about their events through NOTIFY.
            wakeups = PostgresWakeups(database.location, hub, channel=EVENTS_CHANNEL)
            try:
                await wakeups.start()
            except ListenUnavailableError as exc:
                raise ConfigError(f"VAULT_DATABASE_URL: {exc}") from None
            resources.push_async_callback(wakeups.close)
        antom = AntomClient(antom_config, signer, verifier)
        resources.push_async_callback(antom.aclose)
        vaulting = VaultingService(
            store,
            antom,
            hub,
            notify_url=notify_url,
            first_check_after=timedelta(seconds=settings.reconcile_after),
        )
        webhook = await serve_webhook(
            build_webhook_app(
                vaulting,
                path=urlsplit(notify_url).path,
                client_id=settings.antom_client_id,
                verifier=verifier,
            ),
            sock,
        )
        resources.push_async_callback(webhook.cleanup)
        servicer = VaultServicer(
            vaulting,
            ResultStreams(store, hub, checkpoint_interval=settings.checkpoint_interval),
        )
        health = Health()
        try:
            server, grpc_port = await build_grpc_server(
                servicer, listen=str(settings.grpc_listen), health=health
            )
        except RuntimeError:
            raise ConfigError(
                f"VAULT_GRPC_LISTEN: cannot listen on {settings.grpc_listen}"
            ) from None
        await server.start()
        resources.push_async_callback(
            stop_grpc_server, server, health, grace=settings.shutdown_grace
        )
        reconciler = Reconciler(
            store,
            vaulting,
            hub,
            interval=settings.reconcile_interval,
            min_delay=timedelta(seconds=settings.reconcile_after),
            max_delay=RECONCILE_MAX_DELAY,
            expiry_grace=timedelta(seconds=settings.expiry_grace),
            inquiry_budget=settings.antom_timeout,
        )
        resources.push_async_callback(_cancel, asyncio.create_task(reconciler.run()))
        running = RunningService(
            settings=settings,
            grpc_port=grpc_port,
            http_port=http_port,
            notify_url=notify_url,
            servicer=servicer,
            _resources=resources.pop_all(),
        )
    log.info(
        "vault-service serving",
        extra={"listen": f"grpc :{grpc_port}, webhook :{http_port}", "notify_url": notify_url},
    )
    return running


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for it, without swallowing our own cancellation."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
