"""The offline checker against the committed snapshot and this test run's own environment."""

import io
import json
from pathlib import Path

from scripts.advisories import check
from scripts.advisories.snapshot import load
from tests.advisories.conftest import PipList


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return check.main(list(args), out=out), out.getvalue()


def test_vulnerable_installed_version_fails(pip_list: PipList) -> None:
    """Guards detection with real data: aiohttp 3.8.0 carries the snapshot's llhttp smuggling
    advisories (PYSEC-2023-120 up to 3.8.4, PYSEC-2023-246 fixed in 3.8.6)."""
    code, output = run("--installed", str(pip_list({"aiohttp": "3.8.0", "yarl": "1.25.1"})))
    assert code == 1
    assert "aiohttp 3.8.0: PYSEC-2023-120 (CVE-2023-37276, GHSA-45c4-8wx5-qw6w)" in output
    assert "aiohttp 3.8.0: PYSEC-2023-246" in output
    assert "fixed in: 3.8.6" in output
    assert "yarl" not in output.split("FAILED")[0]


def test_fixed_version_passes(pip_list: PipList) -> None:
    """Guards against false alarms: the first fixed release of every aiohttp advisory passes."""
    code, output = run("--installed", str(pip_list({"aiohttp": "3.9.2"})))
    assert (code, "no known vulnerabilities" in output) == (0, True)


def test_uncovered_package_fails(pip_list: PipList) -> None:
    """Guards coverage: a dependency added without refreshing the snapshot is not a pass."""
    code, output = run("--installed", str(pip_list({"Never_Looked.Up": "1.0", "attrs": "26.1.0"})))
    assert code == 1
    assert "never-looked-up 1.0: not covered by the snapshot" in output
    assert "scripts/update-advisories" in output
    assert "attrs" not in output.split("FAILED")[0]


def test_real_environment_passes() -> None:
    """Guards the committed snapshot: every package of this environment is covered and clean."""
    installed = check.environment_packages()
    assert "aiohttp" in installed
    assert "vault-service" not in installed  # the editable project is not a dependency
    assert check.check(load(), installed) == []


def test_pip_list_reading_normalises_and_skips_editable() -> None:
    """Guards name matching: pip's spellings map to the database's folder names."""
    listing = [
        {"name": "Pygments", "version": "2.21.0"},
        {"name": "typing_extensions", "version": "4.16.0"},
        {"name": "vault-service", "version": "0.1.0", "editable_project_location": "/src"},
    ]
    assert check.pip_list_packages(listing) == {
        "pygments": "2.21.0",
        "typing-extensions": "4.16.0",
    }


def test_malformed_snapshot_is_an_error(tmp_path: Path, pip_list: PipList) -> None:
    """Guards failing closed: an unreadable snapshot stops the audit instead of passing it."""
    broken = tmp_path / "snapshot.json"
    broken.write_text(json.dumps({"schema": 1, "generated": "2026-01-01"}))
    code, output = run("--snapshot", str(broken), "--installed", str(pip_list({"attrs": "1"})))
    assert code == 2
    assert "malformed advisory snapshot" in output
