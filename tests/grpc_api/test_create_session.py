"""CreateSession over a real gRPC channel, against the emulator and SQLite."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc import StatusCode

from tests.fixtures.antom import CLIENT_ID
from tests.fixtures.stack import VaultingFactory
from tests.grpc_api.support import (
    CALLER_METADATA_KEY,
    CREATE,
    bad_request,
    error_info,
    eventually,
    retry_info,
    serving,
)
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.antom import AntomClient, CreateVaultingSessionRequest
from vault_service.emulator import EmulatorServer
from vault_service.grpc_api.servicer import VaultServicer
from vault_service.service import ResultStreams
from vault_service.service.vaulting import CreatedSession, VaultingService, remaining

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub


def request(vaulting_request_id: str, **fields: Any) -> pb.CreateSessionRequest:
    return pb.CreateSessionRequest(vaulting_request_id=vaulting_request_id, **fields)


async def test_happy_path_returns_the_session_antom_created(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer
) -> None:
    """A first CreateSession calls Antom once and hands back its session, marked created."""
    answer = await stub.CreateSession(
        request(
            "vr-happy",
            redirect_url="https://shop.example/done",
            merchant_region="SG",
            is_3ds_authentication=True,
            labels={"order": "o-1"},
        ),
        timeout=10,
    )
    assert answer.vaulting_request_id == "vr-happy"
    assert answer.created
    assert answer.vaulting_session_id
    assert answer.session_data
    assert answer.normal_url.startswith(emulator.base_url)
    assert answer.expire_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC)
    assert emulator.state.stats.calls(CREATE, "vr-happy") == 1


async def test_replay_returns_the_stored_session_without_calling_antom(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer
) -> None:
    """The same id with the same parameters (defaults applied, labels in any order) is an
    idempotent replay: same session, ``created`` false, still one Antom call."""
    first = await stub.CreateSession(
        request("vr-replay", payment_method_type="CARD", labels={"a": "1", "b": "2"})
    )
    again = await stub.CreateSession(request("vr-replay", labels={"b": "2", "a": "1"}))
    assert again.vaulting_session_id == first.vaulting_session_id
    assert again.session_data == first.session_data
    assert first.created
    assert not again.created
    assert emulator.state.stats.calls(CREATE, "vr-replay") == 1


async def test_same_id_with_other_parameters_or_caller_is_already_exists(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer
) -> None:
    """An id is bound to its first parameters and its caller: ALREADY_EXISTS otherwise, and
    Antom is not asked again."""
    await stub.CreateSession(request("vr-bound"))
    with pytest.raises(grpc.aio.AioRpcError) as other_params:
        await stub.CreateSession(request("vr-bound", merchant_region="US"))
    assert other_params.value.code() is StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as other_caller:
        await stub.CreateSession(request("vr-bound"), metadata=((CALLER_METADATA_KEY, "billing"),))
    assert other_caller.value.code() is StatusCode.ALREADY_EXISTS
    assert emulator.state.stats.calls(CREATE, "vr-bound") == 1


async def test_concurrent_duplicates_make_one_antom_call(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer
) -> None:
    """Twenty identical CreateSession calls in flight at once: one Antom call, one session,
    exactly one answer says it created it."""
    answers = await asyncio.gather(*(stub.CreateSession(request("vr-dup")) for _ in range(20)))
    assert emulator.state.stats.calls(CREATE, "vr-dup") == 1
    assert len({a.vaulting_session_id for a in answers}) == 1
    assert sum(a.created for a in answers) == 1


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"vaulting_request_id": ""}, {"vaulting_request_id"}),
        ({"vaulting_request_id": "x" * 65}, {"vaulting_request_id"}),
        ({"vaulting_request_id": "has space"}, {"vaulting_request_id"}),
        ({"vaulting_request_id": "vr-é"}, {"vaulting_request_id"}),
        ({"payment_method_type": "WALLET"}, {"payment_method_type"}),
        ({"redirect_url": "/relative"}, {"redirect_url"}),
        ({"redirect_url": "ftp://shop.example/"}, {"redirect_url"}),
        ({"redirect_url": "https://shop.example/" + "x" * 2048}, {"redirect_url"}),
        ({"merchant_region": "sg"}, {"merchant_region"}),
        ({"labels": {f"k{n}": "v" for n in range(17)}}, {"labels"}),
        ({"labels": {"": "v"}}, {"labels"}),
        ({"labels": {"k" * 64: "v"}}, {"labels"}),
        ({"labels": {"k": "v" * 257}}, {"labels"}),
        ({"env": pb.Env(time_zone_offset=721)}, {"env.time_zone_offset"}),
        ({"env": pb.Env(device_token_id="t" * 65)}, {"env.device_token_id"}),
        ({"env": pb.Env(client_ip="not-an-ip")}, {"env.client_ip"}),
        ({"env": pb.Env(color_depth=7)}, {"env.color_depth"}),
        ({"env": pb.Env(terminal_type=pb.TerminalType.ValueType(99))}, {"env.terminal_type"}),
        (
            {"vaulting_request_id": "", "merchant_region": "sgp", "env": pb.Env(screen_width=-1)},
            {"vaulting_request_id", "merchant_region", "env.screen_width"},
        ),
    ],
)
async def test_invalid_requests_are_refused_with_every_violation(
    stub: VaultServiceAsyncStub,
    emulator: EmulatorServer,
    fields: dict[str, Any],
    violations: set[str],
) -> None:
    """Each invalid field gives INVALID_ARGUMENT with a BadRequest naming its proto path (all
    of them at once), and nothing reaches Antom."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateSession(request(**({"vaulting_request_id": "vr-invalid"} | fields)))
    assert refused.value.code() is StatusCode.INVALID_ARGUMENT
    assert set(bad_request(refused.value)) == violations
    assert emulator.state.stats.calls(CREATE) == 0


