"""The whole service over loopback: CreateSession, idle streams, fan-out, webhook throughput.

Three processes, so that CPU can be attributed honestly on a 2-core machine:

* ``vault-service serve`` (the service under test), started with the same environment variables
  an operator would set, logging at WARNING so that logging stays out of the numbers;
* ``vault-service emulator`` (Antom), which the service calls and which signs and posts the
  notifications of the fan-out phase;
* this process, the load generator: gRPC client, stream holder, webhook poster. It is a
  process of its own anyway (the orchestrator), and keeping the load here avoids shipping
  per-call latencies between processes; its CPU, like the emulator's, is read separately.

CPU is read from ``/proc/<pid>/stat`` (utime + stime of every thread, clock ticks) before and
after each timed window, memory from ``VmRSS`` in ``/proc/<pid>/status``; the machine's total
from ``/proc/stat`` shows what other processes took meanwhile ("cores busy (others)", which
must stay ~0 for a run to count). Everything listens on 127.0.0.1. Run from the repository
root:

    .venv/bin/python bench/service.py [--calls 2000] [--streams 1000] [--burst 5000]
        [--auth {none,tokens,mtls}] [--callers 100]

Phases, on a first service instance: CreateSession at each ``--concurrency`` (unique
``vaulting_request_id`` per call; the standard health Check on the same server is the gRPC
floor); ``--streams`` idle StreamResults; ``--fanout-events`` buyer submissions to the emulator,
each reaching the webhook as Antom's signed notification and every open stream as an event;
as many events again with the streams filtered to other vaulting requests (plus one that
matches); then ``--notifications`` signed notifications POSTed straight to the webhook (each
one changes a session created earlier, so each is one SQLite write transaction), the same
notifications again (Antom's retries: recognised, nothing written), and as many new ones with
``--webhook-streams`` filtered streams open. A second, fresh instance takes the ``--burst`` of
stream opens and one more fan-out.

``--auth`` sets how the bench's gRPC calls identify themselves, the way a calling service
would: ``none`` (no identity source, the loopback-only mode), ``tokens`` (a callers file of
``--callers`` entries, every call carrying the bearer token of one of them) or ``mtls`` (TLS with
a client CA; the bench presents a client certificate). Either way the health service is made
non-public (``VAULT_PUBLIC_HEALTH=0``), so that the health Check floor pays the same
authentication as the vault methods. Tokens, keys and certificates are made for the run and
written only to its temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import itertools
import json
import os
import platform
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import aiohttp
import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

import vault_service
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom.keys import read_private_key_file
from vault_service.antom.signing import Signer
from vault_service.config import DEFAULT_NOTIFY_PATH
from vault_service.store.data_keys import add_data_key
from vault_service.webhook import ACKNOWLEDGEMENT

CLIENT_ID = "BENCH0000000001"
SOURCE_ROOT = Path(vault_service.__file__).resolve().parent.parent
COMMAND = (sys.executable, "-m", "vault_service")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    # Every channel gets its own connection (by default equal channels share one).
    ("grpc.use_local_subchannel_pool", 1),
]
CARD = {
    "cardNo": "4111111111111111",
    "expiryMonth": "12",
    "expiryYear": "39",
    "cvv": "737",
    "cardholderName": "Bench Buyer",
}
STOP_TIMEOUT = 10.0
AUTH_MODES = ("none", "tokens", "mtls")
CLIENT_NAME = "bench-client"

Metadata = tuple[tuple[str, str], ...]


# --- processes ---------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together while chosen, so never equal)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (dead threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """Busy time of all cores together (everything but idle and iowait), in seconds."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Meter:
    """CPU seconds of the three processes, and of the whole machine, read together."""

    pids: dict[str, int]

    def take(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return used | {"machine": machine_cpu_seconds()}

    @staticmethod
    def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


@contextlib.asynccontextmanager
async def child(
    args: list[str], env: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``vault-service ARGS``; SIGTERM at the end, SIGKILL if it is not gone in time."""
    # The children run the very vault_service this process imported, whatever the cwd.
    env = env | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    }
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, *args, env=env, stdout=sink, stderr=sink
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)


async def wait_for_port(port: int, process: asyncio.subprocess.Process, deadline: float) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline or process.returncode is not None:
                raise RuntimeError(f"nothing listens on {port}") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


@dataclass
class Emulator:
    pid: int
    url: str
    dev_dir: Path


@contextlib.asynccontextmanager
async def emulator(workdir: Path) -> AsyncIterator[Emulator]:
    [port] = free_ports(1)
    dev_dir = workdir / "dev"
    args = ["emulator", "--listen", f"127.0.0.1:{port}", "--client-id", CLIENT_ID]
    args += ["--dev-dir", str(dev_dir), "--log-level", "WARNING"]
    async with child(args, dict(os.environ), workdir / "emulator.log") as process:
        await wait_for_port(port, process, time.monotonic() + 30)
        yield Emulator(process.pid, f"http://127.0.0.1:{port}", dev_dir)


# --- how the bench identifies itself ----------------------------------------------------


@dataclass(frozen=True)
class Access:
    """What the service is told about its callers (``env``) and what the bench's gRPC calls
    carry: channel credentials (TLS, mTLS) and call metadata (a bearer token)."""

    mode: str
    env: dict[str, str] = field(default_factory=dict)
    credentials: grpc.ChannelCredentials | None = None
    metadata: Metadata = ()
    callers: int = 0

    def channel(self, port: int) -> grpc.aio.Channel:
        target = f"127.0.0.1:{port}"
        if self.credentials is None:
            return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(target, self.credentials, options=CHANNEL_OPTIONS)

    def describe(self) -> str:
        if self.mode == "tokens":
            return f"bearer tokens, callers file of {self.callers:,} entries"
        if self.mode == "mtls":
            return "mTLS (TLS with a client CA, the bench presents a client certificate)"
        return "none (no identity source: every call is the anonymous caller)"


def tokens_access(workdir: Path, callers: int) -> Access:
    """A callers file of ``callers`` entries (distinct names, one token each); the bench
    uses the last entry's token (every entry is compared anyway)."""
    tokens = [secrets.token_urlsafe(32) for _ in range(callers)]
    entries = [
        {
            "name": f"bench-caller-{n}",
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "scopes": ["vault"],
        }
        for n, token in enumerate(tokens)
    ]
    callers_file = workdir / "callers.json"
    callers_file.write_text(json.dumps({"callers": entries}))
    return Access(
        "tokens",
        {
            "VAULT_AUTH_TOKENS_FILE": str(callers_file),
            "VAULT_PUBLIC_HEALTH": "0",
        },
        metadata=(("authorization", f"Bearer {tokens[-1]}"),),
        callers=callers,
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def mtls_access(workdir: Path) -> Access:
    """A throw-away PKI (P-256, like the tests'): a server CA and a client CA, the service's
    certificate for 127.0.0.1 and the bench's client certificate."""
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("sca", "cca", "srv", "cli")}
    server_ca = _certificate(
        "bench server CA", keys["sca"], "bench server CA", keys["sca"], ca=True
    )
    client_ca = _certificate(
        "bench client CA", keys["cca"], "bench client CA", keys["cca"], ca=True
    )
    loopback = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _certificate(
        "vault-service", keys["srv"], "bench server CA", keys["sca"], sans=loopback
    )
    client = _certificate(CLIENT_NAME, keys["cli"], "bench client CA", keys["cca"])
    files = {
        "VAULT_GRPC_TLS_CERT_FILE": ("tls.crt", server),
        "VAULT_GRPC_TLS_KEY_FILE": ("tls.key", _pem_key(keys["srv"])),
        "VAULT_GRPC_TLS_CLIENT_CA_FILE": ("client-ca.crt", client_ca),
    }
    env = {"VAULT_PUBLIC_HEALTH": "0"}
    for setting, (name, content) in files.items():
        (workdir / name).write_bytes(content)
        env[setting] = str(workdir / name)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server_ca,
        private_key=_pem_key(keys["cli"]),
        certificate_chain=client,
    )
    return Access("mtls", env, credentials)


def access_for(args: argparse.Namespace, workdir: Path) -> Access:
    if args.auth == "tokens":
        return tokens_access(workdir, args.callers)
    if args.auth == "mtls":
        return mtls_access(workdir)
    return Access("none")


@dataclass
class Service:
    pid: int
    grpc_port: int
    http_port: int
    database: Path
    log: Path
    access: Access


def service_env(workdir: Path, emu: Emulator, name: str, access: Access) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAULT_")}
    grpc_port, http_port = free_ports(2)
    data_key_file = workdir / "data-keys.json"
    if not data_key_file.exists():
        add_data_key(data_key_file)
    return (
        env
        | {
            "VAULT_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
            "VAULT_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "VAULT_DATABASE_URL": f"sqlite:///{workdir / f'{name}.db'}",
            "VAULT_DATA_KEY_FILE": str(data_key_file),
            "VAULT_AUTO_MIGRATE": "1",
            "VAULT_ANTOM_BASE_URL": emu.url,
            "VAULT_ANTOM_CLIENT_ID": CLIENT_ID,
            "VAULT_MERCHANT_PRIVATE_KEY_FILE": str(emu.dev_dir / "merchant-private-key.pem"),
            "VAULT_ANTOM_PUBLIC_KEY_FILE": str(emu.dev_dir / "antom-public-key.pem"),
            "VAULT_LOG_LEVEL": "WARNING",
            # Keep the reconciler's inquiries of sessions without a result out of the run.
            "VAULT_RECONCILE_AFTER": "3600",
            "VAULT_SHUTDOWN_GRACE": "2",
        }
        | access.env
    )


@contextlib.asynccontextmanager
async def service(
    workdir: Path, emu: Emulator, name: str, access: Access
) -> AsyncIterator[Service]:
    env = service_env(workdir, emu, name, access)
    grpc_port = int(env["VAULT_GRPC_LISTEN"].rpartition(":")[2])
    http_port = int(env["VAULT_HTTP_LISTEN"].rpartition(":")[2])
    log = workdir / f"{name}.log"
    async with child(["serve"], env, log) as process:
        deadline = time.monotonic() + 30
        try:
            await wait_for_port(http_port, process, deadline)
            await wait_for_port(grpc_port, process, deadline)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"vault-service serve did not start: {exc}\n{tail}") from None
        async with access.channel(grpc_port) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(
                health_pb2.HealthCheckRequest(), timeout=10, metadata=access.metadata
            )
            if answer.status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError("the service is not SERVING")
        database = Path(env["VAULT_DATABASE_URL"].removeprefix("sqlite:///"))
        yield Service(process.pid, grpc_port, http_port, database, log, access)


