"""The Python client's behaviour in detail, against the real service over loopback (the client
is installed in the dev virtualenv too, editable; the acceptance test covers a fresh one)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from vault_client import (
    AsyncVaultClient,
    FileCursorStore,
    MemoryCursorStore,
    ResultFilter,
    ResumeTokenRejectedError,
    RetryPolicy,
    TokenFile,
    UnauthenticatedError,
    UnavailableError,
    VaultClient,
    mtls,
    pb,
)

from tests.e2e.conftest import ServiceEnv, StartService
from tests.fixtures.antom import buyer_submits
from tests.fixtures.callers import TokenFileEditor
from tests.fixtures.tls import Authority, ServerFiles
from tests.replicas.cards import VISA
from vault_service import app
from vault_service.emulator import EmulatorServer


def target(service: app.RunningService) -> str:
    return f"127.0.0.1:{service.grpc_port}"


@pytest.fixture
async def client(service: app.RunningService) -> AsyncIterator[AsyncVaultClient]:
    async with AsyncVaultClient(target(service)) as opened:
        yield opened


async def test_a_refused_resume_token_is_a_typed_error(service: app.RunningService) -> None:
    """A stored token the server refuses (unknown, malformed or too old) must not be retried
    forever nor silently become "from now": it raises ResumeTokenRejectedError, which names
    the field, so the consumer knows to re-read with GetResult."""

    def consume_from_a_bad_token() -> None:
        with (
            VaultClient(target(service)) as blocking,
            blocking.results(MemoryCursorStore("not-a-token")) as events,
        ):
            next(events)

    # The blocking client runs in a thread: the service answers on this test's event loop.
    with pytest.raises(ResumeTokenRejectedError) as refused:
        await asyncio.to_thread(consume_from_a_bad_token)
    assert [v.field for v in refused.value.field_violations] == ["resume_token"]
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_cursor_advances_only_once_the_consumer_is_done(
    client: AsyncVaultClient, emulator: EmulatorServer
) -> None:
    """An event's token is saved when the consumer finished with it (asks for the next one or
    leaves the block cleanly), never when it is handed over: an exception in the loop body
    leaves the stored cursor before the event, so the event is delivered again."""
    store = MemoryCursorStore()
    stream = client.results(store)
    first = asyncio.create_task(anext(stream))
    while store.token is None:  # the opening checkpoint is saved at once  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    opened_at = store.token
    created = await client.create_session("cursor-1")
    await buyer_submits(emulator, created.session_data, VISA)
    event = await first
    assert event.result.vaulting_request_id == "cursor-1"
    assert store.token == opened_at, "saved before the consumer was done with the event"

    with pytest.raises(RuntimeError):
        async with stream:
            raise RuntimeError("the consumer failed while handling the event")
    assert store.token == opened_at, "a failed event must be delivered again"

    async with client.results(store) as again:
        redelivered = await anext(again)
    assert redelivered.resume_token == event.resume_token
    assert store.token == event.resume_token, "a clean exit marks the last event done"


async def test_create_session_waits_the_servers_retry_delay_between_attempts(
    service: app.RunningService, client: AsyncVaultClient, emulator: EmulatorServer
) -> None:
    """Regression guard: CreateSession retries UNAVAILABLE with the same id, no sooner than
    the server's RetryInfo asks (1 s here; the client's own backoff is at most 10 ms)."""
    emulator.state.faults.update({"http_5xx": -1})
    retry = RetryPolicy(max_attempts=2, attempt_timeout=0.5, initial_backoff=0.01)
    async with AsyncVaultClient(target(service), retry=retry) as retrying:
        started = time.monotonic()
        with pytest.raises(UnavailableError) as failed:
            await retrying.create_session("retry-1", timeout=5)
        elapsed = time.monotonic() - started
    assert failed.value.retry_delay == 1.0
    assert elapsed >= 1.0, "retried sooner than RetryInfo asked"
    assert emulator.state.stats.calls("createVaultingSession", "retry-1") >= 2
    emulator.state.faults.update({"http_5xx": 0})
    assert (await client.create_session("retry-1")).vaulting_request_id == "retry-1"


async def test_create_session_retries_a_call_the_server_cancelled() -> None:
    """Regression: in a rolling restart under load a CreateSession reached a replica as it
    shut down, and gRPC core cancelled it before the service saw it; the client gave up with
    CANCELLED although the call is safe to repeat (same vaulting_request_id). It is retried
    now, with the same request."""
    requests: list[bytes] = []

    async def create(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        requests.append(request)
        if len(requests) == 1:
            await context.abort(grpc.StatusCode.CANCELLED, "server shutting down")
        return pb.CreateSessionResponse(vaulting_request_id="cancelled-1").SerializeToString()

    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01)
    handler = grpc.unary_unary_rpc_method_handler(create)
    async with (
        one_method_server("CreateSession", handler) as target,
        AsyncVaultClient(target, retry=retry) as client,
    ):
        created = await client.create_session("cancelled-1")
    assert created.vaulting_request_id == "cancelled-1"
    assert len(requests) == 2
    assert requests[0] == requests[1]


def test_file_cursor_store_replaces_the_token_atomically(tmp_path: Path) -> None:
    """The file holds the old or the new token, never a torn one, and no staging file stays."""
    store = FileCursorStore(tmp_path / "state" / "cursor")
    assert store.load() is None
    store.save("first")
    store.save("second")
    assert store.load() == "second"
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["cursor"]
    store.clear()
    assert store.load() is None


CHECKPOINT = pb.StreamResultsResponse(checkpoint=pb.Checkpoint(resume_token="t-1"))


@contextlib.asynccontextmanager
async def scripted_stream(*messages: bytes) -> AsyncIterator[str]:
    """A server whose StreamResults sends ``messages`` (serialised, so that a test can send
    bytes this client's stubs do not know) and then stays open; yields its target."""

    async def stream(request: bytes, context: object) -> AsyncIterator[bytes]:
        for message in messages:
            yield message
        await asyncio.Event().wait()

    async with one_method_server(
        "StreamResults", grpc.unary_stream_rpc_method_handler(stream)
    ) as target:
        yield target


@contextlib.asynccontextmanager
async def one_method_server(method: str, handler: grpc.RpcMethodHandler) -> AsyncIterator[str]:
    """A loopback server answering one VaultService method with raw bytes; yields its target."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("vault.v1.VaultService", {method: handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_an_unknown_kind_of_stream_message_is_skipped() -> None:
    """A newer server may send a kind of message this client's stubs do not know (a new oneof
    member): the stream skips it and goes on, instead of crashing or stopping."""
    event = pb.StreamResultsResponse(
        event=pb.ResultEvent(
            resume_token="t-2", result=pb.VaultingResult(vaulting_request_id="known")
        )
    ).SerializeToString()
    unknown_member = b"\x7a\x07\x0a\x05t-new"  # field 15 (a message holding a token)
    store = MemoryCursorStore()
    async with (
        scripted_stream(CHECKPOINT.SerializeToString(), unknown_member, event) as target,
        AsyncVaultClient(target) as newer,
        newer.results(store) as events,
    ):
        received = await anext(events)
    assert isinstance(received, pb.ResultEvent)
    assert received.result.vaulting_request_id == "known"
    assert store.token == "t-2"


async def test_an_unreadable_event_is_handed_over_in_its_place() -> None:
    """Regression (issue 9 #2 reached the contract): a server that cannot read an event (a
    corrupt row) sends an UnreadableEvent in its place. The client used to skip it as an
    unknown kind, so the consumer never learnt to re-read that request; it is now handed over
    like an event, and its token saved only once the consumer is done with it."""
    unreadable = pb.StreamResultsResponse(
        unreadable_event=pb.UnreadableEvent(
            resume_token="t-2", vaulting_request_id="damaged", reason="corrupt"
        )
    ).SerializeToString()
    store = MemoryCursorStore()
    async with (
        scripted_stream(CHECKPOINT.SerializeToString(), unreadable) as target,
        AsyncVaultClient(target) as client,
        client.results(store) as items,
    ):
        received = await anext(items)
        assert store.token == "t-1"  # handed over, not yet done with
    assert isinstance(received, pb.UnreadableEvent)
    assert received.vaulting_request_id == "damaged"
    assert store.token == "t-2"


async def test_bearer_token_from_a_file_follows_its_rotation(
    service_env: ServiceEnv,
    token_file: TokenFileEditor,
    start_service: StartService,
    tmp_path: Path,
) -> None:
    """TokenFile re-reads a rotated secret: each call carries the file's current token."""
    current, rotated = token_file.add("checkout"), token_file.add("checkout")
    service_env["VAULT_AUTH_TOKENS_FILE"] = str(token_file.path)
    service = await start_service()
    secret = tmp_path / "token"
    secret.write_text(current + "\n")
    async with AsyncVaultClient(target(service), token=TokenFile(secret)) as authed:
        await authed.create_session("token-1")
        secret.write_text("revoked-token\n")
        with pytest.raises(UnauthenticatedError):
            await authed.get_result("token-1")
        secret.write_text(rotated + "\n")
        assert (await authed.get_result("token-1")).vaulting_request_id == "token-1"


