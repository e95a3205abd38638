"""The load generator: pre-built signed HTTP/1.1 requests written on raw keep-alive sockets.

aiohttp's client costs more CPU per request than the bare server it would measure, on a
machine of two cores shared by server and generator; a request here is one ``write`` of bytes
built (and signed) before the timed window and one read of the answer's head and body, so the
generator's CPU per request (reported beside every figure) stays well below the server's.

Two shapes of load:

* closed loop (:func:`closed_loop`): ``concurrency`` connections, each sending its next request
  as soon as the previous one is answered: the throughput a server sustains at that
  concurrency;
* open loop (:func:`open_loop`): requests sent on a fixed schedule at ``rate`` per second
  whatever the answers do, each latency measured from its scheduled time (so a stalled server
  is charged for the requests it held back: no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from vault_service.webhook import ACKNOWLEDGEMENT

_HEAD_END = b"\r\n\r\n"


def http_request(path: str, headers: dict[str, str], body: bytes) -> bytes:
    """One keep-alive POST, as bytes on the wire."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Outcome:
    """What the requests got: latency (s) and whether each was acknowledged, by index."""

    latencies: list[float] = field(default_factory=list)
    acknowledged: set[int] = field(default_factory=set)
    failed: int = 0
    wall: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.acknowledged) / self.wall if self.wall else 0.0

    async def exchange(self, connection: _Connection, n: int, request: bytes, since: float) -> bool:
        """Send request ``n`` and count its answer, its latency from ``since``
        (``perf_counter``); whether the connection can carry another request."""
        try:
            acked = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError):
            self.failed += 1
            return False
        self.latencies.append(time.perf_counter() - since)
        if acked:
            self.acknowledged.add(n)
        else:
            self.failed += 1
        return True


class _Connection:
    """One keep-alive connection: send a request, read its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> bool:
        """Send ``request``; whether the answer is 200 with Antom's acknowledgement."""
        self._writer.write(request)
        head = await self._reader.readuntil(_HEAD_END)
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self._reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200 ") and body == ACKNOWLEDGEMENT

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def closed_loop(port: int, requests: list[bytes], concurrency: int) -> Outcome:
    """Every request once, ``concurrency`` at a time on as many connections."""
    outcome = Outcome()
    connections = [await _Connection.open(port) for _ in range(concurrency)]
    indices = iter(range(len(requests)))

    async def worker(connection: _Connection) -> None:
        for n in indices:
            if not await outcome.exchange(connection, n, requests[n], time.perf_counter()):
                return

    started = time.perf_counter()
    await asyncio.gather(*(worker(connection) for connection in connections))
    outcome.wall = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return outcome


async def open_loop(port: int, requests: list[bytes], rate: float, connections: int) -> Outcome:
    """Request ``n`` is due at ``n / rate`` s; it goes out on an idle connection of the
    ``connections`` opened beforehand (waiting for one if all are busy, which the latency,
    counted from the due time, then shows)."""
    outcome = Outcome()
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    opened = [await _Connection.open(port) for _ in range(connections)]
    for connection in opened:
        idle.put_nowait(connection)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def send(n: int, due: float) -> None:
        connection = await idle.get()
        if await outcome.exchange(connection, n, requests[n], due):
            idle.put_nowait(connection)

    started = time.perf_counter()
    for n in range(len(requests)):
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(send(n, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    outcome.wall = time.perf_counter() - started
    for connection in opened:
        await connection.close()
    return outcome
