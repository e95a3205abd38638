"""``vault-service check-antom`` against the emulator over TLS: every stage passes with the
right settings, and each way a first call fails is named at its stage (issue 15)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ServiceEnv
from tests.e2e.conftest import service_env as service_env  # noqa: PLC0414 - fixture re-export
from tests.fixtures.antom import GatewayTLS
from tests.fixtures.proxy import ConnectProxy
from vault_service import check_antom
from vault_service.__main__ import main
from vault_service.antom.rsa_keys import PrivateKey
from vault_service.config import Settings
from vault_service.emulator import EmulatorServer

ALL_STAGES = ["dns", "tcp", "tls", "request", "signature", "clock"]


@pytest.fixture
def emulator(tls_emulator: EmulatorServer) -> EmulatorServer:
    return tls_emulator


@pytest.fixture
def env(service_env: ServiceEnv, gateway_tls: GatewayTLS) -> ServiceEnv:
    """serve's settings, trusting the emulator's CA."""
    return {**service_env, "VAULT_ANTOM_CA_FILE": str(gateway_tls.ca_file)}


async def run(env: ServiceEnv, clock: check_antom.Clock = time.time) -> list[str]:
    lines: list[str] = []
    passed = await check_antom.check(Settings.from_env(env), clock=clock, report=lines.append)
    assert passed == all(line.startswith("ok") for line in lines)
    return lines


def stages(lines: list[str]) -> list[tuple[str, str]]:
    return [(line[:4].strip(), line[5:].split()[0]) for line in lines]


async def test_every_stage_passes_against_the_emulator(env: ServiceEnv) -> None:
    lines = await run(env)
    assert stages(lines) == [("ok", name) for name in ALL_STAGES]
    tls = lines[2]
    assert "issued by CN=vault-test egress gateway CA" in tls
    assert "ORDER_NOT_EXIST" in lines[3]


async def test_every_stage_passes_through_a_proxy_with_credentials(
    env: ServiceEnv, authenticating_proxy: ConnectProxy
) -> None:
    """The proxy is a stage of its own, and its credentials are sent, never printed."""
    assert authenticating_proxy.credentials is not None
    user, password = authenticating_proxy.credentials
    env["VAULT_ANTOM_PROXY"] = authenticating_proxy.url(credentials=(user, password))
    lines = await run(env)
    assert stages(lines) == [("ok", name) for name in ["dns", "tcp", "proxy", *ALL_STAGES[2:]]]
    assert password not in "\n".join(lines)
    assert user not in "\n".join(lines)
    assert len(authenticating_proxy.tunnels) >= 3  # proxy, tls and the signed inquiry


async def test_a_closed_port_fails_at_tcp(env: ServiceEnv) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env["VAULT_ANTOM_BASE_URL"] = f"https://127.0.0.1:{port}"
    lines = await run(env)
    assert stages(lines) == [("ok", "dns"), ("FAIL", "tcp")]
    assert "connection refused" in lines[-1]


async def test_an_untrusted_certificate_fails_at_tls_and_names_its_issuer(
    env: ServiceEnv,
) -> None:
    del env["VAULT_ANTOM_CA_FILE"]
    lines = await run(env)
    assert stages(lines) == [("ok", "dns"), ("ok", "tcp"), ("FAIL", "tls")]
    assert "tls certificate" in lines[-1]
    assert "CN=vault-test egress gateway CA" in lines[-1]
    assert "VAULT_ANTOM_CA_FILE" in lines[-1]


async def test_a_wrong_merchant_key_fails_at_request(env: ServiceEnv, tmp_path: Path) -> None:
    """Antom refuses our signature (INVALID_SIGNATURE)."""
    wrong = tmp_path / "wrong-merchant-key.pem"
    wrong.write_bytes(PrivateKey.generate().to_pkcs8_pem())
    env["VAULT_MERCHANT_PRIVATE_KEY_FILE"] = str(wrong)
    lines = await run(env)
    assert stages(lines)[-1] == ("FAIL", "request")
    assert "INVALID_SIGNATURE" in lines[-1]
    assert "VAULT_MERCHANT_PRIVATE_KEY_FILE" in lines[-1]


async def test_a_wrong_antom_public_key_fails_at_signature(env: ServiceEnv, tmp_path: Path) -> None:
    """Antom's answer does not verify with the key we hold for it."""
    wrong = tmp_path / "wrong-antom-public-key.pem"
    wrong.write_bytes(PrivateKey.generate().public_key().to_spki_pem())
    env["VAULT_ANTOM_PUBLIC_KEY_FILE"] = str(wrong)
    lines = await run(env)
    assert stages(lines)[-2:] == [("ok", "request"), ("FAIL", "signature")]
    assert "VAULT_ANTOM_PUBLIC_KEY_FILE" in lines[-1]


async def test_a_skewed_clock_fails_at_clock(env: ServiceEnv) -> None:
    lines = await run(env, clock=lambda: time.time() - 600)
    assert stages(lines)[-1] == ("FAIL", "clock")
    assert "behind Antom's" in lines[-1]


async def test_the_command_exits_non_zero_at_the_first_failing_stage(
    env: ServiceEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vault-service check-antom`` reads serve's environment: 0 when every stage passes,
    1 at the first failure (here: the CA is not trusted)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert await asyncio.to_thread(main, ["check-antom"]) == 0
    assert capsys.readouterr().out.count("\nok ") == len(ALL_STAGES) - 1
    monkeypatch.delenv("VAULT_ANTOM_CA_FILE")
    assert await asyncio.to_thread(main, ["check-antom"]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAIL tls")
