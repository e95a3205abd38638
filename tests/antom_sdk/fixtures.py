"""Pytest plugin: the session-wide ``antom_sdk`` fixture (registered by ``tests/conftest.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.antom_sdk.bridge import AntomSdk, AntomSdkError, AntomSdkWorkerDied

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_ENV = "VAULT_ANTOM_SDK_PYTHON"
CREATE_HINT = (
    "create it from the repository root with `python3.11 -m venv .venv-antom-sdk && "
    ".venv-antom-sdk/bin/pip install global-open-sdk-python==1.7.1` "
    f"(or point {PYTHON_ENV} at a Python that has that package)"
)


def sdk_python() -> Path:
    """The interpreter of the reference SDK's virtualenv; ``$VAULT_ANTOM_SDK_PYTHON`` wins."""
    override = os.environ.get(PYTHON_ENV)
    return Path(override) if override else REPO_ROOT / ".venv-antom-sdk" / "bin" / "python"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def antom_sdk() -> Iterator[AntomSdk]:
    """One reference-SDK worker for the whole session, ended at session teardown.

    A missing interpreter fails the run under ``CI=true`` and skips (loudly) elsewhere; an
    interpreter that exists but cannot run the worker always fails.
    """
    python = sdk_python()
    if not python.exists():
        message = f"Antom SDK cross-checks cannot run: {python} does not exist; {CREATE_HINT}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(f"!!! NOT CHECKED AGAINST THE OFFICIAL SDK !!! {message}")
    try:
        sdk = AntomSdk.start(python)
    except (OSError, AntomSdkError, AntomSdkWorkerDied) as exc:
        pytest.fail(f"the Antom SDK worker did not start under {python}: {exc}", pytrace=False)
    try:
        yield sdk
    finally:
        sdk.close()
