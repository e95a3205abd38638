"""The Antom client over real network paths (issue 15): a gateway certificate from a company
CA, a closed port, and an egress ``CONNECT`` proxy with and without credentials.

Each failure must be logged with its cause from the fixed vocabulary and the peer address,
summarised at ERROR once per interval with a count, and reach the caller as unavailable.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.antom import CLIENT_ID, GatewayTLS, emulator_config
from tests.fixtures.logs import CapturedLog
from tests.fixtures.proxy import ConnectProxy
from tests.fixtures.tls import Authority
from vault_service.antom import causes
from vault_service.antom.client import AntomClient, AntomClientConfig, RetryPolicy
from vault_service.antom.errors import AntomRejectedError, AntomUnavailableError
from vault_service.antom.models import CreateVaultingSessionRequest, InquireVaultingRequest
from vault_service.antom.rsa_keys import PrivateKey
from vault_service.antom.signing import Signer, Verifier
from vault_service.emulator import EmulatorServer
from vault_service.secret import Secret

TWO_FAST_ATTEMPTS = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)


def client(
    gateway: str,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
    *,
    clock: Callable[[], float] | None = None,
    **settings: Any,
) -> AntomClient:
    config = AntomClientConfig(
        gateway=gateway,
        client_id=CLIENT_ID,
        allow_plain_http=True,
        budget=5.0,
        retry=TWO_FAST_ATTEMPTS,
        **settings,
    )
    extra = {} if clock is None else {"clock": clock}
    return AntomClient(config, Signer(merchant_key), Verifier(antom_key.public_key()), **extra)


async def inquire(antom: AntomClient, vaulting_request_id: str = "vr-net") -> None:
    """An inquiry about an id Antom does not know: a signed F answer means the way works."""
    with pytest.raises(AntomRejectedError):
        await antom.inquire_vaulting(
            InquireVaultingRequest(vaulting_request_id=vaulting_request_id)
        )


def client_lines(captured_log: CapturedLog, level: str) -> list[dict[str, Any]]:
    return [
        line
        for line in captured_log.lines()
        if line["logger"].startswith("vault_service.antom") and line["level"] == level
    ]


async def test_an_untrusted_gateway_certificate_is_named_once_per_interval_with_a_count(
    tls_emulator: EmulatorServer,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
    captured_log: CapturedLog,
) -> None:
    """Regression (issue 15): behind a company CA every call failed and the log said only
    "AntomUnavailableError"; now every attempt names the certificate and the peer, and the
    ERROR summary comes once per interval with how many failures it stands for."""
    now = [1000.0]
    async with client(
        tls_emulator.base_url, merchant_key, antom_key, clock=lambda: now[0]
    ) as antom:
        for call in range(4):
            if call == 3:
                now[0] += 61
            with pytest.raises(AntomUnavailableError) as caught:
                await antom.inquire_vaulting(InquireVaultingRequest(vaulting_request_id="vr-ca"))
            assert caught.value.cause == causes.TLS_CERTIFICATE
            assert caught.value.public_message == (
                "Antom could not be reached or answered badly; retry later"
            )
    peer = tls_emulator.base_url.removeprefix("https://")
    attempts = client_lines(captured_log, "info")
    assert [(line["cause"], line["peer"]) for line in attempts] == [
        (causes.TLS_CERTIFICATE, peer)
    ] * 8
    summaries = client_lines(captured_log, "error")
    assert [(line["cause"], line["suppressed"]) for line in summaries] == [
        (causes.TLS_CERTIFICATE, 0),
        (causes.TLS_CERTIFICATE, 5),
    ]
    assert "VAULT_ANTOM_CA_FILE" in summaries[0]["message"]
    assert tls_emulator.state.stats.calls("inquireVaulting") == 0


async def test_the_ca_setting_adds_the_company_ca(
    tls_emulator: EmulatorServer,
    gateway_tls: GatewayTLS,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
) -> None:
    """With the CA bundle set, sessions are created and inquired over TLS."""
    async with client(
        tls_emulator.base_url, merchant_key, antom_key, ca_file=gateway_tls.ca_file
    ) as antom:
        created = await antom.create_vaulting_session(
            CreateVaultingSessionRequest(
                vaulting_request_id="vr-tls",
                vaulting_notification_url="http://127.0.0.1:9/antom/notify",
            )
        )
        assert created.result.result_status == "S"
        await inquire(antom)
    assert tls_emulator.state.stats.calls("createVaultingSession", "vr-tls") == 1


async def test_a_trusted_certificate_for_another_host_is_refused(
    tmp_path: Path,
    gateway_ca: Authority,
    gateway_tls: GatewayTLS,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
) -> None:
    """Hostname verification stays on with a CA added: a certificate from that CA naming
    another host does not vouch for 127.0.0.1."""
    issued = gateway_ca.issue("elsewhere", dns=("open-sea-global.alipay.com",))
    (tmp_path / "other.crt").write_bytes(issued.cert)
    (tmp_path / "other.key").write_bytes(issued.key)
    config = emulator_config(
        antom_key,
        merchant_key,
        tls_cert_file=tmp_path / "other.crt",
        tls_key_file=tmp_path / "other.key",
    )
    async with (
        EmulatorServer(config) as emulator,
        client(emulator.base_url, merchant_key, antom_key, ca_file=gateway_tls.ca_file) as antom,
    ):
        with pytest.raises(AntomUnavailableError) as caught:
            await inquire(antom)
    assert caught.value.cause == causes.TLS_CERTIFICATE


async def test_a_closed_port_is_a_refused_connection(
    merchant_key: PrivateKey, antom_key: PrivateKey, captured_log: CapturedLog
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}", merchant_key, antom_key) as antom:
        with pytest.raises(AntomUnavailableError) as caught:
            await inquire(antom)
    assert caught.value.cause == causes.CONNECTION_REFUSED
    (summary,) = client_lines(captured_log, "error")
    assert summary["peer"] == f"127.0.0.1:{port}"


async def test_calls_go_through_the_proxy(
    tls_emulator: EmulatorServer,
    gateway_tls: GatewayTLS,
    connect_proxy: ConnectProxy,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
) -> None:
    """Every connection to Antom is a CONNECT tunnel through the configured proxy."""
    async with client(
        tls_emulator.base_url,
        merchant_key,
        antom_key,
        ca_file=gateway_tls.ca_file,
        proxy=Secret(connect_proxy.url()),
        max_connections=1,
    ) as antom:
        for number in range(3):
            await inquire(antom, f"vr-proxy-{number}")
    target = tls_emulator.base_url.removeprefix("https://")
    assert connect_proxy.tunnels == [target]
    assert tls_emulator.state.stats.calls("inquireVaulting") == 3


async def test_proxy_credentials_are_sent_and_never_logged(
    tls_emulator: EmulatorServer,
    gateway_tls: GatewayTLS,
    authenticating_proxy: ConnectProxy,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
    captured_log: CapturedLog,
) -> None:
    """With the right credentials calls pass; with a wrong password the cause is the proxy's
    refusal (407); neither the password nor the user name reaches any log line."""
    assert authenticating_proxy.credentials is not None
    user, password = authenticating_proxy.credentials
    good = Secret(authenticating_proxy.url(credentials=(user, password)))
    wrong = Secret(authenticating_proxy.url(credentials=(user, password + "x")))
    base = tls_emulator.base_url
    async with client(
        base, merchant_key, antom_key, ca_file=gateway_tls.ca_file, proxy=good
    ) as antom:
        await inquire(antom)
    async with client(
        base, merchant_key, antom_key, ca_file=gateway_tls.ca_file, proxy=wrong
    ) as antom:
        with pytest.raises(AntomUnavailableError) as caught:
            await inquire(antom)
    assert caught.value.cause == causes.proxy_refused(407)
    assert len(authenticating_proxy.tunnels) == 1
    assert authenticating_proxy.refused == 2
    summary = client_lines(captured_log, "error")[0]
    assert summary["proxy"] == f"127.0.0.1:{authenticating_proxy.port}"
    assert password not in captured_log.text
    assert user not in captured_log.text
    assert repr(good) == "Secret(<hidden>)"


def test_the_gateway_url_carries_no_credentials() -> None:
    with pytest.raises(ValueError, match="no credentials"):
        AntomClientConfig(gateway="https://user:pw@open-sea-global.alipay.com", client_id="5Y")


async def test_the_emulator_refuses_half_a_tls_configuration(
    tmp_path: Path, antom_key: PrivateKey, merchant_key: PrivateKey
) -> None:
    with pytest.raises(ValueError, match="go together"):
        emulator_config(antom_key, merchant_key, tls_cert_file=tmp_path / "a.crt")
