"""The manuals: the copies of ``serve --help`` (docs/operations.md) and ``emulator --help``
(docs/emulator.md) must be the real ones, and the README front page and the pages under docs/
must not link to files that are not there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def documented_help(page: Path, command: str) -> str:
    """The text of ``page``'s code block that starts with ``$ vault-service COMMAND --help``."""
    text = page.read_text()
    block_start = f"$ vault-service {command} --help\n"
    start = text.index(block_start) + len(block_start)
    return text[start : text.index("```", start)]


def actual_help(command: str, columns: int) -> str:
    return subprocess.run(
        [sys.executable, "-m", "vault_service", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": str(columns)},  # argparse wraps to the terminal's width
    ).stdout


def test_the_operations_page_shows_the_current_serve_help() -> None:
    """Guards against a setting added to the code but not to the manual (this drifted once:
    the README still described VAULT_INSECURE as 'callers are not authenticated yet')."""
    documented = documented_help(DOCS / "operations.md", "serve")
    actual = actual_help("serve", columns=80)
    assert documented == actual


def test_the_emulator_page_shows_the_current_emulator_help() -> None:
    """Guards against an emulator option, test card or endpoint added to the code but not to
    the page developers read (the copy is wrapped at 100 columns)."""
    documented = documented_help(DOCS / "emulator.md", "emulator")
    actual = actual_help("emulator", columns=100)
    assert documented == actual


def test_the_manuals_link_only_to_files_that_exist() -> None:
    """The README is a front page linking to docs/ and bench/: a page moved or renamed must not
    leave a dead link behind."""
    link = re.compile(r"\]\(([^)#\s]+)[^)]*\)")
    pages = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted(DOCS.glob("*.md"))]
    dead = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in pages
        for target in link.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert len(pages) > 2
    assert dead == []
