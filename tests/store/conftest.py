"""Fixtures of the shared store suite: every test taking ``store`` or ``backend`` runs once per
backend registered in :mod:`tests.store.backends`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.store.backends import BACKENDS, Backend
from vault_service.store import Store


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh, unmigrated database of one backend."""
    name: str = request.param
    return BACKENDS[name](tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """An open store on a freshly migrated database of ``backend``."""
    await backend.migrate()
    opened = await backend.open()
    yield opened
    await opened.close()
