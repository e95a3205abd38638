"""The OSV range evaluator, against hand-written records with known answers."""

import pytest

from scripts.advisories.osv import Advisory, AdvisoryError, Event, EventKind


def advisory(*ranges: list[tuple[EventKind, str]], versions: tuple[str, ...] = ()) -> Advisory:
    return Advisory(
        id="TEST-1",
        aliases=(),
        ranges=tuple(tuple(Event(kind, version) for kind, version in r) for r in ranges),
        versions=versions,
    )


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("0.9", False),
        ("1.0", True),
        ("1.0.1", True),
        ("1.9.9", True),
        ("2.0", False),
        ("2.1", False),
    ],
)
def test_introduced_fixed(version: str, affected: bool) -> None:
    """Guards the half-open interval: introduced is affected, fixed is not."""
    assert advisory([("introduced", "1.0"), ("fixed", "2.0")]).affects(version) is affected


@pytest.mark.parametrize(
    ("version", "affected"), [("0.1", True), ("3.8.4", True), ("3.8.5", False), ("4.0", False)]
)
def test_last_affected_is_inclusive(version: str, affected: bool) -> None:
    """Guards last_affected: the named version itself is still vulnerable, the next is not."""
    assert advisory([("introduced", "0"), ("last_affected", "3.8.4")]).affects(version) is affected


@pytest.mark.parametrize("version", ["0.0.0.dev1", "0.1", "3.14.5", "2026.10.19.post1"])
def test_introduced_zero_without_fix_affects_everything(version: str) -> None:
    """Guards "introduced: 0": every version, even a dev release that PEP 440 puts below 0."""
    assert advisory([("introduced", "0")]).affects(version)


@pytest.mark.parametrize(
    ("version", "affected"), [("1.2.3", True), ("1.2.03", True), ("1.2.4", False), ("x-1", True)]
)
def test_explicit_versions(version: str, affected: bool) -> None:
    """Guards explicit versions: matched by PEP 440 equality, legacy strings verbatim."""
    assert advisory(versions=("1.2.3", "x-1")).affects(version) is affected


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("1.6.1", True),
        ("1.6.2", False),
        ("1.7.3", True),
        ("1.7.4", False),
        ("1.8.1", True),
        ("1.8.2", False),
        ("2.0", False),
    ],
)
def test_multiple_ranges(version: str, affected: bool) -> None:
    """Guards several ranges (pydantic's PYSEC-2021-47 shape): affected if any range says so."""
    record = advisory(
        [("introduced", "1.8"), ("fixed", "1.8.2")],
        [("introduced", "1.7"), ("fixed", "1.7.4")],
        [("introduced", "0"), ("fixed", "1.6.2")],
    )
    assert record.affects(version) is affected


@pytest.mark.parametrize(
    ("version", "affected"),
    [("1.26.16", True), ("1.26.17", False), ("2.0.0", True), ("2.0.5", True), ("2.0.6", False)],
)
def test_one_range_with_unsorted_stretches(version: str, affected: bool) -> None:
    """Guards event sorting: urllib3's PYSEC-2023-192 lists the 2.x stretch before the 1.x one."""
    record = advisory(
        [("introduced", "2.0.0"), ("fixed", "2.0.6"), ("introduced", "0"), ("fixed", "1.26.17")]
    )
    assert record.affects(version) is affected
    assert record.fixed_versions() == ["1.26.17", "2.0.6"]


def test_unparseable_installed_version_fails_closed() -> None:
    """Guards against passing silently: a version that cannot be compared is an error."""
    with pytest.raises(AdvisoryError, match="not a PEP 440 version"):
        advisory([("introduced", "0"), ("fixed", "1.0")]).affects("not a version")
