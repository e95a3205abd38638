"""``vault-service emulator``: help, refusals without tracebacks, a real run ended by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.tls import Authority
from vault_service.__main__ import main
from vault_service.antom import Signer, Verifier, read_private_key_file, read_public_key_file
from vault_service.emulator.cli import EPILOG

FLAGS = (
    "--listen",
    "--client-id",
    "--dev-dir",
    "--antom-private-key-file",
    "--merchant-public-key-file",
    "--tls-cert-file",
    "--tls-key-file",
    "--time-scale",
    "--session-ttl",
    "--expiry-spelling",
    "--notification-timeout",
    "--log-level",
    "--latency-ms",
    "--fail-5xx",
    "--unknown-results",
    "--bad-signatures",
    "--drop-notifications",
    "--duplicate-notifications",
)


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vault_service",
        "emulator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_help_documents_every_flag_the_cards_and_the_fault_endpoint():
    code, out, err = await _run("--help")
    assert code == 0, err
    for flag in FLAGS:
        assert flag in out
    for card in ("4111111111111111", "5555555555554444", "4000000000000002", "4000000000003220"):
        assert card in out
    assert "DO_NOT_HONOR" in out
    assert "PUT /emulator/faults" in out
    assert "/emulator/buyer/submit" in out
    assert EPILOG.splitlines()[0] in out


async def test_bad_flag_in_a_subprocess_is_one_line_and_exit_2():
    code, out, err = await _run("--time-scale", "0")
    assert code == 2
    assert out == ""
    assert err.strip().count("\n") == 0
    assert "--time-scale" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--time-scale", "abc"],
        ["--time-scale", "-1"],
        ["--session-ttl", "0"],
        ["--fail-5xx", "-2"],
        ["--drop-notifications", "x"],
        ["--latency-ms", "-1"],
        ["--listen", "nowhere"],
        ["--listen", "127.0.0.1:70000"],
        ["--expiry-spelling", "expiring"],
    ],
)
def test_bad_values_exit_2_with_one_error_line(args: list[str], capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main(["emulator", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert err.startswith("vault-service emulator: error: argument " + args[0])


def test_missing_key_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture):
    missing = tmp_path / "absent.pem"
    assert main(["emulator", "--antom-private-key-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"vault-service emulator: error: {missing}: No such file or directory"
    assert not missing.exists()


@pytest.mark.parametrize("flag", ["--antom-private-key-file", "--merchant-public-key-file"])
def test_unparseable_key_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture, flag: str):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    assert main(["emulator", "--dev-dir", str(tmp_path / "dev"), flag, str(garbage)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(garbage) in err


async def _read_until_listening(stream: asyncio.StreamReader) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(15):
        while not lines or not lines[-1].startswith("listening on "):
            line = await stream.readline()
            assert line, f"the emulator exited early: {lines}"
            lines.append(line.decode().strip())
    return lines


async def _start(dev_dir: Path, *extra: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vault_service",
        "emulator",
        "--listen",
        "127.0.0.1:0",
        "--dev-dir",
        str(dev_dir),
        "--client-id",
        "SANDBOX_CLITEST",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    return process, await _read_until_listening(process.stdout)


async def _stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr
    return stderr.decode()


async def test_run_generates_keys_serves_signed_answers_and_stops_on_sigterm(tmp_path: Path):
    dev = tmp_path / "dev"
    process, lines = await _start(dev)
    try:
        for name in (
            "antom-private-key.pem",
            "antom-public-key.pem",
            "merchant-private-key.pem",
            "merchant-public-key.pem",
        ):
            assert any(str(dev / name) in line and "(generated)" in line for line in lines)
        base_url = lines[-1].removeprefix("listening on ")
        path = "/ams/sandbox/api/v1/vaults/inquireVaulting"
        body = json.dumps({"vaultingRequestId": "vr-cli"}).encode()
        signer = Signer(read_private_key_file(dev / "merchant-private-key.pem"))
        signature = signer.sign("POST", path, "SANDBOX_CLITEST", "1716000000000", body)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                base_url + path,
                data=body,
                headers={
                    "client-id": "SANDBOX_CLITEST",
                    "request-time": "1716000000000",
                    "signature": signature,
                },
            ) as response,
        ):
            answer = await response.read()
            headers = response.headers
        assert json.loads(answer)["result"]["resultCode"] == "ORDER_NOT_EXIST"
        Verifier(read_public_key_file(dev / "antom-public-key.pem")).verify(
            headers["signature"],
            method="POST",
            path=path,
            client_id=headers["client-id"],
            time=headers["response-time"],
            body=answer,
        )
    finally:
        stderr = await _stop(process)
    assert "Traceback" not in stderr
    assert "inquireVaulting vaultingRequestId=vr-cli resultCode=ORDER_NOT_EXIST" in stderr
    assert "stopping" in stderr

    again, lines = await _start(dev)
    await _stop(again)
    assert not [line for line in lines if "(generated)" in line]
    assert any(str(dev / "merchant-private-key.pem") in line for line in lines)


async def test_tls_flags_serve_https_with_the_given_certificate(tmp_path: Path):
    """Guards the emulator's HTTPS as benchmarks and operators start it (``bench.sdk`` serves
    the official SDK, which only speaks HTTPS): a client trusting the certificate's CA gets
    Antom's signed answer over TLS."""
    authority = Authority.create("emulator CLI test CA")
    issued = authority.issue("antom-emulator", ips=("127.0.0.1",))
    cert, key, ca = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt"
    cert.write_bytes(issued.cert)
    key.write_bytes(issued.key)
    ca.write_bytes(authority.issued.cert)
    process, lines = await _start(
        tmp_path / "dev", "--tls-cert-file", str(cert), "--tls-key-file", str(key)
    )
    try:
        base_url = lines[-1].removeprefix("listening on ")
        assert base_url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=ca)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                base_url + "/ams/sandbox/api/v1/vaults/inquireVaulting", data=b"{}", ssl=trusting
            ) as response,
        ):
            answer = json.loads(await response.read())
        assert answer["result"]["resultStatus"] == "F"  # unsigned: refused, over TLS
    finally:
        await _stop(process)


def test_a_tls_certificate_without_its_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture):
    cert = tmp_path / "tls.crt"
    cert.write_bytes(Authority.create("lonely CA").issue("x", ips=("127.0.0.1",)).cert)
    assert main(["emulator", "--dev-dir", str(tmp_path / "dev"), "--tls-cert-file", str(cert)]) == 2
    assert "give both" in capsys.readouterr().err
