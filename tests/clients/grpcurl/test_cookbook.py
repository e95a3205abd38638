"""clients/grpcurl/README.md cannot rot: every shell block in it runs, in order, against live
servers (TLS with bearer tokens, mTLS, and plaintext for local development) and the emulator.

Each ```sh block must follow a marker comment naming the server it runs against, optionally
with the exit status it ends with and a text its output must contain:

    <!-- cookbook: token exit=67 expect="fieldViolations" -->

Blocks run with bash (errexit, pipefail) in one shared working directory, so a later block
reads the files an earlier one wrote (a saved cursor, a created session). The variables the
cookbook documents are set: VAULT (the server's address), CA, CERT, KEY, TOKEN, EMULATOR;
``grpcurl`` is the one the dev dependencies install.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.e2e.conftest import ServiceEnv, StartService
from tests.e2e.conftest import service_env as service_env  # noqa: PLC0414 - fixture re-export
from tests.e2e.conftest import start_service as start_service  # noqa: PLC0414 - re-export
from tests.fixtures.callers import TokenFileEditor
from tests.fixtures.tls import Authority, ServerFiles
from vault_service.emulator import EmulatorServer

COOKBOOK: Final = Path(__file__).resolve().parents[3] / "clients" / "grpcurl" / "README.md"
BLOCK: Final = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)
MARKER: Final = re.compile(r"<!-- cookbook: (?P<args>[^>]*?) -->\n*\Z")
MODES: Final = ("token", "mtls", "plaintext")
BLOCK_WITHIN: Final = 30.0


@dataclass(frozen=True)
class Step:
    mode: str
    script: str
    exit: int
    expect: str | None
    line: int


def steps(text: str) -> list[Step]:
    """Every ```sh block of ``text`` with its marker; a block without one fails the test (a
    command the test would not run could rot)."""
    found = []
    for block in BLOCK.finditer(text):
        line = text.count("\n", 0, block.start()) + 1
        marker = MARKER.search(text[: block.start()])
        assert marker is not None, f"README.md:{line}: ```sh block without a cookbook marker"
        mode, *options = shlex.split(marker["args"])
        assert mode in MODES, f"README.md:{line}: unknown server {mode!r}"
        settings = dict(option.split("=", 1) for option in options)
        found.append(
            Step(mode, block[1], int(settings.get("exit", "0")), settings.get("expect"), line)
        )
    return found


def test_the_marker_reader_finds_every_block() -> None:
    text = '<!-- cookbook: token exit=67 expect="a b" -->\n```sh\ngrpcurl x\n```\n'
    assert steps(text) == [Step("token", "grpcurl x\n", 67, "a b", 2)]
    with pytest.raises(AssertionError, match="without a cookbook marker"):
        steps("text\n```sh\ngrpcurl x\n```\n")


async def test_every_cookbook_command_runs_green(
    service_env: ServiceEnv,
    start_service: StartService,
    token_file: TokenFileEditor,
    server_tls_files: ServerFiles,
    server_ca: Authority,
    client_ca: Authority,
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    """Runs the whole cookbook; each block must end with its marker's exit status (0 unless
    stated) and print what its marker expects."""
    token = token_file.add("gateway", "vault")
    token_file.entries.append({"name": "gateway-mtls", "scopes": ["vault"]})
    token_file.write()
    tls = {
        "VAULT_GRPC_TLS_CERT_FILE": str(server_tls_files.cert_file),
        "VAULT_GRPC_TLS_KEY_FILE": str(server_tls_files.key_file),
        "VAULT_AUTH_TOKENS_FILE": str(token_file.path),
    }
    mtls = {**tls, "VAULT_GRPC_TLS_CLIENT_CA_FILE": str(server_tls_files.client_ca_file)}
    addresses = {}
    for mode, changes in {"token": tls, "mtls": mtls, "plaintext": {}}.items():
        for name in mtls:
            service_env.pop(name, None)
        service_env.update(VAULT_DATABASE_URL=f"sqlite:///{tmp_path / mode}.db", **changes)
        addresses[mode] = f"127.0.0.1:{(await start_service()).grpc_port}"

    pki = tmp_path / "pki"
    pki.mkdir()
    issued = client_ca.issue("gateway-mtls")
    (pki / "ca.crt").write_bytes(server_ca.issued.cert)
    (pki / "client.crt").write_bytes(issued.cert)
    (pki / "client.key").write_bytes(issued.key)
    work = tmp_path / "work"
    work.mkdir()
    base = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(work),
        "CA": str(pki / "ca.crt"),
        "CERT": str(pki / "client.crt"),
        "KEY": str(pki / "client.key"),
        "TOKEN": token,
        "EMULATOR": emulator.base_url,
    }

    cookbook = steps(COOKBOOK.read_text())
    assert {step.mode for step in cookbook} == set(MODES)
    for step in cookbook:
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            step.script,
            cwd=work,
            env={**base, "VAULT": addresses[step.mode]},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(BLOCK_WITHIN):
            out, _ = await process.communicate()
        output = out.decode()
        where = f"README.md:{step.line} ({step.mode}):\n{step.script}\n--- output:\n{output}"
        assert process.returncode == step.exit, where
        if step.expect is not None:
            assert step.expect in output, where
