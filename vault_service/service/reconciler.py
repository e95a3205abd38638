"""The reconciler: asks Antom about sessions that have no final result yet.

Notifications can be lost (a webhook outage longer than Antom's 24-hour retry window, a
misconfigured URL), so every open session is polled with ``inquireVaulting``, with a delay that
grows with the session's age, until it is final; past its expiry (plus a grace period for a
buyer who submitted at the last moment) it is marked EXPIRED. A final result Antom reports
later still replaces EXPIRED (see :mod:`vault_service.domain`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from vault_service.antom.errors import AntomError
from vault_service.domain import VaultingRecord
from vault_service.events import EventHub
from vault_service.service import news
from vault_service.service.vaulting import Clock, VaultingService, utc_now
from vault_service.store.base import Store

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        store: Store,
        service: VaultingService,
        hub: EventHub,
        *,
        interval: float,
        min_delay: timedelta,
        max_delay: timedelta,
        expiry_grace: timedelta,
        inquiry_budget: float,
        batch_size: int = 50,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._service = service
        self._hub = hub
        self._interval = interval
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._expiry_grace = expiry_grace
        self._inquiry_budget = inquiry_budget
        self._batch_size = batch_size
        self._clock = clock

    async def run(self) -> None:
        """Reconcile due sessions every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("reconciliation pass failed; retrying next interval")
            await asyncio.sleep(self._interval)

    async def run_once(self) -> int:
        """One pass over the sessions that are due; returns how many were looked at."""
        due = await self._store.due_for_reconciliation(self._clock(), self._batch_size)
        for record in due:
            await self._reconcile(record)
        return len(due)

    async def _reconcile(self, record: VaultingRecord) -> None:
        vaulting_request_id = record.vaulting_request_id
        try:
            await self._service.inquire(vaulting_request_id, budget=self._inquiry_budget)
        except AntomError as exc:
            log.warning(
                "reconciliation inquiry failed",
                extra={"vaulting_request_id": vaulting_request_id, "error": type(exc).__name__},
            )
        current = await self._store.get(vaulting_request_id)
        if current is None or current.status.is_final:
            return
        now = self._clock()
        if now >= current.session.expires_at + self._expiry_grace:
            if await self._store.apply(vaulting_request_id, news.expiry(now)) is not None:
                self._hub.notify()
            return
        age = now - current.created_at
        delay = min(self._max_delay, max(self._min_delay, age / 2))
        await self._store.reschedule(vaulting_request_id, now + delay)
