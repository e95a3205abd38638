"""Retention: every replica runs a pruner; the store lets one of them prune at a time.

Events (and orphan notifications) are kept ``event_retention``; final records, card data
included, ``record_retention`` after their last change when it is set (the data-retention
policy lever, off by default). See :mod:`vault_service.store.pruning` for what a pass deletes
and how a resuming stream learns that its position was pruned.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

from vault_service.domain import Clock, utc_now
from vault_service.service.periodic import run_every
from vault_service.store import Pruned, Store

log = logging.getLogger(__name__)

PRUNE_INTERVAL: Final = 60.0
"""Seconds between passes: retention is counted in days, a minute late is nothing."""
PRUNE_BATCH_SIZE: Final = 500
"""Rows per delete: short statements, so writers and readers are never held up for long."""


class Pruner:
    """Runs retention passes every ``interval`` seconds."""

    def __init__(
        self,
        store: Store,
        *,
        event_retention: timedelta,
        record_retention: timedelta | None,
        interval: float = PRUNE_INTERVAL,
        batch_size: int = PRUNE_BATCH_SIZE,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._event_retention = event_retention
        self._record_retention = record_retention
        self._interval = interval
        self._batch_size = batch_size
        self._clock = clock

    async def run(self) -> None:
        """Prune every ``interval`` seconds until cancelled; a failed pass is retried then."""
        await run_every(self._interval, self.run_once, "retention pass")

    async def run_once(self) -> Pruned | None:
        """One pass; ``None`` when another replica's pruner holds the turn."""
        now = self._clock()
        records_before = None if self._record_retention is None else now - self._record_retention
        pruned = await self._store.prune(
            events_before=now - self._event_retention,
            records_before=records_before,
            batch_size=self._batch_size,
        )
        if pruned is not None and pruned.any:
            log.info(
                "retention pass pruned old rows",
                extra={
                    "pruned_events": pruned.events,
                    "pruned_orphans": pruned.orphans,
                    "pruned_records": pruned.records,
                },
            )
        return pruned
