"""The Hypothesis settings every property test of the suite starts from.

No per-example deadline and no "too slow" health check: both judge wall-clock time, which on a
shared CI machine depends on what else runs, and a stalled example (a garbage collection, a
descheduled process) failed a property that held with ``DeadlineExceeded`` or "unreliable test
timings". Speed is measured in ``bench/``, never asserted here. A test's own ``@settings``
overrides what it names: one that suppresses other health checks must list this profile's too
(``[*settings.default.suppress_health_check, ...]``), as Hypothesis replaces the list. The fuzz
run loads its own profile (:mod:`tests.fuzzing`) after this one.
"""

from __future__ import annotations

from typing import Final

from hypothesis import HealthCheck, settings

PROFILE: Final = "suite"

settings.register_profile(PROFILE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(PROFILE)
