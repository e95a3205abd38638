"""The product end to end: CreateSession over gRPC, the buyer in Antom's front end, Antom's
signed notification to our webhook, the result on StreamResults and GetResult."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.e2e.conftest import ServiceEnv, StartService
from tests.fixtures.antom import buyer_submits
from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.emulator import EmulatorServer

VISA = "4111111111111111"
DECLINED = "4000000000000002"
THREE_DS = "4000000000003220"


async def next_event(
    stream: grpc.aio.UnaryStreamCall[pb.StreamResultsRequest, pb.StreamResultsResponse],
) -> pb.ResultEvent:
    """The next event on a stream, skipping checkpoints."""
    async with asyncio.timeout(10):
        while True:
            message = await stream.read()
            assert message is not grpc.aio.EOF
            if message.WhichOneof("kind") == "event":
                return message.event


async def test_a_card_is_vaulted_and_the_result_streamed(
    stub: pb_grpc.VaultServiceStub, emulator: EmulatorServer, service: app.RunningService
) -> None:
    """The whole flow, with the notify URL the service gave Antom pointing at its webhook."""
    stream = stub.StreamResults(pb.StreamResultsRequest())
    first = await stream.read()
    assert first.WhichOneof("kind") == "checkpoint"
    created = await stub.CreateSession(
        pb.CreateSessionRequest(vaulting_request_id="e2e-visa", labels={"order": "o-1"})
    )
    assert created.created
    await buyer_submits(emulator, created.session_data, VISA)

    event = await next_event(stream)
    assert event.source == pb.EVENT_SOURCE_NOTIFICATION
    assert event.result.vaulting_request_id == "e2e-visa"
    assert event.result.status == pb.VAULTING_STATUS_SUCCEEDED
    assert event.result.card.brand == "VISA"
    assert event.result.card.card_token.startswith("ALIPAY")
    assert dict(event.result.labels) == {"order": "o-1"}
    stream.cancel()

    stored = await stub.GetResult(pb.GetResultRequest(vaulting_request_id="e2e-visa"))
    assert stored.result == event.result
    attempts = emulator.state.notifier.attempts("e2e-visa")
    assert [a.outcome for a in attempts] == ["acknowledged"]
    assert attempts[0].url == service.notify_url


async def test_declined_and_3ds_cards_end_in_their_final_states(
    stub: pb_grpc.VaultServiceStub, emulator: EmulatorServer
) -> None:
    """A decline is FAILED with Antom's code; a 3-D Secure card is notified once, when final."""
    stream = stub.StreamResults(pb.StreamResultsRequest())
    for rid, card in (("e2e-declined", DECLINED), ("e2e-3ds", THREE_DS)):
        created = await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id=rid))
        await buyer_submits(emulator, created.session_data, card)
    seen = {}
    for _ in range(2):
        event = await next_event(stream)
        seen[event.result.vaulting_request_id] = event.result
    stream.cancel()
    assert seen["e2e-declined"].status == pb.VAULTING_STATUS_FAILED
    assert seen["e2e-declined"].antom_result.result_code == "DO_NOT_HONOR"
    assert seen["e2e-3ds"].status == pb.VAULTING_STATUS_SUCCEEDED


async def test_results_and_streams_survive_a_restart(
    start_service: StartService, emulator: EmulatorServer
) -> None:
    """Stop the service, start it again on the same database: results are still there and a
    client resuming from its last token gets exactly the events it missed."""
    first = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        stream = stub.StreamResults(pb.StreamResultsRequest())
        created = await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="rs-1"))
        await buyer_submits(emulator, created.session_data, VISA)
        token = (await next_event(stream)).resume_token
        stream.cancel()
    await first.stop()

    second = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{second.grpc_port}") as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        kept = await stub.GetResult(pb.GetResultRequest(vaulting_request_id="rs-1"))
        assert kept.result.status == pb.VAULTING_STATUS_SUCCEEDED
        created = await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="rs-2"))
        await buyer_submits(emulator, created.session_data, DECLINED)
        resumed = stub.StreamResults(pb.StreamResultsRequest(resume_token=token))
        missed = await next_event(resumed)
        assert missed.result.vaulting_request_id == "rs-2"
        resumed.cancel()


async def test_unknown_resume_token_is_refused(stub: pb_grpc.VaultServiceStub) -> None:
    """A token the log never issued is an error, never a silent "from now"."""
    stream = stub.StreamResults(pb.StreamResultsRequest(resume_token="v1.bogus"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stop_releases_both_ports(
    start_service: StartService, service_env: ServiceEnv
) -> None:
    """A stopped service frees its ports and its database: a new one starts on the same
    ports at once (a rolling restart on a fixed port depends on it)."""
    first = await start_service()
    await first.stop()
    service_env["VAULT_GRPC_LISTEN"] = f"127.0.0.1:{first.grpc_port}"
    service_env["VAULT_HTTP_LISTEN"] = f"127.0.0.1:{first.http_port}"
    again = await start_service()
    assert (again.grpc_port, again.http_port) == (first.grpc_port, first.http_port)
