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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from vault_service.admin import build_admin_app, serve_admin
from vault_service.antom import AntomClient, AntomClientConfig
from vault_service.antom_key_files import AntomKeyFiles
from vault_service.config import ConfigError, Settings
from vault_service.data_key_files import load_data_keys, reload_data_keys
from vault_service.events import EventHub, PostgresWakeups
from vault_service.grpc_api import (
    NO_FILE,
    AuthenticationInterceptor,
    Authenticator,
    CallerDirectory,
    CallersFileError,
    Health,
    MetricsInterceptor,
    ServerTls,
    TlsFiles,
    TokenFile,
    VaultServicer,
    build_grpc_server,
    build_health_server,
    describe,
    stop_grpc_server,
)
from vault_service.metrics import Metrics
from vault_service.service import Pruner, Reconciler, ResultStreams, VaultingService
from vault_service.store import DataKeyRing, Store, open_store
from vault_service.webhook import bind, build_webhook_app, serve_webhook

log = logging.getLogger(__name__)

RECONCILE_MAX_DELAY = timedelta(minutes=15)


async def open_token_file(settings: Settings) -> TokenFile | None:
    """The callers file, loaded and watched; ``None`` when bearer tokens are not used."""
    if settings.auth_tokens_file is None:
        return None
    token_file = TokenFile(settings.auth_tokens_file)
    try:
        await token_file.start()
    except (OSError, CallersFileError) as exc:
        raise ConfigError(f"VAULT_AUTH_TOKENS_FILE: {describe(exc)}") from None
    return token_file


async def load_tls(settings: Settings) -> ServerTls | None:
    """The gRPC port's TLS material; ``None`` for plaintext (a file that cannot be used is a
    :class:`TlsFilesError` naming its setting)."""
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return None
    files = TlsFiles(
        settings.grpc_tls_cert_file, settings.grpc_tls_key_file, settings.grpc_tls_client_ca_file
    )
    return await ServerTls.load(files)


@contextlib.contextmanager
def _listening(setting: str, address: object) -> Iterator[None]:
    """Around binding the address ``setting`` names: a failure to listen there (an address in
    use or not ours; grpc says only that it failed) is the operator's to fix, named by the
    setting."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        why = f": {exc.strerror}" if isinstance(exc, OSError) else ""
        raise ConfigError(f"{setting}: cannot listen on {address}{why}") from None


def authenticator_for(token_file: TokenFile | None, tls: ServerTls | None) -> Authenticator:
    """Bearer tokens if there is a token file, certificates if TLS is mutual (their scopes
    come from the token file's certificate entries, when there is one)."""

    def directory() -> CallerDirectory:
        return NO_FILE if token_file is None else token_file.directory

    mutual = tls is not None and tls.mutual
    return Authenticator(
        tokens=None if token_file is None else directory,
        certificates=directory if mutual else None,
        trust=tls.client_trust if tls is not None and mutual else None,
    )


def warn_about_exposure(settings: Settings) -> None:
    if settings.grpc_exposed_without_identity:
        log.warning(
            "gRPC listens beyond loopback with no caller identity (VAULT_INSECURE=1):"
            " every caller sees and streams every session",
            extra={"listen": str(settings.grpc_listen)},
        )
    if settings.tokens_in_cleartext:
        log.warning(
            "bearer tokens cross the network without TLS (VAULT_INSECURE=1): only safe where"
            " a service mesh encrypts the connection",
            extra={"listen": str(settings.grpc_listen)},
        )


@dataclass
class RunningService:
    """A started service; :meth:`stop` takes it down within the shutdown grace."""

    settings: Settings
    grpc_port: int
    http_port: int
    health_port: int | None
    admin_port: int
    notify_url: str
    servicer: VaultServicer
    token_file: TokenFile | None
    tls: ServerTls | None
    antom_keys: AntomKeyFiles
    data_keys: DataKeyRing
    _resources: contextlib.AsyncExitStack

    async def reload(self) -> None:
        """Re-read what lives in mounted files (on SIGHUP), one independent step after
        another: a step that fails logs why and keeps its old state, and the others still run.
        """
        log.info("reloading key files")
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("Antom keys", self.antom_keys.reload),
            ("data keys", lambda: reload_data_keys(self.data_keys, self.settings.data_key_file)),
        ]
        if self.tls is not None:
            steps.append(("gRPC TLS certificate", self.tls.reload))
        if self.token_file is not None:
            steps.append(("token file", self.token_file.reload))
        for name, step in steps:
            try:
                await step()
            except Exception:
                # Each step keeps its old state on the failures it expects; this is for the
                # ones it does not, so that they cannot skip the steps after them.
                log.exception("a reload step failed; it keeps what it had", extra={"reason": name})

    async def stop(self) -> None:
        """Reconciler, gRPC (drained), webhook, Antom pool, store: the reverse of start."""
        log.info("shutting down: draining calls")
        await self._resources.aclose()
        log.info("stopped")


