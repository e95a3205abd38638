"""``GET /metrics`` on the admin port after a scripted flow: every metric, with the counts the
flow must have produced, read back through Prometheus' own exposition parser."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ServiceEnv, StartService
from tests.e2e.test_flow import VISA, next_event
from tests.fixtures.antom import buyer_submits
from tests.grpc_api.support import eventually
from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.emulator import EmulatorServer
from vault_service.metrics import Metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

CREATE = "/vault.v1.VaultService/CreateSession"
GET = "/vault.v1.VaultService/GetResult"
STREAM = "/vault.v1.VaultService/StreamResults"


async def scrape(service: app.RunningService) -> tuple[set[str], Samples]:
    """The metric family names and every sample of the admin port's exposition."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{service.admin_port}/metrics") as answer,
    ):
        assert answer.status == 200
        assert answer.content_type == "text/plain"
        text = await answer.text()
    families = list(text_string_to_metric_families(text))
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return {family.name for family in families}, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = labels.items()
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= dict(ls).items())


def expected_families() -> set[str]:
    """Every family a service's registry declares, named as the text format shows it (an
    info family ``x`` is the gauge ``x_info`` there)."""
    return {
        f"{metric.name}_info" if metric.type == "info" else metric.name
        for metric in Metrics().registry.collect()
    }


async def webhook_post(service: app.RunningService, headers: Mapping[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(service.notify_url, data=b"{}", headers=dict(headers)) as answer,
    ):
        return answer.status


@pytest.fixture
async def metered(service_env: ServiceEnv, start_service: StartService) -> app.RunningService:
    """A service whose reconciler looks at a session three seconds after its creation: at
    one, a loaded CI machine's buyer step could outlast it, and an early inquiry (still
    PROCESSING) changed the counts the test expects."""
    service_env["VAULT_RECONCILE_AFTER"] = "3"
    service_env["VAULT_RECONCILE_INTERVAL"] = "0.05"
    return await start_service()


async def test_metrics_after_a_scripted_flow(
    metered: app.RunningService, emulator: EmulatorServer
) -> None:
    """Two sessions (one learned by notification, one by the reconciler's inquiry, its
    notifications dropped, Antom answering its first try 503), a refused CreateSession, a
    GetResult, a refused webhook request and one stream: each metric counts exactly that."""
    service = metered
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        stream = stub.StreamResults(pb.StreamResultsRequest())
        assert (await stream.read()).WhichOneof("kind") == "checkpoint"

        notified = await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="m-1"))
        await buyer_submits(emulator, notified.session_data, VISA)
        assert (await next_event(stream)).source == pb.EVENT_SOURCE_NOTIFICATION
        await emulator.state.notifier.wait_idle()

        emulator.state.faults.update({"drop_notifications": -1})
        inquired = await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="m-2"))
        await buyer_submits(emulator, inquired.session_data, VISA)
        emulator.state.faults.update({"http_5xx": 1})  # the reconciler's first try
        assert (await next_event(stream)).source == pb.EVENT_SOURCE_INQUIRY

        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id=""))
        await stub.GetResult(pb.GetResultRequest(vaulting_request_id="m-1"))
        assert await webhook_post(service, {"Content-Type": "application/json"}) == 401

        families, samples = await scrape(service)
        assert value(samples, "vault_streams_open") == 1
        stream.cancel()
        await eventually(lambda: service.servicer.active_streams == 0, within=5)
    families, samples = await scrape(service)

    assert expected_families() <= families
    started, handled = "vault_grpc_server_started_total", "vault_grpc_server_handled_total"
    assert value(samples, started, grpc_method=CREATE, grpc_type="unary") == 3
    assert value(samples, handled, grpc_method=CREATE, grpc_type="unary", grpc_code="OK") == 2
    invalid = {"grpc_method": CREATE, "grpc_type": "unary", "grpc_code": "INVALID_ARGUMENT"}
    assert value(samples, handled, **invalid) == 1
    assert value(samples, handled, grpc_method=GET, grpc_type="unary", grpc_code="OK") == 1
    assert value(samples, started, grpc_method=STREAM, grpc_type="server_stream") == 1
    cancelled = {"grpc_method": STREAM, "grpc_type": "server_stream", "grpc_code": "CANCELLED"}
    assert value(samples, handled, **cancelled) == 1
    seconds = "vault_grpc_server_handling_seconds_count"
    assert value(samples, seconds, grpc_method=CREATE, grpc_type="unary") == 3

    antom = "vault_antom_requests_total"
    create_ok = {"operation": "createVaultingSession", "result_status": "S"}
    assert value(samples, antom, **create_ok, result_code="SUCCESS") == 2
    inquire = {"operation": "inquireVaulting"}
    assert value(samples, antom, **inquire, result_status="S", result_code="SUCCESS") == 1
    assert value(samples, antom, **inquire, result_status="none", result_code="UNAVAILABLE") == 1
    antom_seconds = "vault_antom_request_seconds_count"
    assert value(samples, antom_seconds, operation="createVaultingSession") == 2
    assert value(samples, antom_seconds, operation="inquireVaulting") == 2

    webhook = "vault_webhook_requests_total"
    assert value(samples, webhook, outcome="acknowledged", reason="stored") == 1
    refused = {"outcome": "rejected", "reason": "client-id missing or not ours"}
    assert value(samples, webhook, **refused) == 1
    assert total(samples, webhook) == 2

    assert value(samples, "vault_streams_open") == 0
    assert value(samples, "vault_events_appended_total", source="NOTIFICATION") == 1
    assert value(samples, "vault_events_appended_total", source="INQUIRY") == 1
    assert value(samples, "vault_event_delivery_lag_seconds_count") == 2
    assert value(samples, "vault_reconciler_inquiries_total", outcome="answered") == 1
    assert ("vault_reconciler_due_records", frozenset()) in samples
    assert total(samples, "vault_build_info") == 1
    assert not total(samples, "vault_db_pool_connections")  # SQLite has no pool