async def test_mtls_credentials_name_the_caller(
    service_env: ServiceEnv,
    server_tls_files: ServerFiles,
    token_file: TokenFileEditor,
    start_service: StartService,
    server_ca: Authority,
    client_ca: Authority,
) -> None:
    """A client with mtls(...) credentials is the caller its certificate names."""
    token_file.entries.append({"name": "checkout", "scopes": ["vault"]})
    token_file.write()
    service_env |= {
        "VAULT_GRPC_TLS_CERT_FILE": str(server_tls_files.cert_file),
        "VAULT_GRPC_TLS_KEY_FILE": str(server_tls_files.key_file),
        "VAULT_GRPC_TLS_CLIENT_CA_FILE": str(server_tls_files.client_ca_file),
        "VAULT_AUTH_TOKENS_FILE": str(token_file.path),
    }
    service = await start_service()
    issued = client_ca.issue("checkout")
    credentials = mtls(issued.cert, issued.key, server_ca.issued.cert)
    async with AsyncVaultClient(target(service), credentials=credentials) as secured:
        created = await secured.create_session("mtls-1")
        assert created.created
        result = await secured.get_result("mtls-1")
    assert result.status == pb.VAULTING_STATUS_SESSION_CREATED


async def test_list_results_pages_and_filters_in_both_apis(
    service: app.RunningService, client: AsyncVaultClient
) -> None:
    """ListResults through both APIs: one page with its token, every page with
    ``iter_results``, filters by label, status and update time; a naive datetime is refused
    before any call (it would be taken for UTC)."""
    for index in range(5):
        await client.create_session(f"list-{index}", labels={"batch": "l", "n": str(index)})
    batch = ResultFilter(labels={"batch": "l"})
    first = await client.list_results(batch, page_size=2)
    assert [r.vaulting_request_id for r in first.results] == ["list-0", "list-1"]
    second = await client.list_results(batch, page_size=2, page_token=first.next_page_token)
    assert [r.vaulting_request_id for r in second.results] == ["list-2", "list-3"]
    listed = [r.vaulting_request_id async for r in client.iter_results(batch, page_size=2)]
    assert listed == [f"list-{index}" for index in range(5)]
    third = ResultFilter(
        statuses=[pb.VAULTING_STATUS_SESSION_CREATED],
        labels={"batch": "l", "n": "3"},
        update_time_start=first.results[0].update_time.ToDatetime(tzinfo=UTC),
    )

    def blocking() -> list[str]:
        with VaultClient(target(service)) as sync_client:
            return [r.vaulting_request_id for r in sync_client.iter_results(third, page_size=1)]

    assert await asyncio.to_thread(blocking) == ["list-3"]
    failed = await client.list_results(ResultFilter([pb.VAULTING_STATUS_FAILED], {"batch": "l"}))
    assert (list(failed.results), failed.next_page_token) == ([], "")
    with pytest.raises(ValueError, match="timezone-aware"):
        ResultFilter(update_time_start=datetime(2026, 1, 1))