def channel(svc: Service) -> grpc.aio.Channel:
    return svc.access.channel(svc.grpc_port)


# --- statistics and output ---------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def add_row(rows: list[str], *cells: object) -> None:
    rows.append(f"| {' | '.join(str(cell) for cell in cells)} |")
    print(rows[-1], flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


@dataclass
class Report:
    sections: dict[str, list[str]] = field(default_factory=dict)

    def table(self, title: str, header: list[str]) -> list[str]:
        rows = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
        self.sections[title] = rows
        return rows

    def render(self) -> str:
        return "\n\n".join(
            f"{title}\n\n" + "\n".join(rows) for title, rows in self.sections.items()
        )


# --- 1. unary throughput -----------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float]
    wall: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall

    def cpu_us(self, name: str) -> str:
        return f"{self.cpu[name] / len(self.latencies) * 1e6:,.0f}"

    def busy(self) -> str:
        """Cores kept busy by the three processes together."""
        return f"{self.ours() / self.wall:.2f}"

    def others(self) -> str:
        """Cores kept busy by anything else on the machine: should be ~0 for a clean run."""
        return f"{max(0.0, self.cpu['machine'] - self.ours()) / self.wall:.2f}"

    def ours(self) -> float:
        return sum(used for name, used in self.cpu.items() if name != "machine")


async def drive(
    meter: Meter, calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]
) -> Run:
    counter = iter(range(calls))
    latencies: list[float] = []

    async def worker() -> None:
        for n in counter:
            start = time.perf_counter()
            await call(n)
            latencies.append(time.perf_counter() - start)

    before, wall = meter.take(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall
    return Run(latencies, wall, Meter.since(before, meter.take()))


async def unary_phase(
    args: argparse.Namespace, svc: Service, meter: Meter, report: Report
) -> list[str]:
    """CreateSession (and the health Check floor) at each concurrency; returns the ids made."""
    rows = report.table(
        "### CreateSession (unary, through Antom) and the gRPC floor",
        [
            "call",
            "concurrency",
            "calls",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "service CPU µs/call",
            "emulator CPU µs/call",
            "bench CPU µs/call",
            "cores busy (all 3)",
            "cores busy (others)",
        ],
    )
    created: list[str] = []
    metadata = svc.access.metadata
    async with channel(svc) as chan:
        stub = pb_grpc.VaultServiceStub(chan)
        health = health_pb2_grpc.HealthStub(chan)
        check = health_pb2.HealthCheckRequest(service="vault.v1.VaultService")

        def create(prefix: str) -> Callable[[int], Awaitable[object]]:
            async def call(n: int) -> None:
                request_id = f"{prefix}-{n}"
                answer = await stub.CreateSession(
                    pb.CreateSessionRequest(vaulting_request_id=request_id),
                    timeout=10,
                    metadata=metadata,
                )
                if not answer.created:
                    raise RuntimeError(f"{request_id} was not created")
                created.append(request_id)

            return call

        async def health_check(_: int) -> None:
            await health.Check(check, timeout=10, metadata=metadata)

        await drive(meter, min(300, args.calls), 16, create("warm"))
        await drive(meter, min(300, args.calls), 16, health_check)
        for concurrency in args.concurrency:
            for name, call in (
                ("Health/Check (same server)", health_check),
                ("CreateSession", create(f"c{concurrency}")),
            ):
                run = await drive(meter, args.calls, concurrency, call)
                add_row(
                    rows,
                    name,
                    concurrency,
                    len(run.latencies),
                    f"{run.rate:,.0f}",
                    ms(pct(run.latencies, 50)),
                    ms(pct(run.latencies, 99)),
                    run.cpu_us("service"),
                    run.cpu_us("emulator"),
                    run.cpu_us("bench"),
                    run.busy(),
                    run.others(),
                )
    return created


# --- 2. idle streams and 3. fan-out ------------------------------------------------------


@dataclass
class Streams:
    """StreamResults calls held open by this process, each read by its own task."""

    stubs: list[pb_grpc.VaultServiceStub]
    open_timeout: float
    metadata: Metadata = ()
    calls: list[grpc.aio.UnaryStreamCall] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    first_message: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)
    arrivals: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    event_times: dict[str, float] = field(default_factory=dict)
    complete: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    expect: dict[str, int] = field(default_factory=dict)
    closing: bool = False

    async def open(self, requests: list[pb.StreamResultsRequest]) -> float:
        """Open one stream per request at once, over the stubs in turn; seconds until every
        one answered."""
        start = time.perf_counter()
        stubs = itertools.cycle(self.stubs)
        await asyncio.gather(*(self._open_one(next(stubs), request) for request in requests))
        return time.perf_counter() - start

    async def _open_one(
        self, stub: pb_grpc.VaultServiceStub, request: pb.StreamResultsRequest
    ) -> None:
        start = time.perf_counter()
        call = stub.StreamResults(request, metadata=self.metadata)
        try:
            first = await asyncio.wait_for(call.read(), self.open_timeout)
        except grpc.aio.AioRpcError as exc:
            self.refused[exc.code().name] += 1
            return
        except TimeoutError:
            call.cancel()
            self.refused["no first message in time"] += 1
            return
        if first is grpc.aio.EOF or not first.HasField("checkpoint"):
            call.cancel()
            self.refused["first message not a checkpoint"] += 1
            return
        self.first_message.append(time.perf_counter() - start)
        self.calls.append(call)
        self.readers.append(asyncio.create_task(self._follow(call)))

    async def _follow(self, call: grpc.aio.UnaryStreamCall) -> None:
        try:
            while True:
                message = await call.read()
                arrived, wall = time.monotonic(), time.time()
                if message is grpc.aio.EOF:
                    self.ended["EOF"] += 1
                    return
                if message.HasField("event"):
                    request_id = message.event.result.vaulting_request_id
                    stamp = message.event.event_time
                    self.event_times[request_id] = stamp.seconds + stamp.nanos / 1e9
                    arrived_at = self.arrivals[request_id]
                    arrived_at.append((arrived, wall))
                    if len(arrived_at) == self.expect.get(request_id, len(self.calls)):
                        self.complete[request_id].set()
        except grpc.aio.AioRpcError as exc:
            if not (self.closing and exc.code() is grpc.StatusCode.CANCELLED):
                self.ended[exc.code().name] += 1

    async def close(self) -> None:
        self.closing = True
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.calls.clear()
        self.readers.clear()


