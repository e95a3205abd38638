"""The stream index in a running service: its reader is part of ``serve``'s shutdown."""

from __future__ import annotations

import asyncio

import pytest

from tests.grpc_api.support import eventually
from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.service import ResultStreams
from vault_service.service.fanout import READER_TASK


def readers() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == READER_TASK]


async def test_stopping_the_service_closes_the_stream_index_reader(
    service: app.RunningService,
    stub: pb_grpc.VaultServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards the wiring: the reader that feeds the streams starts with the first stream, and
    ``stop()`` closes the streams' index (once, after the gRPC server) so that no reader is
    left running after the store is closed, even if a stream outlived the server's stop."""
    closed: list[ResultStreams] = []
    aclose = ResultStreams.aclose

    async def recording(streams: ResultStreams) -> None:
        closed.append(streams)
        await aclose(streams)

    monkeypatch.setattr(ResultStreams, "aclose", recording)
    assert not readers()
    stream = stub.StreamResults(pb.StreamResultsRequest())
    assert (await stream.read()).HasField("checkpoint")
    await eventually(lambda: len(readers()) == 1, within=5)
    [reader] = readers()
    await service.stop()
    assert reader.done()
    assert not readers()
    assert len(closed) == 1
    stream.cancel()
