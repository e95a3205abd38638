"""The property tests that ``scripts/fuzz`` runs at scale, and the count of their cases.

A property test meant for the fuzz run is decorated with ``@fuzz_property(examples=N)`` (above
``@given``): it is marked ``fuzz`` and gets its Hypothesis settings, ``N`` examples in the test
command (small, so that the command stays fast), or the ``fuzz`` profile when
``VAULT_FUZZ_EXAMPLES`` is set (``scripts/fuzz`` sets it): that many examples per test, no
deadline, random rather than derandomized, and failing examples remembered in
``.cache/hypothesis-fuzz`` so that the next fuzz run tries them first.

In a fuzz run this plugin also counts, per test, the cases whose body really ran (a case that
Hypothesis abandoned while drawing its data, or that an ``assume`` rejected, is not one), and the
failures Hypothesis reported, and writes them, with the fuzz tests collected, as JSON to
``VAULT_FUZZ_REPORT`` when it is set.
The count is of calls observed, not ``max_examples`` multiplied: it includes the replay of saved
examples and the shrinking of a failure.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import StopTest, UnsatisfiedAssumption

from tests.hypothesis_profile import SHARED_FIXTURE_HEALTH_CHECKS

EXAMPLES_VARIABLE: Final = "VAULT_FUZZ_EXAMPLES"
REPORT_VARIABLE: Final = "VAULT_FUZZ_REPORT"
PROFILE: Final = "fuzz"
MARK: Final = "fuzz"
DATABASE: Final = Path(__file__).resolve().parent.parent / ".cache" / "hypothesis-fuzz"


def _fuzz_examples() -> int | None:
    """Examples per property test in a fuzz run; None in the test command."""
    raw = os.environ.get(EXAMPLES_VARIABLE, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"{EXAMPLES_VARIABLE} must be a positive integer, not {raw!r}")
    return int(raw)


FUZZ_EXAMPLES: Final = _fuzz_examples()
if FUZZ_EXAMPLES is not None:
    settings.register_profile(
        PROFILE,
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=False,
        database=DirectoryBasedExampleDatabase(DATABASE),
        suppress_health_check=SHARED_FIXTURE_HEALTH_CHECKS,
        print_blob=True,
    )
    settings.load_profile(PROFILE)

T = TypeVar("T", bound=Callable[..., Any])


def fuzz_property(examples: int) -> Callable[[T], T]:
    """Mark a ``@given`` test for ``scripts/fuzz``, with ``examples`` in the test command."""
    chosen = (
        settings.get_profile(PROFILE)
        if FUZZ_EXAMPLES is not None
        else settings(max_examples=examples, suppress_health_check=SHARED_FIXTURE_HEALTH_CHECKS)
    )

    def decorate(test: T) -> T:
        marked: T = getattr(pytest.mark, MARK)(chosen(test))
        return marked

    return decorate


@dataclass
class TestCount:
    """What one fuzz test did: the cases its body ran, the failures Hypothesis reported."""

    nodeid: str
    cases: int = 0
    failures: int = 0


_counts: dict[str, TestCount] = {}
_collected: list[str] = []


@contextlib.contextmanager
def _one_case(count: TestCount) -> Generator[None, None, None]:
    """Counts the case run inside it, passed or failed; not one Hypothesis rejected
    (``assume``) or stopped before it ran."""
    try:
        yield
    except (UnsatisfiedAssumption, StopTest):
        raise
    except BaseException:
        count.cases += 1
        raise
    count.cases += 1


def _counted(inner: Callable[..., Any], count: TestCount) -> Callable[..., Any]:
    """``inner`` (the body Hypothesis calls once per case), counting the cases that ran."""
    if inspect.iscoroutinefunction(inner):

        @functools.wraps(inner)
        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            with _one_case(count):
                return await inner(*args, **kwargs)

        return counted_async

    @functools.wraps(inner)
    def counted(*args: Any, **kwargs: Any) -> Any:
        with _one_case(count):
            return inner(*args, **kwargs)

    return counted


def _is_fuzzed(item: pytest.Item) -> bool:
    return (
        FUZZ_EXAMPLES is not None
        and item.get_closest_marker(MARK) is not None
        and hasattr(getattr(item, "obj", None), "hypothesis")
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Count the cases of a fuzz test through Hypothesis's documented ``inner_test`` handle
    (pytest-asyncio wraps the same handle, inside this, to run async bodies)."""
    if not _is_fuzzed(item):
        return (yield)
    handle = item.obj.hypothesis  # type: ignore[attr-defined]
    inner = handle.inner_test
    count = _counts.setdefault(item.nodeid, TestCount(item.nodeid))
    handle.inner_test = _counted(inner, count)
    try:
        return (yield)
    finally:
        handle.inner_test = inner


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed fuzz test adds the failures Hypothesis reported (several distinct bugs come as
    one exception group); a broken setup or teardown is one failure."""
    report = yield
    if _is_fuzzed(item) and report.failed:
        count = _counts.setdefault(item.nodeid, TestCount(item.nodeid))
        error = call.excinfo.value if call.excinfo is not None else None
        count.failures += len(error.exceptions) if isinstance(error, BaseExceptionGroup) else 1
    return report


def pytest_collection_finish(session: pytest.Session) -> None:
    _collected.extend(item.nodeid for item in session.items if _is_fuzzed(item))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _counts:
        return
    terminalreporter.section("fuzz cases")
    for count in _counts.values():
        line = f"{count.cases:>7} cases {count.failures:>3} failures  {count.nodeid}"
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    destination = os.environ.get(REPORT_VARIABLE, "").strip()
    if FUZZ_EXAMPLES is None or not destination:
        return
    report = {
        "examples_per_test": FUZZ_EXAMPLES,
        "collected": _collected,
        "tests": [asdict(count) for count in _counts.values()],
    }
    Path(destination).write_text(json.dumps(report, indent=1) + "\n")