async def settle(seconds: float = 1.0) -> None:
    await asyncio.sleep(seconds)


async def idle_streams(
    label: str, count: int, streams: Streams, svc: Service, meter: Meter, rows: list[str]
) -> None:
    """Open ``count`` streams at once and keep them; report what they cost while idle."""
    await settle()
    rss_before = rss_kib(svc.pid)
    seconds = await streams.open([pb.StreamResultsRequest()] * count)
    await settle()
    rss_after = rss_kib(svc.pid)
    before, wall = meter.take(), time.perf_counter()
    await settle(2.0)
    idle = Meter.since(before, meter.take())["service"] / (time.perf_counter() - wall)
    opened = len(streams.calls)
    refused = ", ".join(f"{n} {code}" for code, n in streams.refused.items()) or "none"
    add_row(
        rows,
        label,
        f"{opened:,} / {count:,}",
        refused,
        f"{seconds:.2f}",
        ms(pct(streams.first_message, 99)) if streams.first_message else "-",
        f"{rss_before / 1024:,.1f} → {rss_after / 1024:,.1f}",
        f"{(rss_after - rss_before) / max(opened, 1):,.1f}",
        f"{idle * 100:.1f} %",
    )


async def fan_out(
    label: str,
    events: int,
    streams: Streams,
    stub: pb_grpc.VaultServiceStub,
    emu: Emulator,
    http: aiohttp.ClientSession,
    meter: Meter,
    rows: list[str],
    metadata: Metadata,
) -> None:
    """Each event: a new session, the buyer submits a card to the emulator, Antom's signed
    notification reaches the webhook, every open stream gets the event."""
    from_submit: list[float] = []
    from_recorded: list[float] = []
    cpu: list[dict[str, float]] = []
    windows: list[Run] = []
    for n in range(events):
        request_id = f"fanout-{label}-{n}-{os.getpid()}"
        created = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id=request_id),
            timeout=10,
            metadata=metadata,
        )
        await settle(0.5)
        before = meter.take()
        submitted = time.monotonic()
        async with http.post(
            f"{emu.url}/emulator/buyer/submit",
            json={"sessionData": created.session_data, **CARD},
        ) as answer:
            if answer.status != 200:
                raise RuntimeError(f"buyer submit: HTTP {answer.status} {await answer.text()}")
        await asyncio.wait_for(streams.complete[request_id].wait(), 60)
        used = Meter.since(before, meter.take())
        cpu.append(used)
        windows.append(Run([], time.monotonic() - submitted, used))
        recorded = streams.event_times[request_id]
        for arrived, wall in streams.arrivals[request_id]:
            from_submit.append(arrived - submitted)
            from_recorded.append(wall - recorded)
    delivered = len(from_submit)
    service_cpu = sum(used["service"] for used in cpu)
    bench_cpu = sum(used["bench"] for used in cpu)
    add_row(
        rows,
        label,
        f"{events} x {delivered // events:,}",
        ms(pct(from_submit, 50)),
        ms(pct(from_submit, 99)),
        ms(max(from_submit)),
        ms(pct(from_recorded, 50)),
        ms(pct(from_recorded, 99)),
        ms(max(from_recorded)),
        f"{service_cpu / events * 1e3:,.0f} ms",
        f"{service_cpu / delivered * 1e6:,.0f}",
        f"{bench_cpu / events * 1e3:,.0f} ms",
        max(window.others() for window in windows),
    )


