"""Reading a ``request-time`` header: the forms Antom and its SDKs send.

Antom's own documentation now shows epoch milliseconds (``1685599933871``); older pages and
several SDKs use ISO-8601 with an offset (``+hh:mm``, ``+hhmm``, ``Z``, with fractions), and
which one a message carries is not documented, so both are read. The webhook uses it only to
warn about a clock that is far off (a notification is never refused for its time: Antom's
retries may reuse it); the emulator uses it to refuse a request no SDK would send.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

MAX_EPOCH_MS_DIGITS: Final = 15
"""Enough for any date this service meets; longer strings are not times worth converting."""


def request_epoch(value: str, *, max_epoch_digits: int = MAX_EPOCH_MS_DIGITS) -> float | None:
    """The instant ``value`` names, in seconds since the epoch, or ``None`` if it names none
    (unknown form, or an ISO time without offset, whose instant is ambiguous)."""
    if value.isascii() and value.isdigit():
        return int(value) / 1000 if len(value) <= max_epoch_digits else None
    if "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # An offset is under 24 h, so the arithmetic cannot overflow even at years 1 and 9999.
    return None if parsed.tzinfo is None else parsed.timestamp()
