"""The Python client as a calling team gets it: ``pip install ./clients/python`` into a fresh
virtualenv (no service, no dev dependencies), and the service as a real process to call.

The virtualenv is built once per test session, with the machine's pip configuration (its
package index and local wheels), like a team's CI would; nothing is skipped when that fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import venv
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from tests.e2e.conftest import ServiceEnv
from tests.e2e.conftest import service as service  # noqa: PLC0414 - fixture re-export
from tests.e2e.conftest import service_env as service_env  # noqa: PLC0414 - fixture re-export
from tests.e2e.conftest import start_service as start_service  # noqa: PLC0414 - re-export

ROOT: Final = Path(__file__).resolve().parents[3]
CLIENT_DIR: Final = ROOT / "clients" / "python"
BUILD_LEFTOVERS: Final = ("build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache")
SCENARIO: Final = Path(__file__).with_name("scenario.py")
SERVE_COMMAND: Final = (sys.executable, "-m", "vault_service", "serve")
SERVING_LINE: Final = '"message": "vault-service serving"'
START_WITHIN: Final = 30.0
STOP_WITHIN: Final = 10.0


@pytest.fixture(scope="session")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtualenv holding only the installed client."""
    home = tmp_path_factory.mktemp("client-venv")
    # A copy of the package, so that the build leaves nothing behind in the checkout.
    source = home / "source"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    venv.EnvBuilder(with_pip=True).create(home / "venv")
    python = home / "venv" / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", source],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, f"pip install ./clients/python failed:\n{installed.stderr}"
    return python


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServeProcess:
    """``vault-service serve`` on fixed ports, so that a restart is found at the same address
    (and Antom's notifications at the same URL). Its log goes to a file."""

    env: ServiceEnv
    log: Path
    process: asyncio.subprocess.Process | None = None
    exits: list[int] = field(default_factory=list)

    async def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                *SERVE_COMMAND,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=sink,
            )
        async with asyncio.timeout(START_WITHIN):
            while SERVING_LINE not in self.log.read_text(errors="replace")[offset:]:
                assert self.process.returncode is None, self.log.read_text()[offset:]
                await asyncio.sleep(0.05)

    async def stop(self, how: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(how)
        async with asyncio.timeout(STOP_WITHIN):
            code = await self.process.wait()
        self.exits.append(code)
        return code

    async def restart(self, how: signal.Signals) -> int:
        code = await self.stop(how)
        await self.start()
        return code


@pytest.fixture
async def serve_process(
    service_env: ServiceEnv, tmp_path: Path
) -> AsyncIterator[tuple[ServeProcess, str]]:
    """A started ``vault-service serve`` and its gRPC target; stopped (SIGTERM) at teardown."""
    grpc_port, http_port = free_port(), free_port()
    env = {
        **service_env,
        "VAULT_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "VAULT_HTTP_LISTEN": f"127.0.0.1:{http_port}",
    }
    server = ServeProcess({**os.environ, **env}, tmp_path / "serve.log")
    await server.start()
    try:
        yield server, f"127.0.0.1:{grpc_port}"
    finally:
        if server.process is not None and server.process.returncode is None:
            await server.stop(signal.SIGTERM)


@dataclass
class Scenario:
    """Runs ``scenario.py`` (a consumer program on the public API only) in the fresh venv."""

    python: Path
    target: str
    running: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            str(self.python),
            "-I",  # isolated: nothing of this checkout on sys.path, only the venv's packages
            str(SCENARIO),
            self.target,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.running.append(process)
        return process

    async def run(self, *args: str, within: float = 60.0) -> list[str]:
        """Run to the end; its stdout lines (it must exit 0)."""
        process = await self.spawn(*args)
        async with asyncio.timeout(within):
            out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out.decode().splitlines()


@pytest.fixture
async def scenarios(client_python: Path) -> AsyncIterator[Callable[[str], Scenario]]:
    """``scenarios(target)``: runs of the consumer program against ``target``; any still
    running at teardown are killed and reaped."""
    made: list[Scenario] = []

    def make(target: str) -> Scenario:
        made.append(Scenario(client_python, target))
        return made[-1]

    yield make
    for scenario in made:
        for process in scenario.running:
            if process.returncode is None:
                process.kill()
            await process.wait()