STREAM_HEADER = [
    "streams",
    "opened (first checkpoint)",
    "refused",
    "seconds to open all",
    "p99 ms to first checkpoint",
    "service RSS MiB before → after",
    "RSS KiB / idle stream",
    "service CPU while idle",
]
FANOUT_HEADER = [
    "open streams",
    "events x streams",
    "p50 ms from submit",
    "p99 ms from submit",
    "max ms from submit",
    "p50 ms from recorded",
    "p99 ms from recorded",
    "max ms from recorded",
    "service CPU / event",
    "service CPU µs / delivery",
    "bench CPU / event",
    "cores busy (others, worst event)",
]
FILTERED_HEADER = [
    "streams filtered to other ids",
    "events",
    "p50 ms submit → matching stream",
    "max ms submit → matching stream",
    "service CPU / event",
    "service CPU µs / non-matching stream",
]


async def quiet(pid: int, limit: float = 10.0) -> None:
    """Until the process used no CPU for 0.2 s (two 10 ms clock ticks cannot hide in it)."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now


async def filtered_wakeups(
    count: int,
    events: int,
    stubs: list[pb_grpc.VaultServiceStub],
    args: argparse.Namespace,
    svc: Service,
    emu: Emulator,
    http: aiohttp.ClientSession,
    meter: Meter,
    rows: list[str],
) -> None:
    """``count`` streams that filter on ids which never get an event, plus one stream on the
    event's own id: what one event costs when it concerns a single stream."""
    streams = Streams(stubs, args.open_timeout, svc.access.metadata)
    await streams.open(
        [pb.StreamResultsRequest(vaulting_request_ids=[f"else-{n}"]) for n in range(count)]
    )
    if len(streams.calls) != count:
        raise RuntimeError(f"filtered streams refused: {dict(streams.refused)}")
    latencies: list[float] = []
    service_cpu = 0.0
    for n in range(events):
        request_id = f"filtered-{n}-{os.getpid()}"
        created = await stubs[0].CreateSession(
            pb.CreateSessionRequest(vaulting_request_id=request_id),
            timeout=10,
            metadata=svc.access.metadata,
        )
        await streams.open([pb.StreamResultsRequest(vaulting_request_ids=[request_id])])
        streams.expect[request_id] = 1
        await settle(0.5)
        before = meter.take()
        submitted = time.monotonic()
        async with http.post(
            f"{emu.url}/emulator/buyer/submit",
            json={"sessionData": created.session_data, **CARD},
        ) as answer:
            if answer.status != 200:
                raise RuntimeError(f"buyer submit: HTTP {answer.status} {await answer.text()}")
        await asyncio.wait_for(streams.complete[request_id].wait(), 60)
        latencies.append(streams.arrivals[request_id][0][0] - submitted)
        await quiet(svc.pid)
        service_cpu += Meter.since(before, meter.take())["service"]
    await streams.close()
    add_row(
        rows,
        f"{count:,}",
        events,
        ms(pct(latencies, 50)),
        ms(max(latencies)),
        f"{service_cpu / events * 1e3:,.0f} ms",
        f"{service_cpu / events / count * 1e6:,.0f}",
    )