def _start_background_passes(
    settings: Settings,
    store: Store,
    vaulting: VaultingService,
    metrics: Metrics,
    resources: contextlib.AsyncExitStack,
) -> None:
    """The reconciler and the pruner, each a task cancelled when the service stops."""
    reconciler = Reconciler(
        store,
        vaulting,
        interval=settings.reconcile_interval,
        min_delay=timedelta(seconds=settings.reconcile_after),
        max_delay=RECONCILE_MAX_DELAY,
        expiry_grace=timedelta(seconds=settings.expiry_grace),
        inquiry_budget=settings.antom_timeout,
        metrics=metrics,
    )
    resources.push_async_callback(_cancel, asyncio.create_task(reconciler.run()))
    pruner = Pruner(
        store,
        event_retention=settings.event_retention,
        record_retention=settings.record_retention,
    )
    resources.push_async_callback(_cancel, asyncio.create_task(pruner.run()))


async def start(settings: Settings) -> RunningService:
    """Open the store, bind both ports, start serving; raise a :class:`ConfigurationError`
    naming the setting when the settings or the files they name cannot be used."""
    antom_keys = await AntomKeyFiles.load(settings)
    antom_config = AntomClientConfig(
        gateway=settings.antom_base_url,
        client_id=settings.antom_client_id,
        key_version=settings.antom_key_version,
        budget=settings.antom_timeout,
        allow_plain_http=settings.antom_uses_http,
        ca_file=settings.antom_ca_file,
        proxy=settings.antom_proxy,
    )
    data_keys = await load_data_keys(settings.data_key_file)
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as resources:
        store = await open_store(
            settings.database_url,
            auto_migrate=settings.auto_migrate,
            data_keys=data_keys,
            sqlite_synchronous=settings.sqlite_synchronous,
            postgres_pool_size=settings.pg_pool_size,
            postgres_lock_pool_size=settings.pg_lock_pool_size,
            postgres_acquire_timeout=settings.pg_acquire_timeout,
        )
        resources.push_async_callback(store.close)
        metrics.watch_pools(store.pool_use)
        # Up first and down last, so that the drain itself can be watched.
        admin_port = await _start_admin_server(settings, metrics, resources)
        with _listening("VAULT_HTTP_LISTEN", settings.http_listen):
            sock = bind(settings.http_listen.host, settings.http_listen.port)
        resources.callback(sock.close)
        http_port = int(sock.getsockname()[1])
        notify_url = settings.notify_url_for(http_port)
        hub = EventHub()
        if settings.database_url.backend == "postgresql":
            # Several replicas share the database: learn about their events through NOTIFY.
            wakeups = PostgresWakeups(settings.database_url.reveal(), hub)
            await wakeups.start()
            resources.push_async_callback(wakeups.close)
        antom = AntomClient(antom_config, antom_keys.signer, antom_keys.verifier, metrics=metrics)
        resources.push_async_callback(antom.aclose)
        vaulting = VaultingService(
            store,
            antom,
            hub,
            notify_url=notify_url,
            first_check_after=timedelta(seconds=settings.reconcile_after),
            metrics=metrics,
        )
        # Closed after the webhook and the gRPC server stopped: their last calls are committed.
        resources.push_async_callback(vaulting.aclose)
        webhook = await serve_webhook(
            build_webhook_app(
                vaulting,
                path=urlsplit(notify_url).path,
                client_id=settings.antom_client_id,
                verifier=antom_keys.verifier,
                failure_limit=settings.webhook_failure_limit,
                failure_window=settings.webhook_failure_window,
                trusted_proxies=settings.webhook_trusted_proxies,
                metrics=metrics,
            ),
            sock,
            header_timeout=settings.webhook_header_timeout,
            max_connections=settings.webhook_max_connections,
        )
        resources.push_async_callback(webhook.cleanup)
        token_file = await open_token_file(settings)
        if token_file is not None:
            resources.push_async_callback(token_file.close)
        tls = await load_tls(settings)
        authenticator = authenticator_for(token_file, tls)
        warn_about_exposure(settings)
        # Closed after the gRPC server has stopped (its streams are over) and before the store.
        streams = await resources.enter_async_context(
            contextlib.aclosing(
                ResultStreams(store, hub, checkpoint_interval=settings.checkpoint_interval)
            )
        )
        servicer = VaultServicer(
            vaulting,
            streams,
            caller_of=authenticator.caller,
            credentials_version=authenticator.version,
            metrics=metrics,
        )
        metrics.watch_open_streams(lambda: servicer.active_streams)
        health = Health()
        with _listening("VAULT_GRPC_LISTEN", settings.grpc_listen):
            server, grpc_port = await build_grpc_server(
                servicer,
                listen=str(settings.grpc_listen),
                health=health,
                max_connection_age=settings.grpc_max_connection_age,
                credentials=None if tls is None else tls.credentials(),
                interceptors=[
                    # First, so that calls authentication refuses are counted too.
                    MetricsInterceptor(metrics),
                    AuthenticationInterceptor(
                        authenticator,
                        open_health=settings.public_health,
                        open_reflection=settings.public_reflection,
                    ),
                ],
            )
        health_port = await _start_health_server(settings, health, resources)
        await server.start()
        resources.push_async_callback(
            stop_grpc_server, server, health, servicer, grace=settings.shutdown_grace
        )
        _start_background_passes(settings, store, vaulting, metrics, resources)
        running = RunningService(
            settings=settings,
            grpc_port=grpc_port,
            http_port=http_port,
            health_port=health_port,
            admin_port=admin_port,
            notify_url=notify_url,
            servicer=servicer,
            token_file=token_file,
            tls=tls,
            antom_keys=antom_keys,
            data_keys=data_keys,
            _resources=resources.pop_all(),
        )
    ports = f"grpc :{grpc_port}, webhook :{http_port}"
    if health_port is not None:
        ports += f", health :{health_port}"
    ports += f", admin :{admin_port}"
    log.info("vault-service serving", extra={"listen": ports, "notify_url": notify_url})
    return running


async def _start_health_server(
    settings: Settings, health: Health, resources: contextlib.AsyncExitStack
) -> int | None:
    """The plaintext health-only port, if configured; it stops after the main server, so
    probes see NOT_SERVING for the whole drain."""
    if settings.health_listen is None:
        return None
    with _listening("VAULT_HEALTH_LISTEN", settings.health_listen):
        server, port = await build_health_server(health, listen=str(settings.health_listen))
    await server.start()
    resources.push_async_callback(server.stop, None)
    return port


async def _start_admin_server(
    settings: Settings, metrics: Metrics, resources: contextlib.AsyncExitStack
) -> int:
    """The admin HTTP port (``/metrics``); its bound port."""
    listen = settings.admin_listen
    with _listening("VAULT_ADMIN_LISTEN", listen):
        runner, port = await serve_admin(build_admin_app(metrics), listen.host, listen.port)
    resources.push_async_callback(runner.cleanup)
    return port


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for it, without swallowing our own cancellation."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
