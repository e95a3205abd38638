"""Running the container tools from tests: which podman settings, and whether tests may skip.

Under ``CI=true`` the image is always built and run (``scripts/build-image`` installs the
tools); elsewhere a machine without podman skips those tests with a loud reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
CONTAINERS_CONF: Final = ROOT / "scripts" / "containers" / "containers.conf"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def podman_env() -> dict[str, str]:
    """The environment for podman: the project's containers.conf (runc, explicit ulimits)."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def require_podman() -> None:
    """Skip loudly without podman, except under CI, where scripts/build-image installs it."""
    if in_ci() or shutil.which("podman"):
        return
    pytest.skip(
        "SKIPPED LOUDLY: podman is not installed, so the image is neither built nor run here"
        " (scripts/container-tools installs it; under CI=true this never skips)"
    )
