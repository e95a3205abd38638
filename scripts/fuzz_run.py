"""``scripts/fuzz``: every ``@fuzz_property`` test (the webhook and every gRPC request, each on
both backends) with its share of ``--cases`` generated cases, then one line with the count of
cases and failures, and the result page ``bench/results/fuzz.md``.

The share is the same for every test: ``ceil(cases / tests)`` examples each, passed to the tests
as ``VAULT_FUZZ_EXAMPLES`` (see ``tests/fuzzing.py``). The count printed is what the tests'
bodies really ran, read back from the report the pytest plugin writes. Known-bug properties,
marked ``xfail`` in the test command until their fix is merged, run as ordinary tests here
(``--runxfail``): a fuzz run reports every failure it finds. ``CI=true`` makes an unreachable
PostgreSQL a failure rather than a skip, since half of the run would otherwise be missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "bench" / "results" / "fuzz.md"
DEFAULT_CASES: Final = 10_000
SELECTION: Final = ("-m", "fuzz", "tests")
BASE_TIMEOUT: Final = 120
"""The suite's per-test timeout (pyproject), for a test-command-sized test; a fuzz test gets one
more second per example on top, so a hang still ends the run."""


@dataclass(frozen=True)
class Outcome:
    """One test's count, as the pytest plugin reported it."""

    nodeid: str
    cases: int
    failures: int


@dataclass(frozen=True)
class Run:
    commit: str
    asked: int
    examples: int
    outcomes: list[Outcome]
    summary: str
    duration: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__)
    parser.add_argument(
        "--cases",
        type=int,
        default=int(os.environ.get("VAULT_FUZZ_CASES", DEFAULT_CASES)),
        help=f"generated cases in all (default {DEFAULT_CASES:,}, or VAULT_FUZZ_CASES)",
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help=f"do not write {RESULTS.relative_to(ROOT)} (a quick check)",
    )
    arguments, pytest_arguments = parser.parse_known_args(argv)
    if arguments.cases < 1:
        parser.error("--cases must be at least 1")

    commit = _commit()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        tests, _ = _pytest(report, 1, ["--collect-only", "-qq", *pytest_arguments])
        if not tests:
            print("fuzz: no @fuzz_property test collected", file=sys.stderr)
            return 2
        examples = math.ceil(arguments.cases / len(tests))
        print(f"fuzz: {len(tests)} tests, {examples:,} examples each, commit {commit}", flush=True)
        started = time.monotonic()
        arguments_of_run = ["--runxfail", f"--timeout={BASE_TIMEOUT + examples}"]
        _, outcomes = _pytest(report, examples, [*arguments_of_run, *pytest_arguments])
        duration = time.monotonic() - started

    cases = sum(outcome.cases for outcome in outcomes)
    failures = sum(outcome.failures for outcome in outcomes)
    if len(outcomes) < len(tests):
        ran = {outcome.nodeid for outcome in outcomes}
        for nodeid in tests:
            if nodeid not in ran:  # skipped, deselected by -x, or the session broke first
                outcomes.append(Outcome(nodeid, 0, 1))
                failures += 1
    short = "" if cases >= arguments.cases else f" (fewer than the {arguments.cases:,} asked)"
    summary = f"fuzz: {cases:,} cases{short}, {failures} failures (commit {commit})"
    if not arguments.no_record:
        _record(Run(commit, arguments.cases, examples, outcomes, summary, duration))
    print(summary)
    return 0 if failures == 0 and not short else 1


def _pytest(report: Path, examples: int, arguments: list[str]) -> tuple[list[str], list[Outcome]]:
    """Run pytest on the fuzz tests with ``examples`` each; the tests it collected and what
    each did, from the plugin's report."""
    report.unlink(missing_ok=True)
    environment = {
        **os.environ,
        "CI": "true",
        "VAULT_FUZZ_EXAMPLES": str(examples),
        "VAULT_FUZZ_REPORT": str(report),
    }
    command = [sys.executable, "-m", "pytest", *SELECTION, *arguments]
    status = subprocess.run(command, cwd=ROOT, env=environment, check=False).returncode
    if not report.exists():
        raise SystemExit(f"fuzz: pytest ended (status {status}) before its session did")
    written = json.loads(report.read_text())
    outcomes = [
        Outcome(test["nodeid"], test["cases"], test["failures"]) for test in written["tests"]
    ]
    return written["collected"], outcomes


def _commit() -> str:
    """The commit under test, marked when the working tree differs from it."""
    head = _git("rev-parse", "--short=12", "HEAD")
    changed = _git("status", "--porcelain", "--", ".", f":!{RESULTS.relative_to(ROOT)}")
    return f"{head} + uncommitted changes" if changed else head


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _record(run: Run) -> None:
    rows = "\n".join(
        f"| `{outcome.nodeid}` | {outcome.cases:,} | {outcome.failures} |"
        for outcome in run.outcomes
    )
    page = f"""# Fuzz run (`scripts/fuzz`)

The latest recorded run of `scripts/fuzz --cases {run.asked}`: every `@fuzz_property` test (the
webhook and every gRPC request, each on SQLite and PostgreSQL) with {run.examples:,} generated
examples each. "Cases" are the test bodies that really ran (replays of saved failures and
shrinking included); a failure is one distinct falsifying example Hypothesis reported.

- date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
- commit: `{run.commit}`
- machine: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.machine()}, shared with other
  sessions' test runs
- Python {platform.python_version()}, hypothesis {version("hypothesis")}, pytest \
{version("pytest")}
- duration: {run.duration:,.0f} s

**{run.summary}**

| test | cases | failures |
|---|---|---|
{rows}
"""
    RESULTS.write_text(page)


if __name__ == "__main__":
    sys.exit(main())
