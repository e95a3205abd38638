"""A real ``grpc.aio`` server on a loopback port over the real use cases (emulator + the store
of ``vault_store``: SQLite unless a module overrides it), and a real client channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest

from tests.fixtures.stack import VaultingFactory
from tests.grpc_api.support import CALLER_METADATA_KEY, NOWHERE
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.events import EventHub
from vault_service.grpc_api.auth import ANONYMOUS
from vault_service.grpc_api.callers import VAULT_SCOPE, Caller
from vault_service.grpc_api.errors import Context
from vault_service.grpc_api.server import Health, build_grpc_server
from vault_service.grpc_api.servicer import VaultServicer
from vault_service.service import ResultStreams, VaultingService
from vault_service.store import Store

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub


def caller_from_metadata(context: Context) -> Caller:
    """Stands in for authentication (tested on its own in test_auth.py): the caller named in
    test metadata with the vault scope, else anonymous."""
    for key, value in context.invocation_metadata() or ():
        if key == CALLER_METADATA_KEY and isinstance(value, str):
            return Caller(value, frozenset({VAULT_SCOPE}))
    return ANONYMOUS


@pytest.fixture
def vaulting(make_vaulting: VaultingFactory) -> VaultingService:
    return make_vaulting(NOWHERE)


@pytest.fixture
def streams(vault_store: Store, hub: EventHub) -> ResultStreams:
    return ResultStreams(vault_store, hub, checkpoint_interval=30.0)


@pytest.fixture
def servicer(vaulting: VaultingService, streams: ResultStreams) -> VaultServicer:
    return VaultServicer(vaulting, streams, caller_of=caller_from_metadata)


@pytest.fixture
def health() -> Health:
    return Health()


@dataclass(frozen=True)
class RunningServer:
    server: grpc.aio.Server
    port: int


@pytest.fixture
def interceptors() -> Sequence[grpc.aio.ServerInterceptor]:
    """The interceptors that run before request decoding: none, as ``caller_from_metadata``
    stands in for authentication; test_fuzz.py puts the production chain's in."""
    return ()


@pytest.fixture
async def grpc_server(
    servicer: VaultServicer, health: Health, interceptors: Sequence[grpc.aio.ServerInterceptor]
) -> AsyncIterator[RunningServer]:
    server, port = await build_grpc_server(
        servicer, listen="127.0.0.1:0", health=health, interceptors=interceptors
    )
    await server.start()
    yield RunningServer(server, port)
    await server.stop(None)


@pytest.fixture
async def channel(grpc_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> VaultServiceAsyncStub:
    return pb_grpc.VaultServiceStub(channel)
