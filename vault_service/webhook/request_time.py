"""Reading the ``request-time`` of a notification, to notice a clock that is far off.

Antom's own documentation now shows epoch milliseconds (``1685599933871``); older pages and
several SDKs use ISO-8601 with an offset (``+hh:mm``, ``+hhmm``, ``Z``, with fractions), and
which one notifications carry is not documented, so both are read. The result only feeds a
warning: a notification is never refused for its time, because Antom's retries may reuse it
and recording is idempotent anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

_MAX_EPOCH_MS_DIGITS: Final = 15
"""Enough for any date this service meets; longer strings are not times worth converting."""
_MAX_ISO_CHARS: Final = 40


def request_epoch(value: str) -> float | None:
    """The instant ``value`` names, in seconds since the epoch, or ``None`` if it names none
    (unknown form, or an ISO time without offset, whose instant is ambiguous)."""
    if value.isascii() and value.isdigit():
        return int(value) / 1000 if len(value) <= _MAX_EPOCH_MS_DIGITS else None
    if len(value) > _MAX_ISO_CHARS or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError):
        return None