async def test_antom_definitive_failure_is_failed_precondition_with_its_code(
    stub: VaultServiceAsyncStub, antom_client: AntomClient, emulator: EmulatorServer
) -> None:
    """Antom's F answer (here: the id was already used at Antom with other parameters) is
    FAILED_PRECONDITION with ErrorInfo{domain antom, reason <resultCode>}."""
    await antom_client.create_vaulting_session(
        CreateVaultingSessionRequest(
            vaulting_request_id="vr-taken",
            vaulting_notification_url="https://elsewhere.example/notify",
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateSession(request("vr-taken"))
    assert refused.value.code() is StatusCode.FAILED_PRECONDITION
    info = error_info(refused.value)
    assert info is not None
    assert (info.domain, info.reason) == ("antom", "REPEAT_REQ_INCONSISTENT")
    assert info.metadata["result_status"] == "F"
    assert info.metadata["result_message"]


async def test_antom_param_illegal_is_invalid_argument(
    make_vaulting: VaultingFactory, streams: ResultStreams
) -> None:
    """PARAM_ILLEGAL (here provoked by a notify URL Antom rejects) is INVALID_ARGUMENT, still
    with Antom's code in ErrorInfo."""
    async with serving(VaultServicer(make_vaulting("not-a-url"), streams)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateSession(request("vr-param"))
    assert refused.value.code() is StatusCode.INVALID_ARGUMENT
    info = error_info(refused.value)
    assert info is not None
    assert (info.domain, info.reason) == ("antom", "PARAM_ILLEGAL")


async def test_antom_down_is_unavailable_with_retry_info(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer
) -> None:
    """Antom answering 5xx to every attempt: UNAVAILABLE with RetryInfo, so the caller retries
    with the same id. (A 5 s deadline: with 0.5 s, a loaded machine could reach the caller's
    deadline before the server answered, and the caller saw DEADLINE_EXCEEDED. That the budget
    running out is UNAVAILABLE too: ``test_a_budget_run_out_on_a_slow_antom_is_unavailable``.)"""
    emulator.state.faults.update({"http_5xx": -1})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateSession(request("vr-down"), timeout=5)
    assert refused.value.code() is StatusCode.UNAVAILABLE
    info = retry_info(refused.value)
    assert info is not None
    assert info.retry_delay.seconds == 1


async def test_antom_unknown_result_is_unavailable_with_antom_code(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer
) -> None:
    """Antom's U answers outlasting the client's attempts: UNAVAILABLE, RetryInfo and Antom's
    code (the caller's deadline is generous for the reason given above)."""
    emulator.state.faults.update({"unknown_result": -1})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateSession(request("vr-unknown"), timeout=5)
    assert refused.value.code() is StatusCode.UNAVAILABLE
    assert retry_info(refused.value) is not None
    info = error_info(refused.value)
    assert info is not None
    assert (info.domain, info.reason) == ("antom", "UNKNOWN_EXCEPTION")


async def test_bad_antom_signature_is_unavailable_and_says_so(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer
) -> None:
    """A badly signed Antom answer is our upstream misbehaving: UNAVAILABLE with ErrorInfo
    ANTOM_SIGNATURE_INVALID, and the message does not carry the signature."""
    emulator.state.faults.update({"bad_signature": -1})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateSession(request("vr-forged"), timeout=5)
    assert refused.value.code() is StatusCode.UNAVAILABLE
    info = error_info(refused.value)
    assert info is not None
    assert info.reason == "ANTOM_SIGNATURE_INVALID"
    assert "signature=" not in (refused.value.details() or "").lower()
    assert CLIENT_ID not in (refused.value.details() or "")


async def test_the_caller_deadline_bounds_the_antom_call(
    stub: VaultServiceAsyncStub, emulator: EmulatorServer, servicer: VaultServicer
) -> None:
    """With Antom slower (5 s) than the caller's deadline (0.3 s), the call ends by the
    deadline and the server stops working on it then, not when Antom would have answered.
    (Antom took 1 s before, which left a loaded machine too little room to tell the two.)"""
    emulator.state.faults.update({"latency_ms": 5000})
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await stub.CreateSession(request("vr-slow"), timeout=0.3)
    assert ended.value.code() in {StatusCode.DEADLINE_EXCEEDED, StatusCode.UNAVAILABLE}
    assert time.monotonic() - started < 2.5
    await eventually(lambda: servicer.active_calls == 0, within=2)


async def test_a_budget_run_out_on_a_slow_antom_is_unavailable(
    vaulting: VaultingService, streams: ResultStreams, emulator: EmulatorServer
) -> None:
    """Antom slower (5 s) than the caller's deadline (3 s) less the margin (1 s): the server
    gives up on Antom when its budget runs out and answers UNAVAILABLE with RetryInfo inside
    the caller's deadline, so the caller learns to retry rather than meeting a bare
    DEADLINE_EXCEEDED."""
    emulator.state.faults.update({"latency_ms": 5000})
    async with serving(VaultServicer(vaulting, streams, deadline_margin=1.0)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateSession(request("vr-budget-out"), timeout=3)
    assert refused.value.code() is StatusCode.UNAVAILABLE
    assert retry_info(refused.value) is not None


async def test_no_time_left_is_deadline_exceeded_without_calling_antom(
    vaulting: VaultingService, streams: ResultStreams, emulator: EmulatorServer
) -> None:
    """When the caller's remaining time is within the server's margin, the server answers
    DEADLINE_EXCEEDED at once instead of starting an Antom call it cannot finish."""
    servicer = VaultServicer(vaulting, streams, deadline_margin=30.0)
    async with serving(servicer) as stub:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await stub.CreateSession(request("vr-late"), timeout=10)
        answered_after = time.monotonic() - started
    assert ended.value.code() is StatusCode.DEADLINE_EXCEEDED
    assert answered_after < 5  # at once: not at the caller's deadline, 10 s away
    assert emulator.state.stats.calls(CREATE) == 0


async def test_the_antom_budget_is_the_callers_remaining_time_less_the_margin(
    vaulting: VaultingService, streams: ResultStreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The use case receives the caller's deadline minus the margin as its Antom deadline,
    and none (the Antom client's default budget) when the caller set no deadline.
    (A 10 s margin makes the subtraction visible above the time by which the server's view
    of a deadline can differ from the client's, a fresh channel's connection included: with 1 s
    of a 3 s deadline, a loaded machine's connect could take the rest of the bounds' room.)"""
    budgets: list[float | None] = []
    create_session = vaulting.create_session

    async def recording(*args: Any, deadline: float | None = None) -> CreatedSession:
        budgets.append(remaining(deadline))
        return await create_session(*args, deadline=deadline)

    monkeypatch.setattr(vaulting, "create_session", recording)
    async with serving(VaultServicer(vaulting, streams, deadline_margin=10.0)) as stub:
        await stub.CreateSession(request("vr-budget"), timeout=30)
        await stub.CreateSession(request("vr-budget"))
    timed, untimed = budgets
    assert timed is not None
    assert 15 < timed < 20.1
    assert untimed is None
