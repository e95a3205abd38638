"""The service against an Antom that serves TLS with a company CA's certificate, directly and
through an egress proxy that wants credentials (issue 15), wired as ``serve`` wires it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.e2e.conftest import ServiceEnv, StartService
from tests.e2e.test_flow import VISA, next_event
from tests.fixtures.antom import GatewayTLS, buyer_submits
from tests.fixtures.logs import CapturedLog
from tests.fixtures.proxy import ConnectProxy
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import causes
from vault_service.emulator import EmulatorServer


@pytest.fixture
def emulator(tls_emulator: EmulatorServer) -> EmulatorServer:
    """Every service in this module talks to the emulator over TLS."""
    return tls_emulator


@pytest.fixture
async def stub_of(start_service: StartService) -> AsyncIterator[pb_grpc.VaultServiceStub]:
    service = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        yield pb_grpc.VaultServiceStub(channel)


async def test_without_the_ca_every_call_is_unavailable_and_the_log_names_the_certificate(
    service_env: ServiceEnv, start_service: StartService, captured_log: CapturedLog
) -> None:
    """Regression (issue 15): the log said "AntomUnavailableError" and nothing else."""
    service_env["VAULT_ANTOM_TIMEOUT"] = "1"
    service = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        for number in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateSession(
                    pb.CreateSessionRequest(vaulting_request_id=f"tls-no-ca-{number}")
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "certificate" not in (caught.value.details() or "")
            assert _retry_info(caught.value) is not None
    # Every attempt that reached the gateway failed on its certificate (with a 1 s budget,
    # a last attempt may instead run out of time on a loaded machine).
    lines = [line for line in captured_log.lines() if line.get("cause") == causes.TLS_CERTIFICATE]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1, "one ERROR per interval, not one per call"
    assert errors[0]["suppressed"] == 0
    assert errors[0]["peer"] == service_env["VAULT_ANTOM_BASE_URL"].removeprefix("https://")
    assert sum(line["level"] == "info" for line in lines) >= 3


def _retry_info(error: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info
    return None


async def _vault_a_card(
    stub: pb_grpc.VaultServiceStub, emulator: EmulatorServer, gateway_tls: GatewayTLS, rid: str
) -> None:
    """Create a session, the buyer saves a card, the notification arrives, and a refreshed
    GetResult agrees."""
    stream = stub.StreamResults(pb.StreamResultsRequest())
    created = await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id=rid))
    await buyer_submits(emulator, created.session_data, VISA, verify=gateway_tls.client_context())
    event = await next_event(stream)
    stream.cancel()
    assert event.result.status == pb.VAULTING_STATUS_SUCCEEDED
    refreshed = await stub.GetResult(pb.GetResultRequest(vaulting_request_id=rid, refresh=True))
    assert refreshed.result == event.result


async def test_with_the_ca_setting_the_whole_flow_passes(
    service_env: ServiceEnv,
    start_service: StartService,
    emulator: EmulatorServer,
    gateway_tls: GatewayTLS,
) -> None:
    service_env["VAULT_ANTOM_CA_FILE"] = str(gateway_tls.ca_file)
    service = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        await _vault_a_card(pb_grpc.VaultServiceStub(channel), emulator, gateway_tls, "tls-ca")
    assert emulator.state.stats.calls("createVaultingSession", "tls-ca") == 1


async def test_through_a_proxy_with_credentials_none_reaches_the_log(
    service_env: ServiceEnv,
    start_service: StartService,
    emulator: EmulatorServer,
    gateway_tls: GatewayTLS,
    authenticating_proxy: ConnectProxy,
    captured_log: CapturedLog,
) -> None:
    """The flow through an egress proxy that requires Proxy-Authorization; the log, captured
    at DEBUG through the service's own pipeline, never holds the proxy's user or password."""
    assert authenticating_proxy.credentials is not None
    user, password = authenticating_proxy.credentials
    service_env["VAULT_ANTOM_CA_FILE"] = str(gateway_tls.ca_file)
    service_env["VAULT_ANTOM_PROXY"] = authenticating_proxy.url(credentials=(user, password))
    service = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        await _vault_a_card(pb_grpc.VaultServiceStub(channel), emulator, gateway_tls, "tls-px")
    await service.stop()
    target = emulator.base_url.removeprefix("https://")
    assert authenticating_proxy.tunnels
    assert set(authenticating_proxy.tunnels) == {target}
    assert authenticating_proxy.refused == 0
    assert captured_log.lines()
    assert password not in captured_log.text
    assert user not in captured_log.text