# --- 4. webhook --------------------------------------------------------------------------


def notification(request_id: str, now: float) -> bytes:
    """A successful notifyVaulting body shaped like the emulator's (and Antom's samples)."""
    card = {
        "cardToken": f"ALIPAY{request_id:0>40}",
        "brand": "VISA",
        "maskedCardNo": "************1111",
        "bin": "411111",
        "lastFour": "1111",
        "expiryMonth": "12",
        "expiryYear": "39",
        "funding": "CREDIT",
        "issuingCountry": "US",
        "issuerName": "EMULATOR BANK",
        "cardholderName": {"fullName": "Bench Buyer"},
        "fingerprint": "0" * 64,
    }
    document = {
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
        "vaultingRequestId": request_id,
        "paymentMethodDetail": {"paymentMethodType": "CARD", "card": card},
        "vaultingCreateTime": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def signed_notifications(signer: Signer, ids: list[str]) -> list[tuple[dict[str, str], bytes]]:
    """Signed before the timed window, so the bench's RSA work is not part of it."""
    signed = []
    for request_id in ids:
        body = notification(request_id, time.time())
        request_time = str(int(time.time() * 1000))
        headers = {
            "client-id": CLIENT_ID,
            "request-time": request_time,
            "signature": signer.sign("POST", DEFAULT_NOTIFY_PATH, CLIENT_ID, request_time, body),
            "Content-Type": "application/json; charset=UTF-8",
        }
        signed.append((headers, body))
    return signed


def notification_events(database: Path) -> int:
    uri = f"{database.absolute().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        count: int = connection.execute(
            "SELECT count(*) FROM events WHERE source = 'NOTIFICATION'"
        ).fetchone()[0]
    return count


