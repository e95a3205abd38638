"""The loop of the service's background passes (the reconciler, the pruner)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_every(interval: float, one_pass: Callable[[], Awaitable[object]], what: str) -> None:
    """``one_pass()`` every ``interval`` seconds until cancelled. A pass that fails is logged
    (``what`` names it) and the next one runs as usual: a database blip must not end the loop."""
    while True:
        try:
            await one_pass()
        except Exception:
            log.exception(f"{what} failed; retrying next interval")
        await asyncio.sleep(interval)
