"""The in-process server API: base URL, single use, clean stop, bind failures."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.emulator.conftest import ConfigFactory
from vault_service.emulator import EmulatorServer


async def test_base_url_is_known_only_while_running(make_config: ConfigFactory):
    server = EmulatorServer(make_config())
    with pytest.raises(RuntimeError):
        _ = server.base_url
    async with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.base_url + "/emulator/stats") as response,
        ):
            assert response.status == 200
        with pytest.raises(RuntimeError):
            await server.start()
    await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.base_url + "/emulator/stats"),
        ):
            pass


async def test_wildcard_host_gives_a_loopback_base_url(make_config: ConfigFactory):
    async with EmulatorServer(make_config(host="0.0.0.0")) as server:
        assert server.base_url.startswith("http://127.0.0.1:")


async def test_port_in_use_raises_and_leaves_nothing_running(make_config: ConfigFactory):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = EmulatorServer(make_config(port=port))
        with pytest.raises(OSError, match="in use"):
            await server.start()
        await server.stop()


async def test_cli_reports_a_port_in_use_in_one_line(tmp_path: Path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vault_service",
            "emulator",
            "--listen",
            f"127.0.0.1:{port}",
            "--dev-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
    assert process.returncode == 1
    assert stderr.decode().startswith(
        f"vault-service emulator: error: cannot listen on 127.0.0.1:{port}"
    )
    assert "Traceback" not in stderr.decode()
