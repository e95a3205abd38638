"""The public HTTP port: Antom's notifyVaulting webhook and nothing else.

Health and metrics live on the separate admin port, so that the port exposed to the internet
answers one signed POST and 404/405 to everything else (see :mod:`vault_service.webhook.notify`
for the order of checks and the answers).

Wiring, in the event loop that also runs the gRPC server::

    sock = bind(settings.http_listen.host, settings.http_listen.port)
    notify_url = settings.notify_url or (
        f"http://{settings.http_listen.host}:{sock.getsockname()[1]}{DEFAULT_NOTIFY_PATH}"
    )
    service = VaultingService(store, antom, hub, notify_url=notify_url, ...)
    app = build_webhook_app(
        service,
        path=urlsplit(notify_url).path,
        client_id=settings.antom_client_id,
        verifier=antom_keys.verifier,  # Antom's public keys by keyVersion, swapped on reload
        failure_limit=settings.webhook_failure_limit,
        failure_window=settings.webhook_failure_window,
        trusted_proxies=settings.webhook_trusted_proxies,  # X-Forwarded-For believed from these
    )
    server = await serve_webhook(
        app,
        sock,
        header_timeout=settings.webhook_header_timeout,  # complete headers within, or closed
        max_connections=settings.webhook_max_connections,  # beyond: 503 and closed
    )
    ...
    await server.cleanup()  # on shutdown, after the gRPC server stopped accepting

The socket is bound before the service exists because the notify URL (which carries the port,
possibly chosen by the OS) is part of every createVaultingSession call.
"""

from vault_service.webhook.notify import ACKNOWLEDGEMENT as ACKNOWLEDGEMENT
from vault_service.webhook.notify import DEFAULT_MAX_BODY_BYTES as DEFAULT_MAX_BODY_BYTES
from vault_service.webhook.notify import NotificationSink as NotificationSink
from vault_service.webhook.notify import build_webhook_app as build_webhook_app
from vault_service.webhook.server import WebhookServer as WebhookServer
from vault_service.webhook.server import bind as bind
from vault_service.webhook.server import serve_webhook as serve_webhook
