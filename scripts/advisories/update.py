"""Rebuilds the advisory snapshot from OSV's PyPI export, where the network allows.

The export is one zip of OSV JSON records (PYSEC, GHSA, MAL, ...) for all of PyPI; only records
for the packages installed in the given environments are kept. A local zip path is accepted as
well as a URL, so a refresh can be prepared on another machine and so the path is testable.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from scripts.advisories.check import environment_packages, read_installed
from scripts.advisories.snapshot import DEFAULT_PATH, dump, from_osv

OSV_PYPI_EXPORT = "https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip"
NOTES = (
    "Facts only: advisory id, aliases, ECOSYSTEM range events, explicitly listed versions that"
    " the ranges do not already cover. Withdrawn advisories are left out.",
    "Every key of 'packages' was looked up; an empty list means no advisory was known for it.",
)


def read_records(archive: Path) -> Iterator[Mapping[str, Any]]:
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.namelist():
            if member.endswith(".json"):
                yield json.loads(bundle.read(member))


def fetch(source: str, into: Path) -> Path:
    """The export as a local file: ``source`` itself if it is a path, else downloaded."""
    if not source.startswith(("https://", "http://")):
        return Path(source)
    target = into / "osv-pypi.zip"
    with urllib.request.urlopen(source, timeout=120) as response, target.open("wb") as file:  # noqa: S310 - the URL is the fixed https export or the user's own
        shutil.copyfileobj(response, file)
    return target


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.advisories.update", description=__doc__
    )
    parser.add_argument(
        "--from", dest="source", default=OSV_PYPI_EXPORT, help="OSV PyPI export: URL or zip path"
    )
    parser.add_argument(
        "--installed",
        metavar="FILE",
        action="append",
        default=[],
        help="`pip list --format json` output of an environment to cover (repeatable);"
        " default: this environment",
    )
    parser.add_argument("--snapshot", type=Path, default=DEFAULT_PATH, help="file to write")
    args = parser.parse_args(argv)

    packages: dict[str, str] = {}
    for listing in args.installed:
        packages.update(read_installed(listing))
    if not args.installed:
        packages = environment_packages()

    with tempfile.TemporaryDirectory() as scratch:
        archive = fetch(args.source, Path(scratch))
        snapshot = from_osv(
            read_records(archive),
            packages,
            generated=datetime.datetime.now(datetime.UTC).date().isoformat(),
            source=f"OSV PyPI export ({args.source})",
            notes=NOTES,
        )
    dump(snapshot, args.snapshot)
    advisories = sum(len(found) for found in snapshot.packages.values())
    print(
        f"update-advisories: {args.snapshot}: {len(snapshot.packages)} packages looked up,"
        f" {advisories} advisories kept",
        file=out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
