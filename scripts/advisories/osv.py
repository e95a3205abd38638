"""OSV ``affected`` evaluation with PyPI (PEP 440) version semantics.

OSV ranges are ordered event lists, not intervals: walking the events in version order, an
``introduced`` opens a vulnerable stretch, a ``fixed`` closes it at that version and a
``last_affected`` closes it just after. One range may hold several stretches (urllib3 records a
2.x and a 1.x branch in one list), so events are sorted rather than read pairwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from packaging.version import InvalidVersion, Version

EventKind = Literal["introduced", "fixed", "last_affected"]
EVENT_KINDS: tuple[EventKind, ...] = ("introduced", "fixed", "last_affected")


class AdvisoryError(Exception):
    """An advisory or an installed version that cannot be evaluated; the check fails closed."""


@dataclass(frozen=True)
class Event:
    kind: EventKind
    version: str


@dataclass(frozen=True)
class Advisory:
    """The facts of one advisory for one package; no prose, nothing to render."""

    id: str
    aliases: tuple[str, ...]
    ranges: tuple[tuple[Event, ...], ...]
    versions: tuple[str, ...]

    def affects(self, version: str) -> bool:
        """Whether ``version`` is affected: listed explicitly, or inside one of the ranges."""
        if version in self.versions:
            return True
        parsed = parse_version(version, f"installed version checked against {self.id}")
        if any(parsed == _try_parse(listed) for listed in self.versions):
            return True
        return any(_in_range(parsed, events, self.id) for events in self.ranges)

    def fixed_versions(self) -> list[str]:
        """Every ``fixed`` version named by the ranges, lowest first (what to upgrade to)."""
        fixed = {e.version for events in self.ranges for e in events if e.kind == "fixed"}
        return sorted(fixed, key=lambda v: parse_version(v, self.id))


def parse_version(text: str, context: str) -> Version:
    """PEP 440 parse; ``"0"`` (OSV's "since the beginning") parses as the lowest release."""
    try:
        return Version(text)
    except InvalidVersion as error:
        raise AdvisoryError(f"{context}: {text!r} is not a PEP 440 version") from error


def _try_parse(text: str) -> Version | None:
    """Explicit version lists may hold legacy strings; those only ever match verbatim."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(version: Version, events: Iterable[Event], advisory_id: str) -> bool:
    ordered = sorted(events, key=lambda e: parse_version(e.version, advisory_id))
    affected = False
    for event in ordered:
        bound = parse_version(event.version, advisory_id)
        if event.kind == "introduced":
            affected = affected or event.version == "0" or version >= bound
        elif version > bound or (event.kind == "fixed" and version == bound):
            affected = False
    return affected
