"""A bare ``grpc.aio`` server: one unary method answering fixed bytes, nothing else.

The gRPC floor of ``bench.create_session``: what a unary call costs a grpc.aio server in this
Python before any interceptor, validation or use case runs. Run as
``python -m bench.create_session.bare_grpc PORT ANSWER_BYTES``; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc

METHOD = "/bench.Bare/Call"
COMMAND = (sys.executable, "-m", "bench.create_session.bare_grpc")


async def serve(port: int, answer_size: int) -> None:
    answer = b"\x0a" * answer_size

    async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        del request, context
        return answer

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Bare", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
