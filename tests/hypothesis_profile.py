"""The Hypothesis settings every property test of the suite starts from.

No per-example deadline and no "too slow" health check: both judge wall-clock time, which on a
shared CI machine depends on what else runs, and a stalled example (a garbage collection, a
descheduled process) failed a property that held with ``DeadlineExceeded`` or "unreliable test
timings". Speed is measured in ``bench/``, never asserted here. A test's own ``@settings``
overrides what it names, and Hypothesis replaces a health-check list rather than adding to it:
a test that shares function-scoped fixtures across examples takes
:data:`SHARED_FIXTURE_HEALTH_CHECKS`, which keeps this profile's. The fuzz run loads its own
profile (:mod:`tests.fuzzing`) after this one.
"""

from __future__ import annotations

from typing import Final

from hypothesis import HealthCheck, settings

PROFILE: Final = "suite"
SUITE_HEALTH_CHECKS: Final = [HealthCheck.too_slow]
"""The health checks every property test of the suite suppresses."""
SHARED_FIXTURE_HEALTH_CHECKS: Final = [*SUITE_HEALTH_CHECKS, HealthCheck.function_scoped_fixture]
"""Also for a property whose examples share its test's function-scoped fixtures (servers, a
store) on purpose: the deltas each example causes are what is checked."""

settings.register_profile(PROFILE, deadline=None, suppress_health_check=SUITE_HEALTH_CHECKS)
settings.load_profile(PROFILE)
