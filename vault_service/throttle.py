"""At most one event per interval: keeps a warning that any request can trigger from flooding
the log (the webhook's proxy warnings, Antom refusing our credentials on every call).

A misconfigured proxy makes every request worth the same warning, and an attacker behind a
trusted proxy can trigger it at will; one line per interval says it all, and the number of
events suppressed since the last line says how often it happened. The clock is injectable so
that tests can move time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """Admits the first event, then none until ``interval`` seconds have passed."""

    __slots__ = ("_clock", "_interval", "_next", "_suppressed")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError("the throttle interval must be > 0 seconds")
        self._interval = interval
        self._clock = clock
        self._next: float | None = None
        self._suppressed = 0

    def admit(self) -> int | None:
        """``None`` when this event falls inside the running interval (it is counted as
        suppressed); otherwise the number of events suppressed since the last admitted one,
        and a new interval starts."""
        now = self._clock()
        if self._next is not None and now < self._next:
            self._suppressed += 1
            return None
        suppressed, self._suppressed = self._suppressed, 0
        self._next = now + self._interval
        return suppressed
