"""Several replicas of vault-service sharing one PostgreSQL database, and the clients that
talk to them.

Every test here gets a fresh database of its own (``postgres_dsn``; under ``CI=true`` an
unreachable server fails the test instead of skipping it). A replica is either ``app.start``
in this process (:func:`start_replica`: its own pools, LISTEN connection and hub) or a real
``vault-service serve`` process (:func:`serve_processes`). Whatever a test starts is stopped at
teardown, which then proves that no replica left a database connection (or, for processes, a
process) behind.

Replicas run with a long checkpoint interval, so that a stream on one replica learns about
another replica's event only through the LISTEN/NOTIFY wake-up, never by polling: a lost
wake-up shows up as a test timing out instead of hiding behind the next checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias

import asyncpg
import grpc
import pytest

from tests.e2e.conftest import ServiceEnv
from tests.e2e.conftest import service_env as service_env  # noqa: PLC0414 - fixture re-export
from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.config import Settings
from vault_service.domain import (
    Event,
    EventSource,
    decode_resume_token,
)
from vault_service.grpc_api import mapping
from vault_service.store import DataKeyRing
from vault_service.store.codec import decode_snapshot
from vault_service.store.postgres_pool import APPLICATION_NAME
from vault_service.store.sealing import (
    EVENT_SEALED,
    EVENT_TOKEN,
    open_sealed_document,
    open_token,
)

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

Stub: TypeAlias = "VaultServiceAsyncStub"

LISTEN_APPLICATION_NAME: Final = "vault-service-listen"
"""``application_name`` of a replica's LISTEN connection (its pools use APPLICATION_NAME)."""

CHECKPOINT_INTERVAL: Final = "30"
STOP_GRACE: Final = 10.0
SERVE_COMMAND: Final = (sys.executable, "-m", "vault_service", "serve")
WAIT_STEP: Final = 0.02

StreamCall = grpc.aio.UnaryStreamCall[pb.StreamResultsRequest, pb.StreamResultsResponse]


