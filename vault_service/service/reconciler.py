"""The reconciler: asks Antom about sessions that have no final result yet.

Notifications can be lost (a webhook outage longer than Antom's 24-hour retry window, a
misconfigured URL), so every open session is polled with ``inquireVaulting``, with a delay that
grows with the session's age, until it is final (and, for a success, until its card token is
known: an inquiry may report SUCCESS without the card); past its expiry (plus a grace period for a
buyer who submitted at the last moment) it is marked EXPIRED. A final result Antom reports
later still replaces EXPIRED (see :mod:`vault_service.domain`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from vault_service.antom import AntomConfigurationError, AntomError, AntomRejectedError
from vault_service.domain import Clock, VaultingRecord, utc_now
from vault_service.metrics import Metrics
from vault_service.service import observations
from vault_service.service.periodic import run_every
from vault_service.service.vaulting import VaultingService
from vault_service.store import Store, UnreadableRecord

log = logging.getLogger(__name__)

INQUIRY_CONCURRENCY = 8
CLAIM_MARGIN = timedelta(seconds=60)
"""Beyond the inquiry budget, how long a claimed record stays with this replica; if the
replica dies mid-pass, another one picks the record up after that."""


class Reconciler:
    def __init__(
        self,
        store: Store,
        service: VaultingService,
        *,
        interval: float,
        min_delay: timedelta,
        max_delay: timedelta,
        expiry_grace: timedelta,
        inquiry_budget: float,
        batch_size: int = 50,
        clock: Clock = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics if metrics is not None else Metrics()
        self._store = store
        self._service = service
        self._interval = interval
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._expiry_grace = expiry_grace
        self._inquiry_budget = inquiry_budget
        self._batch_size = batch_size
        self._clock = clock

    async def run(self) -> None:
        """Reconcile due sessions every ``interval`` seconds until cancelled."""
        await run_every(self._interval, self.run_once, "reconciliation pass")

    async def run_once(self) -> int:
        """One pass over the sessions that are due; returns how many were looked at.

        Records are reconciled concurrently (bounded), and one failing record never stops the
        others: it is looked at again after the shortest delay.
        """
        lease = timedelta(seconds=self._inquiry_budget) + CLAIM_MARGIN
        due = await self._store.claim_due(self._clock(), self._batch_size, lease)
        self._metrics.reconciler_due.set(len(due))
        limit = asyncio.Semaphore(INQUIRY_CONCURRENCY)

        async def guarded(record: VaultingRecord | UnreadableRecord) -> None:
            if isinstance(record, UnreadableRecord):
                await self._back_off_unreadable(record)
                return
            async with limit:
                try:
                    await self._reconcile(record)
                except Exception:
                    log.exception(
                        "reconciling a record failed; retrying later",
                        extra={"vaulting_request_id": record.vaulting_request_id},
                    )
                    await self._store.reschedule(
                        record.vaulting_request_id, self._clock() + self._min_delay
                    )

        await asyncio.gather(*(guarded(record) for record in due))
        # Notifications that arrived before their record and that CreateSession did not adopt
        # (one that raced it, a record restored or written by a late replica). Last, so that a
        # failure here fails the pass (logged, retried) after the due records had their turn.
        await self._service.adopt_orphans()
        return len(due)

    async def _back_off_unreadable(self, record: UnreadableRecord) -> None:
        """A record whose row does not decode cannot be inquired (or expired) until an
        operator repairs it, typically by putting its data key back in the key file (which
        SIGHUP re-reads): one line says so, and it waits the longest delay before the next
        try instead of coming back every pass."""
        log.error(
            "a due record does not decode: not reconciled, next try after the longest delay",
            extra={
                "vaulting_request_id": record.vaulting_request_id,
                "error": record.error,
                "key_id": record.key_id,
            },
        )
        await self._store.reschedule(record.vaulting_request_id, self._clock() + self._max_delay)

    async def _reconcile(self, record: VaultingRecord) -> None:
        vaulting_request_id = record.vaulting_request_id
        try:
            await self._service.inquire(vaulting_request_id, budget=self._inquiry_budget)
            antom_answered, outcome = True, "answered"
        except AntomRejectedError as exc:
            # A definitive F (e.g. Antom does not know the request) is still an answer: the
            # buyer never completed the session, so it may expire.
            antom_answered, outcome = True, "refused"
            log.info(
                "reconciliation inquiry refused",
                extra={"vaulting_request_id": vaulting_request_id, "result_code": exc.result_code},
            )
        except AntomConfigurationError:
            # Antom refused our credentials, not the request: no answer, so no expiry. The
            # client logs it at ERROR once per interval, not once per record.
            antom_answered, outcome = False, "credentials_refused"
        except AntomError as exc:
            antom_answered, outcome = False, "unavailable"
            log.warning(
                "reconciliation inquiry failed",
                extra={"vaulting_request_id": vaulting_request_id, "error": type(exc).__name__},
            )
        self._metrics.reconciler_inquiries.labels(outcome).inc()
        current = await self._store.get(vaulting_request_id)
        if current is None or current.reconciled:
            return
        now = self._clock()
        expired = now >= current.session.expires_at + self._expiry_grace
        if antom_answered and expired and not current.status.is_final:
            # Only once Antom has answered: expiring while it is unreachable could bury a card
            # the buyer did save (its notification lost, its inquiry not yet possible).
            await self._service.apply(vaulting_request_id, observations.expiry(now))
            return
        age = now - current.created_at
        delay = min(self._max_delay, max(self._min_delay, age / 2))
        await self._store.reschedule(vaulting_request_id, now + delay)
