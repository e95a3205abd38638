"""Stored event rows -> events, leaving out the ones that do not decode.

One unreadable row (a ciphertext under a key removed from the key file, a tampered token, an
edited snapshot) must not break the log for every reader: a stream page holds every owner's
events, so raising would fail every ``StreamResults`` of every caller, and again on each
reconnect. Such an event is logged (its id and vaulting request id, never a value) and left
out; it stays in the log, and ``GetResult`` still answers from its record's row.

Readers page with ``limit``: a page that lost rows here is refilled from past them
(:func:`more_after`), so a page shorter than ``limit`` still means "nothing readable follows",
which is what the streams' resume positions rely on.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import NamedTuple

from vault_service.domain import Event, EventSource
from vault_service.store.base import CorruptDataError
from vault_service.store.codec import decode_snapshot
from vault_service.store.data_keys import DataKeyRing, UnknownDataKeyError
from vault_service.store.sealing import EVENT_TOKEN, open_token

log = logging.getLogger(__name__)


class EventRow(NamedTuple):
    """The columns of an ``events`` row that make an :class:`Event` (instant already decoded)."""

    event_id: int
    vaulting_request_id: str
    source: str
    occurred_at: datetime
    snapshot: str
    card_token: str | None


def decode_events(rows: list[EventRow], keys: DataKeyRing, *, plaintext: bool) -> list[Event]:
    """The events of ``rows`` that decode, in order; each one that does not is logged."""
    events = []
    for row in rows:
        try:
            events.append(_decode(row, keys, plaintext=plaintext))
        except (CorruptDataError, UnknownDataKeyError, ValueError) as exc:
            # No traceback, and the reason is the error's class (and key id): a codec message
            # may quote a stored value.
            log.error(  # noqa: TRY400
                "an event of the log does not decode: left out of streams",
                extra={
                    "event_id": row.event_id,
                    "vaulting_request_id": row.vaulting_request_id,
                    "reason": type(exc).__name__,
                    "key_id": getattr(exc, "key_id", None),
                },
            )
    return events


def more_after(rows: list[EventRow], asked: int) -> int | None:
    """Where a page continues: the last id read when the read was full (rows may follow that
    decoded events did not make up for), ``None`` when the log is exhausted."""
    return rows[-1].event_id if len(rows) == asked else None


def _decode(row: EventRow, keys: DataKeyRing, *, plaintext: bool) -> Event:
    token = open_token(
        keys, EVENT_TOKEN, row.vaulting_request_id, row.card_token, plaintext=plaintext
    )
    return Event(
        event_id=row.event_id,
        source=EventSource(row.source),
        occurred_at=row.occurred_at,
        record=decode_snapshot(row.snapshot, token),
    )
