"""Per-source limits on failed webhook authentications (token buckets).

Every source address has a bucket of ``limit`` tokens that refills at ``limit / window`` tokens
per second; each failed authentication takes one. A source with less than one token left is
*limited*: the webhook answers it 429 before reading its body or checking any signature, so a
stranger guessing signatures or replaying garbage gets cheap refusals. Successful
authentications take nothing, so a sender that signs correctly is never slowed down by its own
traffic.

Limiting is per source, and a limited source is refused even when its next request happens to
be signed correctly: the limiter does not know that without the signature work it exists to
skip. That is safe for Antom because an attacker does not share Antom's address, and Antom
retries a 429 later, by which time its bucket (if Antom itself ever failed, e.g. while a key
rotation was misconfigured) has refilled. A source is whatever key the caller passes: the
webhook passes the sender behind its trusted proxies, with IPv6 grouped by /64
(:mod:`vault_service.webhook.source`), because behind an unconfigured proxy every sender would
share the proxy's bucket and anyone could get Antom refused.

Memory is bounded: at most ``max_sources`` buckets are kept; buckets that have refilled are
dropped (they are the same as no bucket), and when the table is full the source whose last
failure is oldest is forgotten. A forgotten source starts again with a full bucket, which only
helps an attacker who already controls more addresses than the table holds.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_FAILURE_LIMIT: Final = 20
DEFAULT_FAILURE_WINDOW: Final = 60.0
DEFAULT_MAX_SOURCES: Final = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class FailureLimiter:
    """Token buckets of failed authentications, one per source."""

    __slots__ = ("_buckets", "_clock", "_limit", "_max_sources", "_rate")

    def __init__(
        self,
        *,
        limit: int = DEFAULT_FAILURE_LIMIT,
        window: float = DEFAULT_FAILURE_WINDOW,
        max_sources: int = DEFAULT_MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("the failure limit must be at least 1")
        if not window > 0:
            raise ValueError("the failure window must be > 0 seconds")
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        self._limit = float(limit)
        self._rate = limit / window
        self._max_sources = max_sources
        self._clock = clock
        # Least recently failed first: the order eviction and pruning walk.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        """How many sources are tracked (bounded by ``max_sources``)."""
        return len(self._buckets)

    def is_limited(self, source: str) -> bool:
        """Whether ``source`` has used up its failures and must be refused unheard."""
        bucket = self._buckets.get(source)
        return bucket is not None and self._refill(bucket, self._clock()) < 1.0

    def record_failure(self, source: str) -> bool:
        """Take one token from ``source``; return whether that made it limited."""
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(self._limit, now)
        else:
            self._refill(bucket, now)
            self._buckets.move_to_end(source)
        bucket.tokens -= 1.0
        self._prune(now)
        return bucket.tokens < 1.0

    def _refill(self, bucket: _Bucket, now: float) -> float:
        bucket.tokens = min(self._limit, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        return bucket.tokens

    def _prune(self, now: float) -> None:
        """Drop refilled buckets from the old end, then the oldest ones beyond the bound."""
        buckets = self._buckets
        while buckets:
            source, oldest = next(iter(buckets.items()))
            if len(buckets) <= self._max_sources and self._refill(oldest, now) < self._limit:
                return
            del buckets[source]
