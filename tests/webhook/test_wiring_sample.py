"""The wiring sample in ``vault_service.webhook``'s docstring runs, against real components.

The sample had drifted from ``app.py`` (a notify URL built by hand, a service built without the
arguments it needs); running it here keeps it true: a sample that no longer matches the
package's face, the settings or the service's constructor fails this test.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp

import vault_service.webhook as webhook_face
from tests.e2e.conftest import ServiceEnv
from tests.e2e.conftest import service_env as service_env  # noqa: PLC0414 - fixture re-export
from vault_service.antom import AntomClient
from vault_service.antom_key_files import AntomKeyFiles
from vault_service.config import Settings
from vault_service.events import EventHub
from vault_service.service import VaultingService
from vault_service.store import Store


def _sample() -> str:
    """The indented block after the docstring's ``::``, as the body of ``async def sample()``."""
    doc = webhook_face.__doc__
    assert doc is not None
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    return "async def sample():\n" + textwrap.indent(textwrap.dedent(block), "    ")


async def test_the_docstring_wiring_serves_the_notify_path(
    service_env: ServiceEnv, vault_store: Store, antom_client: AntomClient, hub: EventHub
) -> None:
    """The docstring's snippet, run as written: it serves the notify path (a GET there is
    405, the method the port refuses) and stops; ``...`` is where the service runs."""
    settings = Settings.from_env(service_env)
    answers: list[int] = []

    async def probe(url: str) -> None:
        async with aiohttp.ClientSession() as http, http.get(url) as reply:
            answers.append(reply.status)

    code = _sample().replace("\n    ...\n", "\n    await probe(notify_url)\n")
    assert "await probe(notify_url)" in code
    namespace: dict[str, Any] = {
        **{name: getattr(webhook_face, name) for name in webhook_face.__all__},
        "settings": settings,
        "store": vault_store,
        "antom": antom_client,
        "hub": hub,
        "antom_keys": await AntomKeyFiles.load(settings),
        "VaultingService": VaultingService,
        "timedelta": timedelta,
        "urlsplit": urlsplit,
        "probe": probe,
    }
    exec(code, namespace)  # our own docstring: running it is the point of the test
    await namespace["sample"]()
    assert answers == [405]
