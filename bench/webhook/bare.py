"""The anchor: a bare aiohttp server that does only what Antom needs from a webhook.

``POST <path>``: read the body, verify Antom's RSA signature over it with the very
:class:`~vault_service.antom.Verifier` the service uses, and answer the exact acknowledgement;
anything else is refused. No limits, no store, no logging, no metrics: the floor the service's
webhook is measured against. Run as its own process, so that its CPU is its own::

    python -m bench.webhook.bare PORT ANTOM_PUBLIC_KEY_FILE CLIENT_ID PATH
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

from vault_service.antom import SignatureError, Verifier, read_public_key_file
from vault_service.webhook import ACKNOWLEDGEMENT


def build(verifier: Verifier, client_id: str, path: str) -> web.Application:
    async def notify(request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        try:
            verifier.verify(
                headers["signature"],
                method="POST",
                path=path,
                client_id=client_id,
                time=headers["request-time"],
                body=body,
            )
        except (KeyError, SignatureError):
            return web.Response(status=401)
        return web.Response(body=ACKNOWLEDGEMENT, content_type="application/json")

    app = web.Application()
    app.router.add_post(path, notify)
    return app


def main() -> None:
    port, key_file, client_id, path = sys.argv[1:5]
    verifier = Verifier(read_public_key_file(Path(key_file)))
    web.run_app(build(verifier, client_id, path), host="127.0.0.1", port=int(port), print=None)


if __name__ == "__main__":
    main()
