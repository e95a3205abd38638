"""The run's output: Markdown tables, printed row by row as they are measured and again whole
at the end, headed by what was measured (machine, versions, which checkout and commit)."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import version

from .processes import SOURCE_ROOT


def add_row(rows: list[str], *cells: object) -> None:
    rows.append(f"| {' | '.join(str(cell) for cell in cells)} |")
    print(rows[-1], flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


@dataclass
class Report:
    sections: dict[str, list[str]] = field(default_factory=dict)

    def table(self, title: str, header: list[str]) -> list[str]:
        rows = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
        self.sections[title] = rows
        return rows

    def render(self) -> str:
        return "\n\n".join(
            f"{title}\n\n" + "\n".join(rows) for title, rows in self.sections.items()
        )


def versions() -> str:
    packages = ", ".join(
        f"{name} {version(name)}" for name in ("grpcio", "protobuf", "aiohttp", "cryptography")
    )
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"{packages}"
    )


def source() -> str:
    """Which code was measured: the checkout and commit of the vault_service imported here."""
    git = ["git", "-C", str(SOURCE_ROOT)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--", "vault_service"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"vault_service from {SOURCE_ROOT} (not a git checkout)"
    dirty = " with uncommitted changes" if changes else ""
    return f"vault_service from {SOURCE_ROOT} at {commit}{dirty}"


def positive(text: str) -> int:
    """A command-line count: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value
