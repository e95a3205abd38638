"""Under CI=true the replica suite fails, never skips, when PostgreSQL is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"


def test_without_postgres_every_replica_test_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs this package's other tests against a server that is not there with CI=true:
    each must fail loudly, none may be skipped (a green CI run must have run them)."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("VAULT_TEST_POSTGRES_DSN", UNREACHABLE)
    others = sorted(str(path) for path in HERE.glob("test_*.py") if path != Path(__file__))
    result = pytester.runpytest_subprocess(*others, "-p", "no:cacheprovider", timeout=60)
    outcomes = result.parseoutcomes()
    outcomes.pop("warnings", None)
    assert set(outcomes) <= {"errors", "failed"}, outcomes  # nothing passed, nothing skipped
    assert sum(outcomes.values()) >= len(others) >= 5, outcomes
    result.stdout.fnmatch_lines(["*PostgreSQL tests NOT RUN*CI=true*"])
