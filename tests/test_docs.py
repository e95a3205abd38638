"""docs/operations.md is the operators' manual: its copy of ``serve --help`` must be the real one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
HELP_BLOCK_START = "$ vault-service serve --help\n"


def test_the_operations_page_shows_the_current_serve_help() -> None:
    """Guards against a setting added to the code but not to the manual (this drifted once:
    the README still described VAULT_INSECURE as 'callers are not authenticated yet')."""
    text = OPERATIONS.read_text()
    start = text.index(HELP_BLOCK_START) + len(HELP_BLOCK_START)
    documented = text[start : text.index("```", start)]
    actual = subprocess.run(
        [sys.executable, "-m", "vault_service", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},  # argparse wraps to the terminal's width
    ).stdout
    assert documented == actual
