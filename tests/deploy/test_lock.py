"""requirements/runtime.lock, the hashed lock the image and production installs use, against
pyproject.toml: it must pin exactly the runtime dependencies' closure, each pin allowed by
pyproject, each with hashes, and .venv (where scripts/bootstrap installs it first) must hold
exactly those versions, so the tests exercise what ships. Refresh it with scripts/lock."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.deploy.containers import ROOT

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)\s*\\?$")
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}\s*\\?$")


def read_lock(path: Path) -> dict[NormalizedName, Version]:
    """The pins of a `uv pip compile --generate-hashes` file; every pin must carry hashes."""
    pins: dict[NormalizedName, Version] = {}
    hashes: dict[NormalizedName, int] = {}
    current: NormalizedName | None = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if pin := PIN.match(line):
            current = canonicalize_name(pin["name"])
            assert current not in pins, f"{path.name}: {current} pinned twice"
            pins[current] = Version(pin["version"])
            hashes[current] = 0
        else:
            assert current is not None, f"{path.name}: a hash before any pin: {line!r}"
            assert HASH.match(line), f"{path.name}: unexpected {line!r}"
            hashes[current] += 1
    assert pins, f"{path.name} pins nothing"
    assert all(hashes.values()), f"{path.name}: pins without a hash: {hashes}"
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def installed_closure(roots: list[Requirement]) -> dict[NormalizedName, Version]:
    """The runtime dependencies as installed in this environment, followed transitively with
    their markers evaluated here (CPython 3.11 on Linux, like the image)."""
    found: dict[NormalizedName, Version] = {}
    walked: set[tuple[NormalizedName, tuple[str, ...]]] = set()
    todo = [(requirement, "") for requirement in roots]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate(
            {**default_environment(), "extra": extra}
        ):
            continue
        name = canonicalize_name(requirement.name)
        extras = tuple(sorted(requirement.extras))
        if (name, extras) in walked:
            continue
        walked.add((name, extras))
        distribution = importlib.metadata.distribution(name)
        found[name] = Version(distribution.version)
        for text in distribution.requires or []:
            for wanted in ("", *extras):
                todo.append((Requirement(text), wanted))
    return found


def test_the_runtime_lock_pins_exactly_the_runtime_dependencies() -> None:
    """Fails when pyproject.toml's dependencies change without `scripts/lock`, or when the
    development environment drifted from the lock (a dev tool upgraded a runtime package)."""
    lock = read_lock(ROOT / "requirements" / "runtime.lock")
    for requirement in runtime_requirements():
        pinned = lock.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in runtime.lock: run scripts/lock"
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"runtime.lock pins {requirement.name}=={pinned}, outside {requirement}:"
            " run scripts/lock"
        )
    installed = installed_closure(runtime_requirements())
    assert set(lock) == set(installed), (
        f"runtime.lock and the runtime dependencies differ: only locked"
        f" {sorted(set(lock) - set(installed))}, only required"
        f" {sorted(set(installed) - set(lock))}: run scripts/lock, then scripts/bootstrap"
    )
    drifted = {name: (str(lock[name]), str(v)) for name, v in installed.items() if v != lock[name]}
    assert not drifted, f"(locked, installed) differ: {drifted}: run scripts/bootstrap"


def test_the_build_lock_pins_the_build_tools_pyproject_asks_for() -> None:
    """The image builds the project with build.lock's setuptools and no isolated build
    environment, so that pin must satisfy pyproject's build-system requirement."""
    lock = read_lock(ROOT / "requirements" / "build.lock")
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    wanted = [Requirement(text) for text in build_system["requires"]]
    wanted += [
        Requirement(line)
        for line in (ROOT / "requirements" / "build.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for requirement in wanted:
        pinned = lock.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"build.lock does not pin {requirement.name}: run scripts/lock"
        assert requirement.specifier.contains(pinned), (
            f"build.lock's {pinned} does not satisfy {requirement}: run scripts/lock"
        )
    assert set(lock) == {"pip", "setuptools"}
