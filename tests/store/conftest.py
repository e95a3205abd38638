"""Fixtures of the shared store suite: every test taking ``store``, ``backend`` or
``new_backend`` runs once per backend registered in :mod:`tests.store.backends`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.store.backends import BACKENDS, Backend, MakeBackend
from vault_service.store import Store


@pytest.fixture(params=sorted(BACKENDS))
def new_backend(request: pytest.FixtureRequest) -> MakeBackend:
    """``await new_backend()``: another fresh, unmigrated database of one backend."""
    name: str = request.param
    return BACKENDS[name](request)


@pytest.fixture
async def backend(new_backend: MakeBackend) -> Backend:
    """A fresh, unmigrated database of one backend."""
    return await new_backend()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """An open store on a freshly migrated database of ``backend``."""
    await backend.migrate()
    opened = await backend.open()
    yield opened
    await opened.close()
