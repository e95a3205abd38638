"""The advisory snapshot file: its format, loading, and building it from OSV records.

Format (JSON): ``generated`` (date), ``source``, ``notes``, and ``packages``, a map from every
looked-up package (PEP 503 normalised name) to its advisories. A package with no advisory maps to
an empty list: present means "looked up", absent means "never looked up", and the check treats
the two differently. Only facts are kept (id, aliases, ECOSYSTEM range events, explicit versions
the ranges do not already cover); summaries and details stay in the advisory database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.advisories.osv import EVENT_KINDS, Advisory, AdvisoryError, Event

DEFAULT_PATH = Path(__file__).with_name("snapshot.json")
SCHEMA = 1


class SnapshotError(Exception):
    """The snapshot file is missing or malformed: the audit cannot say anything."""


@dataclass(frozen=True)
class Snapshot:
    generated: str
    source: str
    packages: Mapping[str, tuple[Advisory, ...]]
    notes: tuple[str, ...] = field(default=())


def normalise(name: str) -> str:
    """PEP 503 name normalisation, as the advisory database names its folders."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load(path: Path = DEFAULT_PATH) -> Snapshot:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SnapshotError(f"cannot read advisory snapshot {path}: {error}") from error
    try:
        if raw["schema"] != SCHEMA:
            raise SnapshotError(f"{path}: schema {raw['schema']!r}, expected {SCHEMA}")
        packages = {
            str(name): tuple(_advisory(entry) for entry in entries)
            for name, entries in raw["packages"].items()
        }
        return Snapshot(
            generated=str(raw["generated"]),
            source=str(raw["source"]),
            packages=packages,
            notes=tuple(str(note) for note in raw.get("notes", [])),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise SnapshotError(f"{path}: malformed advisory snapshot ({error!r})") from error


def dump(snapshot: Snapshot, path: Path) -> None:
    document = {
        "schema": SCHEMA,
        "generated": snapshot.generated,
        "source": snapshot.source,
        "notes": list(snapshot.notes),
        "packages": {
            name: [_entry(advisory) for advisory in snapshot.packages[name]]
            for name in sorted(snapshot.packages)
        },
    }
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def from_osv(
    records: Iterable[Mapping[str, Any]],
    packages: Iterable[str],
    *,
    generated: str,
    source: str,
    notes: Iterable[str] = (),
) -> Snapshot:
    """Keeps, for each wanted package, the facts of every non-withdrawn PyPI advisory."""
    found: dict[str, list[Advisory]] = {normalise(name): [] for name in packages}
    for record in records:
        if record.get("withdrawn"):
            continue
        for affected in record.get("affected", []):
            package = affected.get("package", {})
            name = normalise(str(package.get("name", "")))
            if package.get("ecosystem") != "PyPI" or name not in found:
                continue
            advisory = _from_affected(record, affected)
            if advisory.id not in {known.id for known in found[name]}:
                found[name].append(advisory)
    return Snapshot(
        generated=generated,
        source=source,
        packages={name: tuple(sorted(adv, key=lambda a: a.id)) for name, adv in found.items()},
        notes=tuple(notes),
    )


def _from_affected(record: Mapping[str, Any], affected: Mapping[str, Any]) -> Advisory:
    ranges = tuple(
        tuple(
            Event(kind, str(event[kind]))
            for event in entry.get("events", [])
            for kind in EVENT_KINDS
            if kind in event
        )
        for entry in affected.get("ranges", [])
        if entry.get("type") == "ECOSYSTEM"
    )
    ranged = Advisory(str(record["id"]), (), ranges, ())
    listed = tuple(str(version) for version in affected.get("versions", []))
    return Advisory(
        id=str(record["id"]),
        aliases=tuple(sorted(str(alias) for alias in record.get("aliases", []))),
        ranges=ranges,
        versions=tuple(v for v in listed if not _covered(ranged, v)),
    )


def _covered(ranged: Advisory, version: str) -> bool:
    """Whether the ranges alone already mark ``version``; unparseable ones are kept verbatim."""
    try:
        return ranged.affects(version)
    except AdvisoryError:
        return False


def _advisory(entry: Mapping[str, Any]) -> Advisory:
    return Advisory(
        id=str(entry["id"]),
        aliases=tuple(str(alias) for alias in entry["aliases"]),
        ranges=tuple(tuple(_event(event) for event in events) for events in entry["ranges"]),
        versions=tuple(str(version) for version in entry["versions"]),
    )


def _event(event: Mapping[str, Any]) -> Event:
    kinds = [kind for kind in EVENT_KINDS if kind in event]
    if len(kinds) != 1 or len(event) != 1:
        raise SnapshotError(f"unknown range event {dict(event)!r}")
    return Event(kinds[0], str(event[kinds[0]]))


def _entry(advisory: Advisory) -> dict[str, Any]:
    return {
        "id": advisory.id,
        "aliases": list(advisory.aliases),
        "ranges": [[{e.kind: e.version} for e in events] for events in advisory.ranges],
        "versions": list(advisory.versions),
    }
