"""The failure limiter's token buckets and the request-time reader, on a clock the test
moves by hand (no sleeping, no timing)."""

from __future__ import annotations

import pytest

from vault_service.webhook.limiter import FailureLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_source_is_limited_after_exactly_limit_failures(clock: FakeClock) -> None:
    """Guards the budget: ``limit`` failures are allowed, the last one limits the source, and
    other sources are unaffected."""
    limiter = FailureLimiter(limit=3, window=60.0, clock=clock)
    assert [limiter.record_failure("10.0.0.1") for _ in range(3)] == [False, False, True]
    assert limiter.is_limited("10.0.0.1")
    assert not limiter.is_limited("10.0.0.2")


def test_the_bucket_refills_over_the_window(clock: FakeClock) -> None:
    """Guards the token bucket: one token comes back every window/limit seconds, and a full
    window restores the whole budget."""
    limiter = FailureLimiter(limit=3, window=60.0, clock=clock)
    for _ in range(3):
        limiter.record_failure("10.0.0.1")
    clock.now += 19.9
    assert limiter.is_limited("10.0.0.1")
    clock.now += 0.2
    assert not limiter.is_limited("10.0.0.1")
    assert limiter.record_failure("10.0.0.1")  # the one returned token, spent
    clock.now += 60.0
    assert [limiter.record_failure("10.0.0.1") for _ in range(3)] == [False, False, True]


def test_memory_stays_bounded_under_many_sources(clock: FakeClock) -> None:
    """Guards the memory bound: failures from far more addresses than ``max_sources`` never
    keep more than ``max_sources`` buckets, and the most recent failers are the ones kept."""
    limiter = FailureLimiter(limit=1, window=60.0, max_sources=100, clock=clock)
    for n in range(10_000):
        limiter.record_failure(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
        assert len(limiter) <= 100
    assert limiter.is_limited("10.0.39.15")  # the very last (n = 9999)
    assert not limiter.is_limited("10.0.0.0")  # long evicted


def test_refilled_buckets_are_dropped(clock: FakeClock) -> None:
    """Guards that memory follows current abuse: a source whose bucket has refilled is
    forgotten at the next failure anywhere."""
    limiter = FailureLimiter(limit=2, window=10.0, clock=clock)
    limiter.record_failure("10.0.0.1")
    clock.now += 10.0
    limiter.record_failure("10.0.0.2")
    assert len(limiter) == 1


@pytest.mark.parametrize(
    "options", [{"limit": 0}, {"window": 0.0}, {"window": -1.0}, {"max_sources": 0}]
)
def test_nonsense_options_are_refused(options: dict[str, float]) -> None:
    """Guards configuration mistakes that would limit everyone or no one."""
    with pytest.raises(ValueError, match="must be"):
        FailureLimiter(**options)  # type: ignore[arg-type]
