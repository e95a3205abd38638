"""The admin HTTP port (``VAULT_ADMIN_LISTEN``): Prometheus ``GET /metrics`` and nothing else.

Separate from the public webhook port so that the operator's network decides who scrapes
(loopback by default; the manifests open it to the cluster for the scraper) and the webhook
never serves anything but Antom's notifications. Health is gRPC's (the main or the health port),
not here.
"""

from __future__ import annotations

import socket

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vault_service.metrics import Metrics

METRICS_PATH = "/metrics"


def build_admin_app(metrics: Metrics) -> web.Application:
    """``GET /metrics``: the exposition of ``metrics``' registry, rendered per scrape."""

    async def exposition(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get(METRICS_PATH, exposition)
    return app


async def serve_admin(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (port 0 picks one); the runner (``await
    runner.cleanup()`` stops it) and the bound port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, int(sock.getsockname()[1])