async def webhook_phase(
    args: argparse.Namespace,
    svc: Service,
    emu: Emulator,
    ids: list[str],
    stubs: list[pb_grpc.VaultServiceStub],
    meter: Meter,
    report: Report,
) -> None:
    """``--notifications`` for sessions without a result, the same again (Antom's retries),
    and, unless ``--webhook-streams`` is 0, as many again for other sessions while that many
    streams filtered to other vaulting requests are open (no stream gets an event)."""
    rows = report.table(
        "### Webhook: signed notifyVaulting POSTs",
        [
            "notifications",
            "streams open",
            "concurrency",
            "acknowledged",
            "notifications/s",
            "p50 ms",
            "p99 ms",
            "service CPU µs/notification",
            "bench CPU µs/notification",
            "new events stored",
            "SQLite write commits/s",
            "cores busy (others)",
        ],
    )
    count = args.notifications
    signer = Signer(read_private_key_file(emu.dev_dir / "antom-private-key.pem"))
    first = signed_notifications(signer, ids[:count])
    runs = [
        ("first delivery (state changes)", first, 0),
        ("replayed (already final)", first, 0),
    ]
    if args.webhook_streams:
        others = signed_notifications(signer, ids[count : 2 * count])
        runs.append(("first delivery (state changes)", others, args.webhook_streams))
    url = f"http://127.0.0.1:{svc.http_port}{DEFAULT_NOTIFY_PATH}"
    connector = aiohttp.TCPConnector(limit=args.notify_concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:
        for label, signed, open_streams in runs:
            acknowledged = 0

            async def post(n: int, signed: list[tuple[dict[str, str], bytes]] = signed) -> None:
                nonlocal acknowledged
                headers, body = signed[n]
                async with http.post(url, data=body, headers=headers) as answer:
                    if answer.status == 200 and await answer.read() == ACKNOWLEDGEMENT:
                        acknowledged += 1

            streams = Streams(stubs, args.open_timeout, svc.access.metadata)
            await streams.open(
                [
                    pb.StreamResultsRequest(vaulting_request_ids=[f"else-{n}"])
                    for n in range(open_streams)
                ]
            )
            if len(streams.calls) != open_streams:
                raise RuntimeError(f"streams refused: {dict(streams.refused)}")
            await settle()
            stored_before = notification_events(svc.database)
            run = await drive(meter, len(signed), args.notify_concurrency, post)
            stored = notification_events(svc.database) - stored_before
            await streams.close()
            add_row(
                rows,
                label,
                f"{open_streams:,}",
                args.notify_concurrency,
                f"{acknowledged:,} / {len(signed):,}",
                f"{run.rate:,.0f}",
                ms(pct(run.latencies, 50)),
                ms(pct(run.latencies, 99)),
                run.cpu_us("service"),
                run.cpu_us("bench"),
                f"{stored:,}",
                f"{stored / run.wall:,.0f}",
                run.others(),
            )


# --- the run -----------------------------------------------------------------------------


def versions() -> str:
    packages = ", ".join(
        f"{name} {version(name)}" for name in ("grpcio", "protobuf", "aiohttp", "cryptography")
    )
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"{packages}"
    )


