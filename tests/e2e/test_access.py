"""Issue 5's access rules on the whole service (``app.start``) over loopback: bearer tokens from
a reloadable file, mTLS client certificates, owner isolation, the admin scope, open health and
reflection, and TLS material re-read without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.e2e.conftest import ServiceEnv, StartService
from tests.e2e.test_flow import VISA, next_event
from tests.fixtures.antom import buyer_submits
from tests.fixtures.callers import TokenFileEditor, bearer
from tests.fixtures.tls import Authority, Issued, ServerFiles
from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom_key_files import AntomKeyFiles
from vault_service.emulator import EmulatorServer


@pytest.fixture
def tokens(token_file: TokenFileEditor) -> dict[str, str]:
    return {
        "checkout": token_file.add("checkout", "vault"),
        "billing": token_file.add("billing", "vault"),
        "ops": token_file.add("ops", "admin"),
    }


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Wait until ``check()`` holds (the token file is polled once a second)."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling the service is the point
            await asyncio.sleep(0.1)


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def end_without_events(
    stream: grpc.aio.UnaryStreamCall[pb.StreamResultsRequest, pb.StreamResultsResponse],
) -> grpc.StatusCode:
    """How a stream ends, having sent no event (checkpoints are harmless) before it did."""
    async with asyncio.timeout(10):
        while True:
            try:
                message = await stream.read()
            except grpc.aio.AioRpcError as error:
                return error.code()
            assert message is not grpc.aio.EOF
            assert message.WhichOneof("kind") != "event", "the stream delivered a result"


class TestBearerTokens:
    @pytest.fixture
    async def service(
        self,
        service_env: ServiceEnv,
        token_file: TokenFileEditor,
        tokens: dict[str, str],
        start_service: StartService,
    ) -> app.RunningService:
        """Started with ``tokens`` already in the file."""
        service_env["VAULT_AUTH_TOKENS_FILE"] = str(token_file.path)
        return await start_service()

    async def test_missing_malformed_and_unknown_tokens_are_unauthenticated(
        self, stub: pb_grpc.VaultServiceStub, tokens: dict[str, str]
    ) -> None:
        request = pb.GetResultRequest(vaulting_request_id="any")
        for metadata in (
            (),
            (("authorization", tokens["checkout"]),),
            (("authorization", f"Basic {tokens['checkout']}"),),
            bearer("not-a-token"),
            bearer(tokens["checkout"] + "x"),
            bearer(tokens["checkout"]) + bearer(tokens["checkout"]),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetResult(request, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert tokens["checkout"] not in (refused.value.details() or "")
        stream = stub.StreamResults(pb.StreamResultsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.read()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    async def test_refusals_are_logged_without_the_credential(
        self,
        service: app.RunningService,
        tokens: dict[str, str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The audit trail of refused calls (method, code, reason, peer); the refusal comes
        before the request is decoded, so a stranger's garbage gets UNAUTHENTICATED too."""
        wrong = tokens["checkout"] + "x"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            raw = channel.unary_unary("/vault.v1.VaultService/CreateSession")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await raw(b"\xff\xff not a message", metadata=bearer(wrong))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        (line,) = [r for r in caplog.records if r.getMessage() == "gRPC call refused"]
        assert line.__dict__["grpc_code"] == "UNAUTHENTICATED"
        assert line.__dict__["grpc_method"] == "/vault.v1.VaultService/CreateSession"
        assert line.__dict__["peer"].startswith("ipv4:127.0.0.1:")
        assert wrong not in caplog.text

    async def test_callers_see_only_their_own_sessions_and_admin_sees_all(
        self,
        stub: pb_grpc.VaultServiceStub,
        tokens: dict[str, str],
        emulator: EmulatorServer,
    ) -> None:
        checkout, billing, ops = (
            bearer(tokens["checkout"]),
            bearer(tokens["billing"]),
            bearer(tokens["ops"]),
        )
        billing_stream = stub.StreamResults(pb.StreamResultsRequest(), metadata=billing)
        admin_stream = stub.StreamResults(pb.StreamResultsRequest(), metadata=ops)
        starts = [await stream.read() for stream in (billing_stream, admin_stream)]
        assert [start.WhichOneof("kind") for start in starts] == ["checkpoint"] * 2

        mine = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="acc-checkout"), metadata=checkout
        )
        await buyer_submits(emulator, mine.session_data, VISA)
        theirs = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="acc-billing"), metadata=billing
        )
        await buyer_submits(emulator, theirs.session_data, VISA)

        # Billing's stream carries billing's result and nothing of checkout's before it.
        assert (await next_event(billing_stream)).result.vaulting_request_id == "acc-billing"
        seen_by_admin = {(await next_event(admin_stream)).result.vaulting_request_id for _ in "ab"}
        assert seen_by_admin == {"acc-checkout", "acc-billing"}

        # Another caller's id answers exactly like an unknown one.
        for rid in ("acc-checkout", "acc-nobody"):
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await stub.GetResult(pb.GetResultRequest(vaulting_request_id=rid), metadata=billing)
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
            assert hidden.value.details() == f"no vaulting request {rid!r}"
        # ... and cannot be taken over; the refusal says neither whose it is nor with what.
        with pytest.raises(grpc.aio.AioRpcError) as taken:
            await stub.CreateSession(
                pb.CreateSessionRequest(vaulting_request_id="acc-checkout"), metadata=billing
            )
        assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert taken.value.details() == "vaulting request 'acc-checkout' is already in use"
        own = await stub.GetResult(
            pb.GetResultRequest(vaulting_request_id="acc-checkout"), metadata=checkout
        )
        assert own.result.status == pb.VAULTING_STATUS_SUCCEEDED
        assert own.result.vaulting_session_id == mine.vaulting_session_id
        # The admin reads every caller's results.
        for rid in ("acc-checkout", "acc-billing"):
            read = await stub.GetResult(pb.GetResultRequest(vaulting_request_id=rid), metadata=ops)
            assert read.result.vaulting_request_id == rid
        # Later too: checkout's next result (seen by the admin first) never reaches billing,
        # whose stream's next event is billing's own sentinel.
        more = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="acc-checkout-2"), metadata=checkout
        )
        await buyer_submits(emulator, more.session_data, VISA)
        assert (await next_event(admin_stream)).result.vaulting_request_id == "acc-checkout-2"
        sentinel = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="acc-billing-2"), metadata=billing
        )
        await buyer_submits(emulator, sentinel.session_data, VISA)
        assert (await next_event(billing_stream)).result.vaulting_request_id == "acc-billing-2"
        for stream in (billing_stream, admin_stream):
            stream.cancel()

    async def test_a_replay_from_the_database_keeps_callers_apart(
        self,
        service: app.RunningService,
        start_service: StartService,
        tokens: dict[str, str],
        emulator: EmulatorServer,
    ) -> None:
        """A resume token older than the live tail's buffer is served by the store's owner
        filter (after a restart the buffer starts at the head): billing gets nothing of
        checkout's even when it names checkout's id."""
        checkout, billing = bearer(tokens["checkout"]), bearer(tokens["billing"])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            stub = pb_grpc.VaultServiceStub(channel)
            start = await stub.StreamResults(pb.StreamResultsRequest(), metadata=billing).read()
            for rid, caller in (("db-checkout", checkout), ("db-billing", billing)):
                created = await stub.CreateSession(
                    pb.CreateSessionRequest(vaulting_request_id=rid), metadata=caller
                )
                await buyer_submits(emulator, created.session_data, VISA)
            await emulator.state.notifier.wait_idle()
        await service.stop()
        restarted = await start_service()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.grpc_port}") as channel:
            stub = pb_grpc.VaultServiceStub(channel)
            replay = stub.StreamResults(
                pb.StreamResultsRequest(
                    resume_token=start.checkpoint.resume_token,
                    vaulting_request_ids=["db-checkout", "db-billing"],
                ),
                metadata=billing,
            )
            assert (await next_event(replay)).result.vaulting_request_id == "db-billing"
            everything = stub.StreamResults(
                pb.StreamResultsRequest(resume_token=start.checkpoint.resume_token),
                metadata=bearer(tokens["ops"]),
            )
            seen = {(await next_event(everything)).result.vaulting_request_id for _ in "ab"}
            assert seen == {"db-checkout", "db-billing"}
            replay.cancel()
            everything.cancel()

    async def test_an_open_stream_ends_when_its_token_is_removed(
        self,
        stub: pb_grpc.VaultServiceStub,
        token_file: TokenFileEditor,
        tokens: dict[str, str],
        emulator: EmulatorServer,
    ) -> None:
        """Regression: a stream authenticated once at its start went on delivering results
        (card tokens included) after its token was removed from the file."""
        checkout = bearer(tokens["checkout"])
        stream = stub.StreamResults(pb.StreamResultsRequest(), metadata=checkout)
        assert (await stream.read()).WhichOneof("kind") == "checkpoint"
        created = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="acc-revoked"), metadata=checkout
        )
        token_file.remove("checkout")

        async def revoked() -> bool:
            code = await code_of(
                stub.GetResult(pb.GetResultRequest(vaulting_request_id="x"), metadata=checkout)
            )
            return code == grpc.StatusCode.UNAUTHENTICATED

        await eventually(revoked)
        await buyer_submits(emulator, created.session_data, VISA)
        assert await end_without_events(stream) == grpc.StatusCode.UNAUTHENTICATED

    async def test_a_stream_ends_when_its_caller_loses_the_admin_scope(
        self,
        stub: pb_grpc.VaultServiceStub,
        token_file: TokenFileEditor,
        tokens: dict[str, str],
        emulator: EmulatorServer,
    ) -> None:
        """The demotion is waited for by what ops can read, not by a fixed pause: 1.5 s for a
        file polled once a second was sometimes not enough on a loaded CI machine, and the
        still-admin stream then rightly delivered the event."""
        ops = bearer(tokens["ops"])
        stream = stub.StreamResults(pb.StreamResultsRequest(), metadata=ops)
        assert (await stream.read()).WhichOneof("kind") == "checkpoint"
        created = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="acc-demoted"),
            metadata=bearer(tokens["checkout"]),
        )
        checkout_result = pb.GetResultRequest(vaulting_request_id="acc-demoted")
        assert await code_of(stub.GetResult(checkout_result, metadata=ops)) == grpc.StatusCode.OK
        for entry in token_file.entries:
            if entry["name"] == "ops":
                entry["scopes"] = ["vault"]
        token_file.write()

        async def demoted() -> bool:
            code = await code_of(stub.GetResult(checkout_result, metadata=ops))
            return code != grpc.StatusCode.OK

        await eventually(demoted)
        await buyer_submits(emulator, created.session_data, VISA)
        assert await end_without_events(stream) == grpc.StatusCode.PERMISSION_DENIED

    async def test_an_admin_only_caller_cannot_create_sessions(
        self, stub: pb_grpc.VaultServiceStub, tokens: dict[str, str], emulator: EmulatorServer
    ) -> None:
        """The admin scope reads; creating (which spends Antom calls) needs the vault scope."""
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateSession(
                pb.CreateSessionRequest(vaulting_request_id="acc-admin"),
                metadata=bearer(tokens["ops"]),
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert emulator.state.stats.calls("createVaultingSession", "acc-admin") == 0

    async def test_tokens_added_and_removed_take_effect_without_a_restart(
        self, stub: pb_grpc.VaultServiceStub, token_file: TokenFileEditor, tokens: dict[str, str]
    ) -> None:
        request = pb.GetResultRequest(vaulting_request_id="acc-none")
        newcomer = token_file.add("newcomer", "vault")

        async def newcomer_accepted() -> bool:
            code = await code_of(stub.GetResult(request, metadata=bearer(newcomer)))
            return code == grpc.StatusCode.NOT_FOUND

        await eventually(newcomer_accepted)
        token_file.remove("checkout")

        async def checkout_refused() -> bool:
            code = await code_of(stub.GetResult(request, metadata=bearer(tokens["checkout"])))
            return code == grpc.StatusCode.UNAUTHENTICATED

        await eventually(checkout_refused)
        # A broken edit keeps the callers in force rather than locking everyone out.
        token_file.path.write_text("{not json")
        await asyncio.sleep(1.5)
        assert await newcomer_accepted()

    async def test_health_and_reflection_need_no_credentials(
        self, service: app.RunningService
    ) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest())
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            assert await list_services(channel) >= {"vault.v1.VaultService"}


