"""Stored event rows -> events, leaving out the ones that do not decode.

One unreadable row (a ciphertext under a key removed from the key file, a tampered token, an
edited snapshot) must not break the log for every reader: a stream page holds every owner's
events, so raising would fail every ``StreamResults`` of every caller, and again on each
reconnect. Such an event is logged (its id and vaulting request id, never a value) and left
out; it stays in the log, and ``GetResult`` still answers from its record's row.

Readers page with ``limit``: a page that lost rows here is refilled from past them
(:class:`EventPage`), so a page shorter than ``limit`` still means "nothing readable follows",
which is what the streams' resume positions rely on. Every refill reads ``limit`` rows, not
just the number missing: a run of bad rows after a nearly full page would otherwise be read
one row per query. The rows are skipped on every read (every stream behind the live buffer,
every reconnect, every wake-up of the tail reads them again), so each is logged only the first
time a store meets it (:class:`ReportedEvents`), not once per read.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final, NamedTuple

from vault_service.domain import Event, EventSource
from vault_service.store.base import CorruptDataError
from vault_service.store.codec import decode_snapshot
from vault_service.store.data_keys import DataKeyRing, UnknownDataKeyError
from vault_service.store.sealing import (
    EVENT_SEALED,
    EVENT_TOKEN,
    open_sealed_document,
    open_token,
)

REPORTED_CAPACITY: Final = 10_000
"""How many unreadable event ids a store remembers having logged (the most recently met)."""

log = logging.getLogger(__name__)


SELECT_EVENTS: Final = (
    "SELECT id, vaulting_request_id, source, occurred_at, snapshot, card_token, sealed "
    "FROM events WHERE "
)
"""The columns of :class:`EventRow`, in its order (SQLite's rows are read by position)."""


class EventRow(NamedTuple):
    """The columns of an ``events`` row that make an :class:`Event` (instant already decoded)."""

    event_id: int
    vaulting_request_id: str
    source: str
    occurred_at: datetime
    snapshot: str
    card_token: str | None
    sealed: str | None


class ReportedEvents:
    """The unreadable event ids one store has logged already: each is logged once per store
    (the service opens one per process) instead of on every read that skips it.

    Bounded, so that a log full of bad rows cannot grow it without end: the ids met least
    recently are forgotten first, and logged again if met again. Not thread-safe: a store
    touches it from one thread only (the SQLite store's thread, or the event loop).
    """

    def __init__(self, capacity: int = REPORTED_CAPACITY) -> None:
        self._capacity = capacity
        self._ids: dict[int, None] = {}  # insertion-ordered: least recently met first

    def first_time(self, event_id: int) -> bool:
        """Whether ``event_id`` is not among the remembered ids; remembers it as just met."""
        new = event_id not in self._ids
        self._ids.pop(event_id, None)
        self._ids[event_id] = None  # now the most recently met
        if len(self._ids) > self._capacity:
            del self._ids[next(iter(self._ids))]
        return new


class EventPage:
    """The events of one ``events_after`` call, filled from reads of ``limit`` rows each."""

    def __init__(
        self, limit: int, keys: DataKeyRing, reported: ReportedEvents, *, plaintext: bool
    ) -> None:
        self.limit = limit
        self.events: list[Event] = []
        self._keys = keys
        self._reported = reported
        self._plaintext = plaintext

    def fill(self, rows: list[EventRow]) -> int | None:
        """Add the events of ``rows`` (one read of up to ``limit`` rows, in id order) until
        the page is full; the id to read the next rows after, ``None`` when the page is done
        (full, or the read was short: the log holds nothing past it)."""
        for row in rows:
            event = self._decode(row)
            if event is not None:
                self.events.append(event)
                if len(self.events) == self.limit:
                    return None
        return rows[-1].event_id if len(rows) == self.limit else None

    def _decode(self, row: EventRow) -> Event | None:
        try:
            return _decode(row, self._keys, plaintext=self._plaintext)
        except (CorruptDataError, UnknownDataKeyError, ValueError) as exc:
            if self._reported.first_time(row.event_id):
                # No traceback, and the reason is the error's class (and key id): a codec
                # message may quote a stored value.
                log.error(  # noqa: TRY400
                    "an event of the log does not decode: left out of streams",
                    extra={
                        "event_id": row.event_id,
                        "vaulting_request_id": row.vaulting_request_id,
                        "reason": type(exc).__name__,
                        "key_id": getattr(exc, "key_id", None),
                    },
                )
            return None


def _decode(row: EventRow, keys: DataKeyRing, *, plaintext: bool) -> Event:
    rid = row.vaulting_request_id
    token = open_token(keys, EVENT_TOKEN, rid, row.card_token, plaintext=plaintext)
    sealed = open_sealed_document(keys, EVENT_SEALED, rid, row.sealed, plaintext=plaintext)
    return Event(
        event_id=row.event_id,
        source=EventSource(row.source),
        occurred_at=row.occurred_at,
        record=decode_snapshot(row.snapshot, token, sealed),
    )
