"""Checks installed packages against the committed advisory snapshot, offline.

Fails (exit 1) on a package whose installed version an advisory covers, and on an installed
package the snapshot never looked up: a dependency added without refreshing the snapshot would
otherwise pass unexamined. Installed packages come from this interpreter's environment, or from
``pip list --format json`` output (``--installed``), which is how other virtualenvs are checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TextIO

from scripts.advisories.osv import AdvisoryError
from scripts.advisories.snapshot import DEFAULT_PATH, Snapshot, SnapshotError, load, normalise

REFRESH_HINT = (
    "refresh it with scripts/update-advisories (see docs/development.md, 'Dependency audit')"
)


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    message: str


def check(snapshot: Snapshot, installed: Mapping[str, str]) -> list[Finding]:
    """Every problem with ``installed`` (normalised name -> version); empty means it passes."""
    findings: list[Finding] = []
    for name, version in sorted(installed.items()):
        advisories = snapshot.packages.get(name)
        if advisories is None:
            findings.append(Finding(name, version, f"not covered by the snapshot; {REFRESH_HINT}"))
            continue
        for advisory in advisories:
            try:
                affected = advisory.affects(version)
                fixed = ", ".join(advisory.fixed_versions()) or "no fixed version known"
            except AdvisoryError as error:
                findings.append(Finding(name, version, f"{advisory.id}: cannot evaluate: {error}"))
                continue
            if affected:
                aliases = f" ({', '.join(advisory.aliases)})" if advisory.aliases else ""
                findings.append(
                    Finding(name, version, f"{advisory.id}{aliases}, fixed in: {fixed}")
                )
    return findings


def environment_packages() -> dict[str, str]:
    """This interpreter's installed distributions, without editable installs (the project).

    An editable project is skipped by name: run from its checkout, the interpreter also sees the
    checkout's own ``*.egg-info``, a second copy of the same distribution without the marker.
    """
    distributions = list(metadata.distributions())
    editable = {normalise(dist.metadata["Name"]) for dist in distributions if _editable(dist)}
    installed = {normalise(dist.metadata["Name"]): dist.version for dist in distributions}
    return {name: version for name, version in installed.items() if name not in editable}


def pip_list_packages(listing: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Packages from ``pip list --format json``, without editable installs."""
    return {
        normalise(entry["name"]): entry["version"]
        for entry in listing
        if "editable_project_location" not in entry
    }


def _editable(dist: metadata.Distribution) -> bool:
    direct_url = dist.read_text("direct_url.json")
    if not direct_url:
        return False
    return bool(json.loads(direct_url).get("dir_info", {}).get("editable", False))


def read_installed(source: str) -> dict[str, str]:
    """The packages of a `pip list --format json` file (``-``: standard input)."""
    if source == "-":
        return pip_list_packages(json.load(sys.stdin))
    with Path(source).open(encoding="utf-8") as file:
        return pip_list_packages(json.load(file))


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.advisories.check", description=__doc__)
    parser.add_argument("--snapshot", type=Path, default=DEFAULT_PATH, help="snapshot JSON file")
    parser.add_argument(
        "--installed",
        metavar="FILE",
        help="`pip list --format json` output ('-' for stdin) instead of this environment",
    )
    parser.add_argument("--label", default="this environment", help="name used in messages")
    args = parser.parse_args(argv)
    try:
        snapshot = load(args.snapshot)
        installed = read_installed(args.installed) if args.installed else environment_packages()
    except (SnapshotError, OSError, ValueError, KeyError) as error:
        print(f"audit-deps: FAILED: {error}", file=out)
        return 2
    findings = check(snapshot, installed)
    origin = f"offline advisory snapshot of {snapshot.generated}, from {snapshot.source}"
    for finding in findings:
        print(f"audit-deps: {finding.package} {finding.version}: {finding.message}", file=out)
    if findings:
        print(f"audit-deps: FAILED: {len(findings)} finding(s) in {args.label}; {origin}", file=out)
        return 1
    print(
        f"audit-deps: {len(installed)} packages in {args.label} checked against the {origin}:"
        " no known vulnerabilities",
        file=out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
