"""The anchor of the fan-out bench: a bare grpc.aio server that pushes one message to every open
stream when told to, with nothing of the service in between (no store, no index, no auth).

It serves ``vault.v1.VaultService/StreamResults`` (a checkpoint first, as the service does, then
whatever is published), so the bench holds and reads its streams with the very client code it
uses on the service, and ``bench.Bare/Publish``, a unary call whose request is a serialised
``StreamResultsResponse`` that every open stream then receives. Each stream waits on an
``asyncio.Queue`` of its own, the plain way to write this. The server takes the service's
channel options (``server_options``), so HTTP/2 limits and keepalives are the same.

    python -m bench.fanout.bare --listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.grpc_api.server import server_options

from ..service.access import CHANNEL_OPTIONS
from ..service.processes import child, free_ports, wait_for_port

PUBLISH = "/bench.Bare/Publish"


class Bare:
    """Every open stream's queue; :meth:`publish` puts one message into each."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[pb.StreamResultsResponse]] = set()

    async def stream(
        self, _request: pb.StreamResultsRequest, _context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamResultsResponse]:
        queue: asyncio.Queue[pb.StreamResultsResponse] = asyncio.Queue()
        self.queues.add(queue)
        try:
            yield pb.StreamResultsResponse(checkpoint=pb.Checkpoint(resume_token="bare"))
            while True:
                yield await queue.get()
        finally:
            self.queues.discard(queue)

    async def publish(self, request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        message = pb.StreamResultsResponse.FromString(request)
        for queue in self.queues:
            queue.put_nowait(message)
        return b""


async def serve(listen: str) -> None:
    bare = Bare()
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "vault.v1.VaultService",
                {
                    "StreamResults": grpc.unary_stream_rpc_method_handler(
                        bare.stream,
                        request_deserializer=pb.StreamResultsRequest.FromString,
                        response_serializer=pb.StreamResultsResponse.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "bench.Bare",
                {"Publish": grpc.unary_unary_rpc_method_handler(bare.publish)},
            ),
        ]
    )
    server.add_insecure_port(listen)
    await server.start()
    await server.wait_for_termination()


@dataclass
class BareServer:
    pid: int
    port: int

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=CHANNEL_OPTIONS)


@contextlib.asynccontextmanager
async def bare_server(workdir: Path, env: dict[str, str]) -> AsyncIterator[BareServer]:
    """The bare server as a process of its own (its CPU and memory read apart)."""
    [port] = free_ports(1)
    async with child(
        ["--listen", f"127.0.0.1:{port}"],
        env,
        workdir / "bare.log",
        command=(sys.executable, "-m", "bench.fanout.bare"),
    ) as process:
        await wait_for_port(port, process, time.monotonic() + 30)
        yield BareServer(process.pid, port)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout.bare", description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port")
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