async def list_services(channel: grpc.aio.Channel) -> set[str]:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    async for answer in call:
        return {service.name for service in answer.list_services_response.service}
    raise AssertionError("reflection answered nothing")


async def test_closed_health_and_reflection_need_a_caller(
    service_env: ServiceEnv,
    token_file: TokenFileEditor,
    tokens: dict[str, str],
    start_service: StartService,
) -> None:
    service_env |= {
        "VAULT_AUTH_TOKENS_FILE": str(token_file.path),
        "VAULT_PUBLIC_HEALTH": "0",
        "VAULT_PUBLIC_REFLECTION": "0",
    }
    service = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            await code_of(health.Check(health_pb2.HealthCheckRequest()))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        answer = await health.Check(
            health_pb2.HealthCheckRequest(), metadata=bearer(tokens["checkout"])
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(), metadata=bearer(tokens["checkout"]))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await list_services(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- mTLS -------------------------------------------------------------------------------------

ChannelFactory = Callable[[Issued | None], grpc.aio.Channel]


CERTIFICATE_CALLERS = (
    "spiffe://cluster.local/ns/shop/sa/checkout",
    "billing.shop.svc",
    "reports",
    "checkout",
)


@pytest.fixture
async def mtls_service(
    service_env: ServiceEnv,
    server_tls_files: ServerFiles,
    token_file: TokenFileEditor,
    start_service: StartService,
) -> app.RunningService:
    """mTLS, with a callers file that lists the certificate callers the tests use (entries
    without a token) and makes "auditor.shop.svc" an admin."""
    token_file.entries.append({"name": "auditor.shop.svc", "scopes": ["admin"]})
    for name in CERTIFICATE_CALLERS:
        token_file.entries.append({"name": name, "scopes": ["vault"]})
    token_file.write()
    service_env |= {
        "VAULT_GRPC_TLS_CERT_FILE": str(server_tls_files.cert_file),
        "VAULT_GRPC_TLS_KEY_FILE": str(server_tls_files.key_file),
        "VAULT_GRPC_TLS_CLIENT_CA_FILE": str(server_tls_files.client_ca_file),
        "VAULT_AUTH_TOKENS_FILE": str(token_file.path),
    }
    return await start_service()


@pytest.fixture
async def tls_channel(
    mtls_service: app.RunningService, server_ca: Authority
) -> AsyncIterator[ChannelFactory]:
    """``tls_channel(client_certificate)``: a channel to the service, closed at teardown."""
    channels: list[grpc.aio.Channel] = []

    def open_channel(client: Issued | None) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=server_ca.issued.cert,
            private_key=None if client is None else client.key,
            certificate_chain=None if client is None else client.cert,
        )
        channel = grpc.aio.secure_channel(f"127.0.0.1:{mtls_service.grpc_port}", credentials)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        await channel.close()


