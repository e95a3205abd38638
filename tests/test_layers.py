"""Imports inside ``vault_service/`` follow the layer list in ``docs/architecture.md``.

The "may import" column of that page's ``vault_service/`` table is the single source: this
test parses it and holds no list of its own, so changing what a module may import means
changing the page. Every import counts, including those under ``TYPE_CHECKING`` and inside
functions. Three more rules come with it: an import that crosses from one module or package
to another package goes through that package's face (its ``__init__`` and ``__all__``); the
emulator takes only signing and key code from ``antom/`` (never its client or models); and
the table has a row for every module and package, and none for one that is gone.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vault_service"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
GENERATED = "_proto"
EMULATOR_FORBIDDEN_ANTOM_MODULES = ("vault_service.antom.client", "vault_service.antom.models")
"""The emulator speaks Antom's wire by hand; our client and models would make it agree with us."""


@dataclass(frozen=True)
class Import:
    """One import of ours: the file and line, the unit imported, and how it was spelled."""

    path: Path
    line: int
    unit: str
    module: str
    names: tuple[str, ...]

    def __str__(self) -> str:
        spelled = (
            f"from {self.module} import {', '.join(self.names)}" if self.names else self.module
        )
        return f"{self.path.relative_to(ROOT)}:{self.line}: {spelled}"


def units() -> set[str]:
    """The modules and packages directly under ``vault_service/``."""
    found = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    return found | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}


def unit_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def foundation(text: str) -> set[str]:
    """The backticked modules of the "**Foundation**:" item of the layer list."""
    line = next(x for x in _section(text, "## Layers").splitlines() if "**Foundation**" in x)
    return set(re.findall(r"`([a-z_]+)`", line))


def allowed_imports() -> dict[str, set[str]]:
    """What each unit may import, read from the architecture page's ``vault_service/`` table."""
    text = ARCHITECTURE.read_text()
    base = foundation(text)
    allowed: dict[str, set[str]] = {}
    for row in _section(text, "## `vault_service/`").splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([a-z_]+)/?`", cells[0])
        if len(cells) != 3 or name is None:
            continue
        may = cells[2]
        if may.startswith("anything"):
            listed = units() - set(re.findall(r"`([a-z_]+)/?`", may))
        else:
            listed = set(re.findall(r"`([a-z_]+)/?`", re.sub(r"\([^)]*\)", "", may)))
            if "foundation" in may:
                listed |= base
        allowed[name.group(1)] = listed - {name.group(1)}
    return allowed


def imports(path: Path) -> Iterator[Import]:
    """Every import of ``vault_service`` in the file, wherever it is written."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "vault_service" and len(parts) > 1:
                    yield Import(path, node.lineno, parts[1], alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*anchor, module] if module else anchor)
            parts = module.split(".")
            if parts[0] != "vault_service":
                continue
            names = tuple(alias.name for alias in node.names)
            if len(parts) == 1:  # from vault_service import app, logs: each name is a unit
                for name in names:
                    yield Import(path, node.lineno, name, "vault_service", (name,))
            else:
                yield Import(path, node.lineno, parts[1], module, names)


def crossing() -> list[Import]:
    """The imports that leave the unit of the file they are written in."""
    return [
        found
        for path in sorted(PACKAGE.rglob("*.py"))
        if GENERATED not in path.parts
        for found in imports(path)
        if found.unit != unit_of(path)
    ]


def face_of(package: str) -> set[str]:
    """The names in a package's ``__all__``, read without importing it."""
    tree = ast.parse((PACKAGE / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def test_every_module_and_package_has_a_row_and_every_row_a_module() -> None:
    assert set(allowed_imports()) == units()


def test_imports_point_the_way_the_layer_list_says() -> None:
    allowed = allowed_imports()
    wrong = [
        f"{found}  ({unit_of(found.path)} may not import {found.unit})"
        for found in crossing()
        if found.unit not in allowed[unit_of(found.path)]
    ]
    assert wrong == []


def test_imports_across_packages_go_through_the_package_face() -> None:
    packages = {unit for unit in units() if (PACKAGE / unit).is_dir()} - {GENERATED}
    wrong = []
    for found in crossing():
        if found.unit not in packages or found.module == "vault_service":
            continue  # not a package, or the package itself (from vault_service import emulator)
        if found.module != f"vault_service.{found.unit}":
            wrong.append(f"{found}  (import from vault_service.{found.unit})")
        elif missing := set(found.names) - face_of(found.unit):
            wrong.append(f"{found}  (not in vault_service.{found.unit}.__all__: {missing})")
    assert wrong == []


@pytest.mark.parametrize(
    "package", sorted(u for u in units() if (PACKAGE / u).is_dir() and u != GENERATED)
)
def test_each_face_declares_names_it_has(package: str) -> None:
    face = face_of(package)
    assert face, f"vault_service/{package}/__init__.py declares no __all__"
    module = importlib.import_module(f"vault_service.{package}")
    assert [name for name in sorted(face) if not hasattr(module, name)] == []


def test_the_emulator_takes_only_signing_and_key_code_from_antom() -> None:
    antom = importlib.import_module("vault_service.antom")
    wrong = [
        f"{found}  ({name} is defined in {getattr(antom, name).__module__})"
        for found in crossing()
        if unit_of(found.path) == "emulator" and found.unit == "antom"
        for name in found.names
        if getattr(getattr(antom, name, None), "__module__", "") in EMULATOR_FORBIDDEN_ANTOM_MODULES
    ]
    assert wrong == []
