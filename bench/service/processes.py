"""The two processes under measurement: ``vault-service emulator`` and ``vault-service serve``.

Both are started as an operator would start them (the service configured only through the
environment), run the very ``vault_service`` this process imported, and are stopped on the way
out whatever happens (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import vault_service
from tests.fixtures.tls import Authority
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.store import add_data_key

from .access import Access

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

CLIENT_ID = "BENCH0000000001"
SOURCE_ROOT = Path(vault_service.__file__).resolve().parent.parent
COMMAND = (sys.executable, "-m", "vault_service")
STOP_TIMEOUT = 10.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together while chosen, so never equal)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@contextlib.asynccontextmanager
async def child(
    args: list[str], env: dict[str, str], log: Path, command: tuple[str, ...] = COMMAND
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``vault-service ARGS`` (or another ``command`` of this checkout, such as a bench's
    own server); SIGTERM at the end, SIGKILL if it is not gone in time."""
    # The children run the very vault_service this process imported, whatever the cwd.
    env = env | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    }
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, *args, env=env, stdout=sink, stderr=sink
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


@dataclass(frozen=True)
class EmulatorTLS:
    """A certificate for 127.0.0.1 (and ``localhost``) the emulator serves HTTPS with, and the
    CA file its clients trust; made by the test suite's PKI (``tests.fixtures.tls``) into the
    run's temporary directory."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    @classmethod
    def make(cls, directory: Path) -> EmulatorTLS:
        authority = Authority.create("bench Antom CA")
        issued = authority.issue("antom-emulator", dns=("localhost",), ips=("127.0.0.1",))
        tls = cls(directory / "antom.crt", directory / "antom.key", directory / "antom-ca.crt")
        tls.cert_file.write_bytes(issued.cert)
        tls.key_file.write_bytes(issued.key)
        tls.ca_file.write_bytes(authority.issued.cert)
        return tls


@dataclass
class Emulator:
    pid: int
    url: str
    dev_dir: Path
    tls: EmulatorTLS | None = None


@contextlib.asynccontextmanager
async def emulator(
    workdir: Path, *, tls: EmulatorTLS | None = None, port: int | None = None
) -> AsyncIterator[Emulator]:
    """The emulator on ``port`` (a free one by default), serving HTTPS when given ``tls``."""
    if port is None:
        [port] = free_ports(1)
    dev_dir = workdir / "dev"
    args = ["emulator", "--listen", f"127.0.0.1:{port}", "--client-id", CLIENT_ID]
    args += ["--dev-dir", str(dev_dir), "--log-level", "WARNING"]
    if tls is not None:
        args += ["--tls-cert-file", str(tls.cert_file), "--tls-key-file", str(tls.key_file)]
    async with child(args, dict(os.environ), workdir / "emulator.log") as process:
        await wait_for_port(port, process, time.monotonic() + 30)
        scheme = "http" if tls is None else "https"
        yield Emulator(process.pid, f"{scheme}://127.0.0.1:{port}", dev_dir, tls)


@dataclass
class Service:
    pid: int
    grpc_port: int
    http_port: int
    database: Path
    log: Path
    access: Access

    def channel(self) -> grpc.aio.Channel:
        return self.access.channel(self.grpc_port)

    def complaints(self) -> list[str]:
        """The first lines the service logged (at WARNING and above): a clean run has none."""
        return self.log.read_text(errors="replace").splitlines()[:10]


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
            "VAULT_ADMIN_LISTEN": "127.0.0.1:0",
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
        | ({} if emu.tls is None else {"VAULT_ANTOM_CA_FILE": str(emu.tls.ca_file)})
        | access.env
    )


def health_stub(channel: grpc.aio.Channel) -> Any:
    """The standard health service's client (its type stubs declare no methods on it)."""
    return health_pb2_grpc.HealthStub(channel)


@contextlib.asynccontextmanager
async def service(
    workdir: Path, emu: Emulator, name: str, access: Access, **settings: str
) -> AsyncIterator[Service]:
    """``vault-service serve`` on a fresh SQLite file, or as ``settings`` (environment
    variables: ``VAULT_DATABASE_URL`` for PostgreSQL, say) change it."""
    env = service_env(workdir, emu, name, access) | settings
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
            answer = await health_stub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10, metadata=access.metadata
            )
            if answer.status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError("the service is not SERVING")
        database = Path(env["VAULT_DATABASE_URL"].removeprefix("sqlite:///"))
        yield Service(process.pid, grpc_port, http_port, database, log, access)


@contextlib.asynccontextmanager
async def stubs_for(svc: Service, channels: int) -> AsyncIterator[list[VaultServiceAsyncStub]]:
    """One stub per client connection."""
    chans = [svc.channel() for _ in range(channels)]
    try:
        yield [pb_grpc.VaultServiceStub(chan) for chan in chans]
    finally:
        for chan in chans:
            await chan.close()


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vault-bench-") as tmp:
        yield Path(tmp)
