"""Stored event rows -> log entries: an event, or the report that it does not decode here.

One unreadable row (a ciphertext under a key this process's ring lacks, a tampered token, an
edited snapshot) must neither break the log for every reader nor vanish from it. Raising would
fail every ``StreamResults`` of every caller (a stream page holds every owner's events), and
on each reconnect; leaving the row out would let a stream's cursor move past it for good, so
that a fault one restart fixes (a missing key) became permanent loss. So the row becomes an
:class:`~vault_service.store.base.UnreadableEvent` carrying what the row holds in the clear
(id, vaulting request id, owner) and why: the streams decide, per subscriber, what it means
(:mod:`vault_service.service.streaming`).

Such a row is met on every read (the stream index's reader, every stream reading the log itself,
every reconnect), so it is logged only the first time a store meets it (:class:`ReportedEvents`),
with its ids and the reason, never a value."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final, NamedTuple

from vault_service.domain import Event, EventSource
from vault_service.store.base import CorruptDataError, LogEntry, Unreadable, UnreadableEvent
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

_UNREADABLE_MESSAGE: Final = {
    Unreadable.MISSING_KEY: (
        "an event of the log is sealed under a data key this process lacks: the streams it"
        " belongs to end UNAVAILABLE before it until the key is in VAULT_DATA_KEY_FILE and"
        " the file is reloaded (SIGHUP or a restart)"
    ),
    Unreadable.CORRUPT: (
        "an event of the log does not decode: the streams it belongs to report it as"
        " unreadable and go on"
    ),
}


SELECT_EVENTS: Final = (
    "SELECT id, vaulting_request_id, owner, source, occurred_at, snapshot, card_token, sealed "
    "FROM events WHERE "
)
"""The columns of :class:`EventRow`, in its order (SQLite's rows are read by position)."""


class EventRow(NamedTuple):
    """The columns of an ``events`` row that make an :class:`Event` (instant already decoded)."""

    event_id: int
    vaulting_request_id: str
    owner: str
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


def log_entries(
    rows: list[EventRow], keys: DataKeyRing, reported: ReportedEvents, *, plaintext: bool
) -> list[LogEntry]:
    """The entries of ``rows`` (one read, in id order), one per row."""
    return [_entry(row, keys, reported, plaintext=plaintext) for row in rows]


def _entry(
    row: EventRow, keys: DataKeyRing, reported: ReportedEvents, *, plaintext: bool
) -> LogEntry:
    try:
        return _decode(row, keys, plaintext=plaintext)
    except UnknownDataKeyError as exc:
        unreadable = UnreadableEvent(
            row.event_id, row.vaulting_request_id, row.owner, Unreadable.MISSING_KEY, exc.key_id
        )
    except (CorruptDataError, ValueError):
        unreadable = UnreadableEvent(
            row.event_id, row.vaulting_request_id, row.owner, Unreadable.CORRUPT, None
        )
    if reported.first_time(row.event_id):
        # The reason is the cause (and key id), never the error's text: a codec message may
        # quote a stored value.
        log.error(
            _UNREADABLE_MESSAGE[unreadable.cause],
            extra={
                "event_id": row.event_id,
                "vaulting_request_id": row.vaulting_request_id,
                "reason": unreadable.cause.value,
                "key_id": unreadable.key_id,
            },
        )
    return unreadable


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