def source() -> str:
    """Which code was measured: the checkout and commit of the vault_service imported here."""
    git = ["git", "-C", str(SOURCE_ROOT)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--", "vault_service"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"vault_service from {SOURCE_ROOT} (not a git checkout)"
    dirty = " with uncommitted changes" if changes else ""
    return f"vault_service from {SOURCE_ROOT} at {commit}{dirty}"


def service_complaints(svc: Service) -> list[str]:
    return svc.log.read_text(errors="replace").splitlines()[:10]


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vault-bench-") as tmp:
        yield Path(tmp)


@contextlib.asynccontextmanager
async def stubs_for(svc: Service, channels: int) -> AsyncIterator[list[pb_grpc.VaultServiceStub]]:
    """One stub per client connection."""
    chans = [channel(svc) for _ in range(channels)]
    try:
        yield [pb_grpc.VaultServiceStub(chan) for chan in chans]
    finally:
        for chan in chans:
            await chan.close()


async def bench(args: argparse.Namespace, tmp: Path, access: Access, report: Report) -> None:
    # SIGTERM (a timeout, a CI runner) cancels the run like Ctrl-C does, so that the child
    # processes are still stopped on the way out.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    complaints: list[str] = []
    async with emulator(tmp) as emu, aiohttp.ClientSession(trust_env=False) as http:
        async with service(tmp, emu, "first", access) as svc:
            meter = Meter({"service": svc.pid, "emulator": emu.pid, "bench": os.getpid()})
            created = await unary_phase(args, svc, meter, report)
            stream_rows = report.table("### Idle StreamResults", STREAM_HEADER)
            fanout_rows = report.table("### Fan-out: one event to every open stream", FANOUT_HEADER)
            filtered_rows = report.table(
                "### Wake-ups: one event, streams filtered to other vaulting requests",
                FILTERED_HEADER,
            )
            async with stubs_for(svc, args.stream_channels) as stubs:
                streams = Streams(stubs, args.open_timeout, svc.access.metadata)
                label = f"{args.streams:,}"
                await idle_streams(label, args.streams, streams, svc, meter, stream_rows)
                await fan_out(
                    label,
                    args.fanout_events,
                    streams,
                    stubs[0],
                    emu,
                    http,
                    meter,
                    fanout_rows,
                    access.metadata,
                )
                await streams.close()
                if streams.ended:
                    complaints.append(f"streams ended by the server: {dict(streams.ended)}")
                await filtered_wakeups(
                    args.streams,
                    args.fanout_events,
                    stubs,
                    args,
                    svc,
                    emu,
                    http,
                    meter,
                    filtered_rows,
                )
                await webhook_phase(args, svc, emu, created, stubs, meter, report)
            complaints += service_complaints(svc)
        async with service(tmp, emu, "burst", access) as svc:
            meter = Meter({"service": svc.pid, "emulator": emu.pid, "bench": os.getpid()})
            async with stubs_for(svc, args.stream_channels) as stubs:
                streams = Streams(stubs, args.open_timeout, svc.access.metadata)
                label = f"{args.burst:,} (one burst, fresh process)"
                await idle_streams(label, args.burst, streams, svc, meter, stream_rows)
                if streams.calls and args.burst_fanout_events:
                    await fan_out(
                        f"{len(streams.calls):,}",
                        args.burst_fanout_events,
                        streams,
                        stubs[0],
                        emu,
                        http,
                        meter,
                        fanout_rows,
                        access.metadata,
                    )
                await streams.close()
                if streams.ended:
                    complaints.append(f"streams ended by the server: {dict(streams.ended)}")
            complaints += service_complaints(svc)
    for line in complaints:
        print(f"service: {line}", file=sys.stderr)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=positive, default=2000, help="unary calls per level")
    parser.add_argument("--concurrency", type=positive, nargs="+", default=[1, 16])
    parser.add_argument("--streams", type=positive, default=1000, help="idle streams, phase 2")
    parser.add_argument("--burst", type=positive, default=5000, help="stream opens in one burst")
    parser.add_argument("--stream-channels", type=positive, default=1, help="client connections")
    parser.add_argument("--open-timeout", type=float, default=60.0, help="s to first message")
    parser.add_argument("--fanout-events", type=positive, default=5)
    parser.add_argument("--burst-fanout-events", type=int, default=1)
    parser.add_argument("--notifications", type=positive, default=2000)
    parser.add_argument("--notify-concurrency", type=positive, default=16)
    parser.add_argument(
        "--auth", choices=AUTH_MODES, default="none", help="how the bench's gRPC calls identify"
    )
    parser.add_argument(
        "--callers", type=positive, default=100, help="entries in the callers file (--auth tokens)"
    )
    parser.add_argument(
        "--webhook-streams", type=int, default=1000, help="filtered streams open, last webhook run"
    )
    args = parser.parse_args()
    needed = args.notifications * (2 if args.webhook_streams else 1)
    if needed > min(300, args.calls) + args.calls * len(args.concurrency):
        parser.error("more notifications than the unary phase creates sessions: raise --calls")
    print(versions(), flush=True)
    print(source(), flush=True)
    report = Report()
    started = time.perf_counter()
    with workdir() as tmp:
        access = access_for(args, tmp)
        print(f"caller authentication: {access.describe()}", flush=True)
        asyncio.run(bench(args, tmp, access, report))
    print(f"\n{report.render()}\n\nfinished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
