"""The public HTTP port: Antom's notifyVaulting webhook and nothing else.

Health and metrics live on the separate admin port, so that the port exposed to the internet
answers one signed POST and 404/405 to everything else (see :mod:`vault_service.webhook.notify`
for the order of checks and the answers).

This is the package's public face: code outside ``vault_service.webhook`` imports from here,
never from its modules (tests of the package's internals aside).

Wiring, in the event loop that also runs the gRPC server (:func:`vault_service.app.start` does
this; ``tests/webhook/test_wiring_sample.py`` runs this very snippet, so it stays true)::

    sock = bind(settings.http_listen.host, settings.http_listen.port)
    notify_url = settings.notify_url_for(sock.getsockname()[1])  # carries the bound port
    service = VaultingService(
        store,
        antom,
        hub,
        notify_url=notify_url,
        first_check_after=timedelta(seconds=settings.reconcile_after),
    )
    server = await serve_webhook(
        build_webhook_app(
            service,  # any NotificationSink: it records what a verified notification says
            path=urlsplit(notify_url).path,
            client_id=settings.antom_client_id,
            verifier=antom_keys.verifier,  # Antom's public keys by keyVersion, swapped on reload
            failure_limit=settings.webhook_failure_limit,
            failure_window=settings.webhook_failure_window,
            trusted_proxies=settings.webhook_trusted_proxies,  # X-Forwarded-For believed from these
        ),
        sock,
        header_timeout=settings.webhook_header_timeout,  # complete headers within, or closed
        max_connections=settings.webhook_max_connections,  # beyond: 503 and closed
    )
    ...
    await server.cleanup()  # on shutdown, after the gRPC server stopped accepting

The socket is bound before the service exists because the notify URL (which carries the port,
possibly chosen by the OS) is part of every createVaultingSession call.
"""

from vault_service.webhook.notify import (
    ACKNOWLEDGEMENT,
    DEFAULT_MAX_BODY_BYTES,
    NotificationSink,
    build_webhook_app,
)
from vault_service.webhook.server import WebhookServer, bind, serve_webhook

__all__ = [
    "ACKNOWLEDGEMENT",
    "DEFAULT_MAX_BODY_BYTES",
    "NotificationSink",
    "WebhookServer",
    "bind",
    "build_webhook_app",
    "serve_webhook",
]
