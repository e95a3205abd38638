"""What the webhook benches send: sessions stored beforehand, and their signed notifications.

Each notification is a first delivery for a session that has no result yet, so each one the
service acknowledges is a state change: a record update and an event. The sessions are
inserted through the store's own API (what CreateSession stores, without the Antom round trip
that would make the set-up longer than the measurement). Signing (RSA-2048, ~1 ms each) is done
before any timed window, in two processes.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.store.strategies import new_record
from vault_service.antom import Signer, read_private_key_file
from vault_service.config import DEFAULT_NOTIFY_PATH
from vault_service.store import Store

from ..service.webhook import signed_notifications
from .load import http_request

SIGNING_PROCESSES = 2


async def insert_sessions(store: Store, ids: list[str]) -> None:
    """A session without a result for each id, off the reconciler's schedule for a day."""
    later = datetime.now(UTC) + timedelta(days=1)
    for rid in ids:
        await store.insert(new_record(rid), next_check_at=later)


def _sign(key_file: Path, ids: list[str]) -> list[bytes]:
    signer = Signer(read_private_key_file(key_file))
    return [
        http_request(DEFAULT_NOTIFY_PATH, headers, body)
        for headers, body in signed_notifications(signer, ids)
    ]


async def signed_requests(key_file: Path, ids: list[str]) -> list[bytes]:
    """The notification of each id, signed with Antom's key, as HTTP request bytes."""
    step = -(-len(ids) // SIGNING_PROCESSES)
    chunks = [ids[n : n + step] for n in range(0, len(ids), step)]
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(SIGNING_PROCESSES) as pool:
        signed = await asyncio.gather(
            *(loop.run_in_executor(pool, _sign, key_file, chunk) for chunk in chunks)
        )
    return [request for chunk in signed for request in chunk]