async def test_certificates_name_their_callers(
    tls_channel: ChannelFactory, client_ca: Authority, emulator: EmulatorServer
) -> None:
    """URI SAN first (SPIFFE), then DNS SAN, then the common name; the owner of a session is
    the caller its certificate names, and another certificate's caller cannot read it. The
    names are proven exactly by the admin entry for "auditor.shop.svc", whose certificate
    lists an IP and an e-mail SAN before that DNS name."""
    spiffe = client_ca.issue(
        "ignored-cn",
        uris=("spiffe://cluster.local/ns/shop/sa/checkout",),
        dns=("ignored.example",),
    )
    # IP and e-mail SANs come first in this certificate; they never name a caller.
    dns_only = client_ca.issue(
        "ignored-cn", ips=("10.1.2.3",), emails=("ops@example.com",), dns=("billing.shop.svc",)
    )
    cn_only = client_ca.issue("reports")
    created = {}
    for name, issued in (("spiffe", spiffe), ("dns", dns_only), ("cn", cn_only)):
        stub = pb_grpc.VaultServiceStub(tls_channel(issued))
        created[name] = stub
        await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id=f"mtls-{name}"))
    for name, stub in created.items():
        for other in created:
            code = await code_of(
                stub.GetResult(pb.GetResultRequest(vaulting_request_id=f"mtls-{other}"))
            )
            assert code == (grpc.StatusCode.OK if other == name else grpc.StatusCode.NOT_FOUND)
    assert emulator.state.stats.calls("createVaultingSession", "mtls-spiffe") == 1
    auditor = pb_grpc.VaultServiceStub(
        tls_channel(
            client_ca.issue(
                "ignored-cn",
                ips=("10.1.2.3",),
                emails=("ops@example.com",),
                dns=("auditor.shop.svc",),
            )
        )
    )
    for other in created:
        read = await auditor.GetResult(pb.GetResultRequest(vaulting_request_id=f"mtls-{other}"))
        assert read.result.vaulting_request_id == f"mtls-{other}"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await auditor.CreateSession(pb.CreateSessionRequest(vaulting_request_id="mtls-audit"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_untrusted_client_certificate_fails_the_handshake(
    tls_channel: ChannelFactory, stranger_ca: Authority, client_ca: Authority
) -> None:
    for client in (stranger_ca.issue("intruder", dns=("checkout",)), None):
        stub = pb_grpc.VaultServiceStub(tls_channel(client))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetResult(pb.GetResultRequest(vaulting_request_id="x"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    trusted = pb_grpc.VaultServiceStub(tls_channel(client_ca.issue("checkout")))
    assert (
        await code_of(trusted.GetResult(pb.GetResultRequest(vaulting_request_id="x")))
        == grpc.StatusCode.NOT_FOUND
    )
    # Signed by the trusted CA but not a caller of the callers file: a broad CA does not
    # make every certificate it signed a caller.
    unlisted = pb_grpc.VaultServiceStub(tls_channel(client_ca.issue("someone-else")))
    assert (
        await code_of(unlisted.GetResult(pb.GetResultRequest(vaulting_request_id="x")))
        == grpc.StatusCode.UNAUTHENTICATED
    )


async def test_a_renewed_server_certificate_is_served_after_reload(
    mtls_service: app.RunningService,
    tls_channel: ChannelFactory,
    server_tls_files: ServerFiles,
    server_ca: Authority,
    client_ca: Authority,
) -> None:
    """cert-manager renews certificates in place: the next handshake must use the new one
    without a restart, and a broken renewal must not take the port down."""
    assert mtls_service.tls is not None
    server_tls_files.key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n")
    assert not await mtls_service.tls.reload()
    before = pb_grpc.VaultServiceStub(tls_channel(client_ca.issue("checkout")))
    assert (
        await code_of(before.GetResult(pb.GetResultRequest(vaulting_request_id="x")))
        == grpc.StatusCode.NOT_FOUND
    ), "a broken renewal must leave the old certificate in service"
    renewed_ca = Authority.create("renewed server CA")
    renewed = renewed_ca.issue("vault-service", ips=("127.0.0.1",))
    server_tls_files.cert_file.write_bytes(renewed.cert)
    server_tls_files.key_file.write_bytes(renewed.key)
    await mtls_service.reload()  # what SIGHUP runs
    credentials = grpc.ssl_channel_credentials(
        root_certificates=renewed_ca.issued.cert,
        private_key=(caller := client_ca.issue("checkout")).key,
        certificate_chain=caller.cert,
    )
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{mtls_service.grpc_port}", credentials
    ) as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        assert (
            await code_of(stub.GetResult(pb.GetResultRequest(vaulting_request_id="x")))
            == grpc.StatusCode.NOT_FOUND
        )
    old = pb_grpc.VaultServiceStub(tls_channel(client_ca.issue("checkout")))
    assert (
        await code_of(old.GetResult(pb.GetResultRequest(vaulting_request_id="x"), timeout=5))
        == grpc.StatusCode.UNAVAILABLE
    )


async def test_an_insecure_exposed_start_is_warned_about(
    service_env: ServiceEnv, start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    """VAULT_INSECURE=1 lets an unauthenticated port beyond loopback start, loudly."""
    service_env |= {"VAULT_GRPC_LISTEN": "0.0.0.0:0", "VAULT_INSECURE": "1"}
    await start_service()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("every caller sees and streams every session" in w for w in warnings)


async def test_tokens_without_tls_beyond_loopback_are_warned_about(
    service_env: ServiceEnv,
    token_file: TokenFileEditor,
    start_service: StartService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused by default (see test_serve_process); allowed behind a mesh, with a warning."""
    service_env |= {
        "VAULT_GRPC_LISTEN": "0.0.0.0:0",
        "VAULT_AUTH_TOKENS_FILE": str(token_file.path),
        "VAULT_INSECURE": "1",
    }
    await start_service()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("without TLS" in w for w in warnings)
    assert not any("every caller sees" in w for w in warnings)


async def test_connections_are_recycled_so_streams_reconnect(
    service_env: ServiceEnv, start_service: StartService
) -> None:
    """VAULT_GRPC_MAX_CONNECTION_AGE reaches the server: a stream's connection is closed after
    that age (the client resumes elsewhere and credentials are checked anew)."""
    service_env["VAULT_GRPC_MAX_CONNECTION_AGE"] = "0.3"
    service = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stream = pb_grpc.VaultServiceStub(channel).StreamResults(pb.StreamResultsRequest())
        assert await end_without_events(stream) == grpc.StatusCode.UNAVAILABLE


async def test_a_failing_reload_step_does_not_skip_the_others(
    mtls_service: app.RunningService,
    token_file: TokenFileEditor,
    tls_channel: ChannelFactory,
    client_ca: Authority,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: an unexpected error in one SIGHUP step (here the Antom keys) ended the
    reload, so the TLS and token-file steps after it never ran."""

    async def broken(self: AntomKeyFiles) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(AntomKeyFiles, "reload", broken)
    token = token_file.add("late-caller", "vault")
    await mtls_service.reload()
    assert "a reload step failed" in caplog.text
    stub = pb_grpc.VaultServiceStub(tls_channel(client_ca.issue("checkout")))
    answer = await code_of(
        stub.GetResult(pb.GetResultRequest(vaulting_request_id="x"), metadata=bearer(token))
    )
    assert answer == grpc.StatusCode.NOT_FOUND


async def test_probes_without_a_certificate_use_the_health_port(
    service_env: ServiceEnv,
    server_tls_files: ServerFiles,
    start_service: StartService,
) -> None:
    """With mTLS every connection to the gRPC port needs a client certificate, which
    Kubernetes' gRPC probes cannot present: VAULT_HEALTH_LISTEN serves health alone in
    plaintext, reports the draining, and serves nothing else."""
    service_env |= {
        "VAULT_GRPC_TLS_CERT_FILE": str(server_tls_files.cert_file),
        "VAULT_GRPC_TLS_KEY_FILE": str(server_tls_files.key_file),
        "VAULT_GRPC_TLS_CLIENT_CA_FILE": str(server_tls_files.client_ca_file),
        "VAULT_HEALTH_LISTEN": "127.0.0.1:0",
    }
    service = await start_service()
    assert service.health_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        vault = pb_grpc.VaultServiceStub(channel)
        assert (
            await code_of(vault.GetResult(pb.GetResultRequest(vaulting_request_id="x")))
            == grpc.StatusCode.UNIMPLEMENTED
        )
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(service.stop())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_streams_of_certificates_a_reloaded_client_ca_distrusts_end(
    mtls_service: app.RunningService,
    tls_channel: ChannelFactory,
    server_tls_files: ServerFiles,
    client_ca: Authority,
) -> None:
    """Regression (issue 9 #11): after the client CA file changed and SIGHUP, open mTLS streams
    of certificates the new CA does not trust kept streaming (card tokens included) for up to
    max_connection_age + 30 s. Now they end UNAUTHENTICATED within one checkpoint interval
    (0.2 s here), as do later calls on their connections, while a certificate of the new CA
    keeps its stream."""
    rotated_ca = Authority.create("rotated client CA")
    server_tls_files.client_ca_file.write_bytes(client_ca.issued.cert + rotated_ca.issued.cert)
    await mtls_service.reload()  # what SIGHUP runs: both CAs during the rotation
    old = pb_grpc.VaultServiceStub(tls_channel(client_ca.issue("checkout")))
    new = pb_grpc.VaultServiceStub(
        tls_channel(rotated_ca.issue("billing", dns=("billing.shop.svc",)))
    )
    streams = [stub.StreamResults(pb.StreamResultsRequest()) for stub in (old, new)]
    for stream in streams:
        assert (await stream.read()).WhichOneof("kind") == "checkpoint"

    server_tls_files.client_ca_file.write_bytes(rotated_ca.issued.cert)
    await mtls_service.reload()
    async with asyncio.timeout(0.2 + 0.3):  # one checkpoint interval, and time to send
        assert await end_without_events(streams[0]) == grpc.StatusCode.UNAUTHENTICATED
    for _ in range(2):
        assert (await streams[1].read()).WhichOneof("kind") == "checkpoint"
    streams[1].cancel()
    get = pb.GetResultRequest(vaulting_request_id="x")
    assert await code_of(old.GetResult(get)) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(new.GetResult(get)) == grpc.StatusCode.NOT_FOUND


async def test_a_certificate_under_an_intermediate_ca_stays_trusted_after_reload(
    mtls_service: app.RunningService,
    server_tls_files: ServerFiles,
    server_ca: Authority,
    client_ca: Authority,
) -> None:
    """Guards the re-check of issue 9 #11 against refusing what the handshake accepts: a
    client that sends its intermediate CA with its certificate (the file holds only the root)
    is served before and after a reload, and refused once the root is gone."""
    intermediate = client_ca.intermediate("issuing CA")
    caller = intermediate.issue("checkout")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server_ca.issued.cert,
        private_key=caller.key,
        certificate_chain=caller.cert + intermediate.issued.cert,
    )
    get = pb.GetResultRequest(vaulting_request_id="x")
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{mtls_service.grpc_port}", credentials
    ) as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        assert await code_of(stub.GetResult(get)) == grpc.StatusCode.NOT_FOUND
        other = Authority.create("another client CA")
        server_tls_files.client_ca_file.write_bytes(client_ca.issued.cert + other.issued.cert)
        await mtls_service.reload()
        assert await code_of(stub.GetResult(get)) == grpc.StatusCode.NOT_FOUND
        server_tls_files.client_ca_file.write_bytes(other.issued.cert)
        await mtls_service.reload()
        assert await code_of(stub.GetResult(get)) == grpc.StatusCode.UNAUTHENTICATED