@pytest.fixture
def replica_env(service_env: ServiceEnv, postgres_dsn: str) -> ServiceEnv:
    """The e2e environment (keys in files, the emulator as Antom) on the test's database."""
    return {
        **service_env,
        "VAULT_DATABASE_URL": postgres_dsn,
        "VAULT_CHECKPOINT_INTERVAL": CHECKPOINT_INTERVAL,
    }


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], *, within: float, what: str
) -> None:
    """Poll ``condition`` (plain or async) until it holds; fail naming ``what`` after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        holds = condition()
        if holds if isinstance(holds, bool) else await holds:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(WAIT_STEP)


async def replica_connections(dsn: str) -> dict[str, int]:
    """Open connections to the database at ``dsn`` by application name (replicas' only)."""
    admin = await asyncpg.connect(dsn)
    try:
        rows = await admin.fetch(
            "SELECT application_name, count(*) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = ANY($1::text[])"
            " GROUP BY application_name",
            [APPLICATION_NAME, LISTEN_APPLICATION_NAME],
        )
    finally:
        await admin.close()
    return {row["application_name"]: row["n"] for row in rows}


async def wait_for_listeners(dsn: str, count: int) -> None:
    """Wait until ``count`` replicas have their LISTEN connection (again)."""

    async def listening() -> bool:
        return (await replica_connections(dsn)).get(LISTEN_APPLICATION_NAME, 0) == count

    await wait_until(listening, within=10, what=f"{count} LISTEN connections")


async def assert_no_replica_connections(dsn: str) -> None:
    """Every replica connection is gone (a SIGKILLed process's within a few seconds)."""

    async def none_left() -> bool:
        return not await replica_connections(dsn)

    await wait_until(none_left, within=5, what="the replicas' database connections to close")


@dataclass(frozen=True)
class Log:
    """The event log as the database holds it: the reference every stream is checked against."""

    log_id: str
    events: list[Event]

    def after(self, position: int) -> list[Event]:
        return [event for event in self.events if event.event_id > position]


async def read_log(dsn: str, data_keys: DataKeyRing) -> Log:
    """The whole event log, read directly with SQL (not through the store under test); card
    tokens are opened with ``data_keys``, the ring the replicas seal with."""
    admin = await asyncpg.connect(dsn)
    try:
        log_id: str = await admin.fetchval("SELECT value FROM meta WHERE key = 'log_id'")
        rows = await admin.fetch(
            "SELECT id, vaulting_request_id, source, occurred_at, snapshot, card_token, sealed "
            "FROM events ORDER BY id"
        )
    finally:
        await admin.close()
    return Log(
        log_id,
        [
            Event(
                event_id=row["id"],
                source=EventSource(row["source"]),
                occurred_at=row["occurred_at"],
                record=decode_snapshot(
                    row["snapshot"],
                    open_token(
                        data_keys,
                        EVENT_TOKEN,
                        row["vaulting_request_id"],
                        row["card_token"],
                        plaintext=False,
                    ),
                    open_sealed_document(
                        data_keys,
                        EVENT_SEALED,
                        row["vaulting_request_id"],
                        row["sealed"],
                        plaintext=False,
                    ),
                ),
            )
            for row in rows
        ],
    )


def assert_received_exactly(subscriber: Subscriber, log: Log, *, after: int, name: str) -> None:
    """``subscriber`` got every event of ``log`` after ``after`` once, in order, each exactly
    as the log holds it (the server's own mapping of the stored snapshot)."""
    expected = log.after(after)
    received = [decode_resume_token(event.resume_token, log.log_id) for event in subscriber.events]
    assert received == [event.event_id for event in expected], f"{name}: events by id"
    results = [mapping.vaulting_result(event.record) for event in expected]
    assert [event.result for event in subscriber.events] == results, f"{name}: contents"


StartReplica = Callable[..., Awaitable[app.RunningService]]


@pytest.fixture
async def start_replica(replica_env: ServiceEnv, postgres_dsn: str) -> AsyncIterator[StartReplica]:
    """``await start_replica(VAULT_X="...")``: one more replica in this process, on the
    test's database, with the given settings changed. All are stopped at teardown, which then
    checks that none left a connection open."""
    running: list[app.RunningService] = []

    async def start(**changes: str) -> app.RunningService:
        service = await app.start(Settings.from_env({**replica_env, **changes}))
        running.append(service)
        return service

    try:
        yield start
    finally:
        failures = []
        for service in reversed(running):
            try:
                await service.stop()
            except Exception as failure:  # the others must still be stopped
                failures.append(failure)
    if failures:
        raise AssertionError(f"a replica did not stop cleanly: {failures!r}") from failures[0]
    await assert_no_replica_connections(postgres_dsn)


OpenStub = Callable[[int], Stub]


@pytest.fixture
async def open_stub() -> AsyncIterator[OpenStub]:
    """``open_stub(grpc_port)``: a stub on a new loopback channel, closed at teardown."""
    async with contextlib.AsyncExitStack() as channels:

        def open_(port: int) -> Stub:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            channels.push_async_callback(channel.close)
            return pb_grpc.VaultServiceStub(channel)

        yield open_


@dataclass
class StreamEnd:
    """How one StreamResults call ended: on which replica, with which status, after how
    many events in all."""

    replica: int
    code: grpc.StatusCode
    details: str
    events_before: int


RESUME_PAUSE: Final = 0.02


@dataclass
class Subscriber:
    """A StreamResults client that behaves as the contract tells clients to: it keeps the
    newest token it was given (event or checkpoint) and, when a stream ends with UNAVAILABLE,
    opens a new one from that token, on the next replica of ``stubs`` in turn.

    A stream ending with any other status is not resumable: :meth:`run` then fails, naming the
    status. Events are kept as received, so a doubled or skipped event stays visible. A test
    may hold resumes back with ``gate`` (resume only once it is set), to make sure events are
    committed while the subscriber is away.
    """

    stubs: Sequence[Stub]
    token: str = ""
    replica: int = 0
    max_resumes: int = 100
    events: list[pb.ResultEvent] = field(default_factory=list)
    ends: list[StreamEnd] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event | None = None
    failure: Exception | None = None

    def caught_up(self, count: int) -> bool:
        """Whether ``count`` events have arrived; raises the error that stopped :meth:`run`."""
        if self.failure is not None:
            raise self.failure
        return len(self.events) >= count

    async def run(self) -> None:
        try:
            await self._follow()
        except Exception as failure:
            self.failure = failure
            raise

    async def _follow(self) -> None:
        while True:
            call: StreamCall = self.stubs[self.replica].StreamResults(
                pb.StreamResultsRequest(resume_token=self.token)
            )
            try:
                async for message in call:
                    if message.WhichOneof("kind") == "event":
                        self.events.append(message.event)
                        self.token = message.event.resume_token
                    else:
                        self.token = message.checkpoint.resume_token
                        self.opened.set()
            except grpc.aio.AioRpcError as error:
                end = StreamEnd(self.replica, error.code(), error.details() or "", len(self.events))
                self.ends.append(end)
                if end.code is not grpc.StatusCode.UNAVAILABLE:
                    raise AssertionError(
                        f"StreamResults on replica {end.replica} ended with {end.code.name}"
                        f" ({end.details!r}) after {end.events_before} events: not resumable"
                        " (the contract ends a stream with UNAVAILABLE when the client may"
                        " resume from its last token)"
                    ) from error
                assert len(self.ends) <= self.max_resumes, f"{len(self.ends)} resumes"
                self.replica = (self.replica + 1) % len(self.stubs)
                await asyncio.sleep(RESUME_PAUSE)
                if self.gate is not None:
                    await self.gate.wait()
                continue
            raise AssertionError("StreamResults ended without a status")

    def resumes(self) -> list[StreamEnd]:
        return [end for end in self.ends if end.code is grpc.StatusCode.UNAVAILABLE]


@contextlib.asynccontextmanager
async def subscribed(subscribers: Sequence[Subscriber]) -> AsyncIterator[None]:
    """Run the subscribers (each has had its first checkpoint when the block starts) and
    cancel them at the end. A subscriber that failed makes the block raise its error (as does
    :meth:`Subscriber.caught_up` inside it)."""
    tasks = [asyncio.create_task(subscriber.run()) for subscriber in subscribers]
    try:
        await wait_until(
            lambda: all(s.caught_up(0) and s.opened.is_set() for s in subscribers),
            within=10,
            what="every subscriber's first checkpoint",
        )
        yield
        for subscriber in subscribers:
            subscriber.caught_up(0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True)
class ServeProcess:
    """A running ``vault-service serve`` and what its "serving" log line says."""

    process: asyncio.subprocess.Process
    grpc_port: int
    notify_url: str


SpawnServe = Callable[..., Awaitable[ServeProcess]]


@pytest.fixture
async def serve_processes(replica_env: ServiceEnv, postgres_dsn: str) -> AsyncIterator[SpawnServe]:
    """``await spawn(VAULT_X="...")``: a ``vault-service serve`` process on the test's database.

    Its stderr is read all the time (a full pipe would block the process). At teardown every
    process still running gets SIGTERM (SIGKILL if it is not gone within STOP_GRACE seconds)
    and is reaped; the teardown then proves that no ``serve`` child of this process is left,
    that each one stopped by SIGTERM exited 0, and that the database holds no replica
    connection any more.
    """
    processes: list[asyncio.subprocess.Process] = []
    readers: list[asyncio.Task[None]] = []

    async def spawn(**changes: str) -> ServeProcess:
        process = await asyncio.create_subprocess_exec(
            *SERVE_COMMAND,
            env={**os.environ, **replica_env, **changes},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        processes.append(process)
        serving: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        readers.append(asyncio.create_task(_read_log(process, serving)))
        async with asyncio.timeout(30):
            entry = await serving
        grpc_port = int(str(entry["listen"]).split("grpc :")[1].split(",")[0])
        return ServeProcess(process, grpc_port, str(entry["notify_url"]))

    try:
        yield spawn
    finally:
        stopping = [process for process in processes if process.returncode is None]
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        async with asyncio.timeout(5):
            await asyncio.gather(*readers, return_exceptions=True)
    assert not serve_children(), "a vault-service serve child process is still running"
    assert [process.returncode for process in stopping] == [0] * len(stopping), "unclean stop"
    await assert_no_replica_connections(postgres_dsn)


async def _read_log(
    process: asyncio.subprocess.Process, serving: asyncio.Future[dict[str, object]]
) -> None:
    """Read the process's stderr to its end; resolve ``serving`` with the "serving" line."""
    assert process.stderr is not None
    last_lines: deque[str] = deque(maxlen=20)
    while line := await process.stderr.readline():
        text = line.decode(errors="replace").rstrip()
        last_lines.append(text)
        if serving.done():
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(text)
            if isinstance(entry, dict) and entry.get("message") == "vault-service serving":
                serving.set_result(entry)
    if not serving.done():
        serving.set_exception(
            AssertionError("serve exited before serving:\n" + "\n".join(last_lines))
        )


def serve_children() -> list[int]:
    """Pids of this process's children that run ``vault_service serve`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0
        )
        if parent == os.getpid() and b"vault_service" in command and b"serve" in command:
            found.append(int(entry.name))
    return found
