"""Issue 5's log-capture acceptance: the whole flow, every error path we can reach, and not one
secret in any log line or gRPC status.

The service runs in-process (``app.start``) with its log configured exactly as ``vault-service
serve`` does it (:func:`vault_service.logs.configure`, here at DEBUG into a buffer). The secrets
looked for come from the run itself: the keys the test generated, every signature any
:class:`Signer` produced, the card tokens and fingerprints the emulator issued, and the card
numbers, CVVs, names and addresses the buyer typed. So the test cannot pass by looking for
strings that were never there.

A second test does the same for the refusals only mutual TLS has: an untrusted client
certificate, no certificate, and certificates that name callers the service then refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from tests.e2e.conftest import ServiceEnv, StartService
from tests.e2e.test_flow import next_event
from tests.fixtures.antom import CLIENT_ID, buyer_submits
from tests.fixtures.callers import Metadata, TokenFileEditor, bearer
from tests.fixtures.logs import CapturedLog
from tests.fixtures.tls import Authority, Issued, ServerFiles
from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import PrivateKey, Signer
from vault_service.emulator import EmulatorServer
from vault_service.emulator.messages import notification_body
from vault_service.emulator.wire import JSON_CONTENT_TYPE, antom_time
from vault_service.redaction import REDACTED

Stream = grpc.aio.UnaryStreamCall[pb.StreamResultsRequest, pb.StreamResultsResponse]


@dataclass(frozen=True)
class Buyer:
    """One buyer's card form, with values distinctive enough to be searched for."""

    request_id: str
    card: str
    cvv: str
    name: str
    address: dict[str, str] | None = None


BUYERS = (
    Buyer(
        "ls-visa",
        "4111 1111 1111 1111",
        "7391",
        "Perpetua Quillfeather",
        {"address1": "77 Larkspur Crescent", "address2": "Flat 9Q", "zipCode": "ZX81QJ"},
    ),
    Buyer("ls-mastercard", "5555555555554444", "8462", "Oswin Marchbanks"),
    Buyer("ls-declined", "4000000000000002", "9573", "Tamsin Ravelstoke"),
    Buyer("ls-3ds", "4000 0000 0000 3220", "6284", "Ignatius Fairweather"),
)


@dataclass
class Secrets:
    """Everything that must never be written, each with a label for the failure message.

    ``digits`` are matched as whole numbers only (a CVV would otherwise be found inside a
    port or a timestamp). A bearer token joins with :meth:`add` like anything else.
    """

    texts: dict[str, str] = field(default_factory=dict)
    digits: dict[str, str] = field(default_factory=dict)

    def add(self, label: str, value: str) -> None:
        assert value, label
        self.texts[label] = value

    def add_key(self, label: str, pem: bytes) -> None:
        """The PEM, its armour-less base64 body and each of its lines."""
        lines = pem.decode().strip().splitlines()
        self.add(f"{label} (base64 body)", "".join(lines[1:-1]))
        for number, line in enumerate(lines[1:-1]):
            if len(line) >= 16:
                self.add(f"{label} (line {number})", line)

    def add_signature(self, header: str) -> None:
        encoded = header.rpartition("signature=")[2]
        self.add(f"signature #{len(self.texts)}", encoded)
        self.add(f"signature #{len(self.texts)} (decoded)", unquote(encoded))

    def add_card(self, label: str, number: str) -> None:
        self.add(f"{label} card number", number)
        self.digits[f"{label} card number (digits)"] = re.sub(r"\D", "", number)

    def found_in(self, haystack: str) -> list[str]:
        leaks = [label for label, value in self.texts.items() if value in haystack]
        squeezed = re.sub(r"(?<=\d)[ -](?=\d)", "", haystack)
        leaks += [
            label
            for label, value in self.digits.items()
            if re.search(rf"(?<!\d){value}(?!\d)", squeezed)
        ]
        return leaks


@dataclass
class Calls:
    """Every gRPC call of the test goes through here: the one place that adds credentials
    (``metadata``) and that keeps the text of every error status for the secret scan."""

    stub: pb_grpc.VaultServiceStub
    metadata: Metadata = ()
    statuses: list[str] = field(default_factory=list)
    codes: list[grpc.StatusCode] = field(default_factory=list)

    async def create(self, request: pb.CreateSessionRequest) -> pb.CreateSessionResponse | None:
        return await self._unary(self.stub.CreateSession(request, metadata=self.metadata))

    async def get(self, vaulting_request_id: str, *, refresh: bool = False) -> Message | None:
        request = pb.GetResultRequest(vaulting_request_id=vaulting_request_id, refresh=refresh)
        return await self._unary(self.stub.GetResult(request, metadata=self.metadata))

    def as_caller(self, metadata: Metadata) -> Calls:
        """The same stub and records, with other credentials."""
        return Calls(self.stub, metadata, self.statuses, self.codes)

    def stream(self, request: pb.StreamResultsRequest) -> Stream:
        return self.stub.StreamResults(request, metadata=self.metadata)

    async def stream_error(self, request: pb.StreamResultsRequest) -> None:
        """Open a stream that must fail and keep its status."""
        await self.ended(self.stream(request))

    async def ended(self, call: Stream) -> grpc.StatusCode:
        """Read a stream until it fails (within seconds), keeping its status."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _read_to_the_end(call)
        self._keep(caught.value)
        return caught.value.code()

    async def _unary(self, call: Any) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            self._keep(exc)
            return None

    def _keep(self, exc: grpc.aio.AioRpcError) -> None:
        self.codes.append(exc.code())
        self.statuses.append(f"{exc.code()} {exc.details()}")
        for key, value in exc.trailing_metadata() or ():
            if isinstance(value, bytes):
                self.statuses.append(value.decode("utf-8", "replace"))
                if key == "grpc-status-details-bin":
                    self.statuses.append(_status_details(value))
            else:
                self.statuses.append(f"{key}: {value}")


async def _read_to_the_end(call: Stream) -> None:
    async with asyncio.timeout(10):
        while True:
            assert await call.read() is not grpc.aio.EOF


def _status_details(raw: bytes) -> str:
    status = status_pb2.Status.FromString(raw)
    texts = [status.message]
    for detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                texts.append(str(message))
    return "\n".join(texts)


@pytest.fixture
def signatures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``Signature`` header any signer in this process makes: the service's requests to
    Antom, the emulator's answers and notifications, and the test's own webhook posts."""
    made: list[str] = []
    sign = Signer.sign

    def recording(self: Signer, *args: Any, **kwargs: Any) -> str:
        header = sign(self, *args, **kwargs)
        made.append(header)
        return header

    monkeypatch.setattr(Signer, "sign", recording)
    return made


@dataclass
class Webhook:
    """Antom's side of notifyVaulting, and an attacker's: posts signed, unsigned, mis-signed,
    malformed and oversized notifications to the service's webhook."""

    http: aiohttp.ClientSession
    url: str
    signer: Signer
    statuses: list[int] = field(default_factory=list)

    async def post(
        self,
        body: bytes,
        *,
        signer: Signer | None = None,
        client_id: str = CLIENT_ID,
        content_type: str = JSON_CONTENT_TYPE,
        signed: bool = True,
        signature_of: bytes | None = None,
        url: str | None = None,
        method: str = "POST",
    ) -> int:
        target = url or self.url
        request_time = antom_time(time.time())
        headers = {"client-id": client_id, "request-time": request_time}
        headers["Content-Type"] = content_type
        if signed:
            path = urlsplit(target).path
            signing = signer or self.signer
            content = body if signature_of is None else signature_of
            headers["signature"] = signing.sign("POST", path, client_id, request_time, content)
        async with self.http.request(method, target, data=body, headers=headers) as response:
            await response.read()
            self.statuses.append(response.status)
            return response.status


async def events(stream: Stream, count: int) -> list[pb.ResultEvent]:
    return [await next_event(stream) for _ in range(count)]


async def test_no_secret_reaches_a_log_line_or_a_status(
    captured_log: CapturedLog,
    signatures: list[str],
    service_env: ServiceEnv,
    start_service: StartService,
    emulator: EmulatorServer,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
    token_file: TokenFileEditor,
) -> None:
    """Guards issue 5's promise that no private key, card token, card number, CVV, cardholder
    name, billing address or Signature value appears in any log line (DEBUG included) or any
    gRPC status message or detail, on the happy path and on every error path reachable from
    outside: missing and wrong bearer tokens, a stream whose token was removed after it had
    delivered a card, a caller without the scope it needs, bad requests, unknown ids,
    conflicts, Antom faults and outages, forged, malformed or oversized webhook posts, an
    orphan notification, and an event row that no longer decrypts."""
    token = token_file.add("checkout", "vault")
    leaver = token_file.add("leaver", "vault")
    auditor = token_file.add("auditor", "admin")
    service_env["VAULT_AUTH_TOKENS_FILE"] = str(token_file.path)
    service_env["VAULT_ANTOM_TIMEOUT"] = "1"
    service = await start_service()
    secret = Secrets()
    secret.add("bearer token", token)
    secret.add("removed bearer token", leaver)
    secret.add("admin-only bearer token", auditor)
    secret.add("a wrong token (one character short)", token[:-1])
    secret.add("a wrong token (reversed)", token[::-1])
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel,
        aiohttp.ClientSession() as http,
    ):
        calls = Calls(pb_grpc.VaultServiceStub(channel), bearer(token))
        origin = await _happy_path(calls, emulator, secret)
        await _request_errors(calls)
        await _authentication_errors(calls, token)
        await _missing_scope(calls.as_caller(bearer(auditor)), emulator)
        await _revoked_stream(calls.as_caller(bearer(leaver)), token_file, emulator, secret)
        await _antom_faults(calls, emulator)
        webhook = Webhook(http, service.notify_url, emulator.state.signer)
        await _webhook_errors(webhook, emulator, service, merchant_key, secret)
        await _orphan_notification(webhook, emulator, secret)
    await service.stop()
    await _damage_event(service_env, "ls-visa", taken_from="ls-mastercard")
    restarted = await start_service()  # its live tail starts at the head: replays read rows
    async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.grpc_port}") as channel:
        replaying = Calls(
            pb_grpc.VaultServiceStub(channel), bearer(token), calls.statuses, calls.codes
        )
        await _unreadable_event(replaying, emulator, origin, secret)
    await restarted.stop()

    secret.add_key("merchant private key", merchant_key.to_pkcs8_pem())
    secret.add_key("Antom private key", antom_key.to_pkcs8_pem())
    for buyer in BUYERS:
        secret.add_card(buyer.request_id, buyer.card)
        secret.digits[f"{buyer.request_id} cvv"] = buyer.cvv
        secret.add(f"{buyer.request_id} cardholder name", buyer.name)
        for part, value in (buyer.address or {}).items():
            secret.add(f"{buyer.request_id} billing {part}", value)
    assert len(signatures) >= 20
    for header in signatures:
        secret.add_signature(header)

    lines = captured_log.lines()
    by_request = [line for line in lines if line.get("vaulting_request_id") == "ls-visa"]
    assert by_request, "the request id must be on the service's lines"
    outcomes = {line.get("outcome") for line in lines}
    assert {"acknowledged", "rejected"} <= outcomes
    assert any(line.get("antom_path") for line in lines)
    assert {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNAVAILABLE,
    } <= set(calls.codes)
    assert any(line.get("event_id") and line.get("level") == "error" for line in by_request)
    assert any(line.get("vaulting_request_id") == "ls-orphan" for line in lines)
    _assert_nothing_leaked(captured_log, secret, calls.statuses)


async def test_no_secret_reaches_a_log_line_or_a_status_over_mutual_tls(
    captured_log: CapturedLog,
    service_env: ServiceEnv,
    start_service: StartService,
    token_file: TokenFileEditor,
    server_tls_files: ServerFiles,
    server_ca: Authority,
    client_ca: Authority,
    stranger_ca: Authority,
) -> None:
    """Guards the same promise on the refusals of a mutual-TLS server: an untrusted client
    certificate and none at all (the handshake fails), a wrong token on a trusted connection,
    a valid token whose caller is not the certificate's, a certificate that names no valid
    caller, and an admin-only certificate caller creating; no client's or the server's
    private key and no token in any log line or status."""
    token = token_file.add("checkout", "vault")
    token_file.entries += [
        {"name": "checkout.shop.svc", "scopes": ["vault"]},
        {"name": "auditor.shop.svc", "scopes": ["admin"]},
    ]
    token_file.write()
    service_env |= {
        "VAULT_GRPC_TLS_CERT_FILE": str(server_tls_files.cert_file),
        "VAULT_GRPC_TLS_KEY_FILE": str(server_tls_files.key_file),
        "VAULT_GRPC_TLS_CLIENT_CA_FILE": str(server_tls_files.client_ca_file),
        "VAULT_AUTH_TOKENS_FILE": str(token_file.path),
    }
    service = await start_service()
    clients = {
        "untrusted": stranger_ca.issue("intruder", dns=("checkout.shop.svc",)),
        "checkout": client_ca.issue("ignored-cn", dns=("checkout.shop.svc",)),
        "auditor": client_ca.issue("ignored-cn", dns=("auditor.shop.svc",)),
        "reserved name": client_ca.issue("anonymous"),
    }
    secret = Secrets()
    secret.add("bearer token", token)
    secret.add("a wrong token (one character short)", token[:-1])
    secret.add_key("server TLS key", server_tls_files.key_file.read_bytes())
    for name, issued in clients.items():
        secret.add_key(f"{name} client key", issued.key)
    statuses: list[str] = []
    codes: list[grpc.StatusCode] = []
    async with _tls_stubs(service.grpc_port, server_ca) as stub_for:

        def caller(client: Issued | None, metadata: Metadata = ()) -> Calls:
            return Calls(stub_for(client), metadata, statuses, codes)

        for stranger in (clients["untrusted"], None):
            assert await caller(stranger).get("mtls-x") is None
        owner = caller(clients["checkout"])
        assert await owner.create(pb.CreateSessionRequest(vaulting_request_id="mtls-1")) is not None
        assert await caller(clients["checkout"], bearer(token[:-1])).get("mtls-1") is None
        assert await caller(clients["checkout"], bearer(token)).get("mtls-1") is None
        auditor = caller(clients["auditor"])
        assert await auditor.get("mtls-1") is not None
        assert await auditor.create(pb.CreateSessionRequest(vaulting_request_id="mtls-2")) is None
        nameless = caller(clients["reserved name"])
        assert await nameless.get("mtls-1") is None
        await nameless.stream_error(pb.StreamResultsRequest())
    await service.stop()

    code = grpc.StatusCode
    assert codes == [
        code.UNAVAILABLE,
        code.UNAVAILABLE,
        code.UNAUTHENTICATED,
        code.NOT_FOUND,
        code.PERMISSION_DENIED,
        code.UNAUTHENTICATED,
        code.UNAUTHENTICATED,
    ]
    _assert_nothing_leaked(captured_log, secret, statuses)


@contextlib.asynccontextmanager
async def _tls_stubs(
    port: int, server_ca: Authority
) -> AsyncIterator[Callable[[Issued | None], pb_grpc.VaultServiceStub]]:
    """``stub_for(client_certificate)``: a stub on its own TLS channel to the service; every
    channel is closed on the way out."""
    async with contextlib.AsyncExitStack() as channels:

        def stub_for(client: Issued | None) -> pb_grpc.VaultServiceStub:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=server_ca.issued.cert,
                private_key=None if client is None else client.key,
                certificate_chain=None if client is None else client.cert,
            )
            channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)
            channels.push_async_callback(channel.close)
            return pb_grpc.VaultServiceStub(channel)

        yield stub_for


def _assert_nothing_leaked(captured_log: CapturedLog, secret: Secrets, statuses: list[str]) -> None:
    """No secret in the raw log, in any string of its decoded lines, or in any status; and no
    line of ours that needed the redaction to be clean."""
    lines = captured_log.lines()
    assert lines, "nothing was captured: the scan below would prove nothing"
    decoded = "\n".join(_strings(lines))
    for where, text in (
        ("the log", captured_log.text),
        ("the log (JSON-decoded)", decoded),
        ("a gRPC status", "\n".join(statuses)),
    ):
        leaks = secret.found_in(text)
        assert not leaks, f"{where} carries {leaks}"
    # Our own call sites must not lean on redaction. Other libraries' lines may be scrubbed by
    # chance: grpc's debug line "id(loop)=<15 digits>" is Luhn-valid one time in ten.
    redacted = [
        line
        for line in lines
        if str(line.get("logger", "")).startswith("vault_service") and REDACTED in json.dumps(line)
    ]
    assert not redacted, f"a call site logged a secret that only redaction caught: {redacted}"


async def _happy_path(calls: Calls, emulator: EmulatorServer, secret: Secrets) -> str:
    """Sessions, the buyers' cards, the notifications, results (stored and refreshed) and the
    stream, live and resumed; records the card tokens and fingerprints Antom issued. Returns
    a resume token from before the first event."""
    live = calls.stream(pb.StreamResultsRequest())
    opened = await live.read()
    assert isinstance(opened, pb.StreamResultsResponse)
    assert opened.WhichOneof("kind") == "checkpoint"
    for buyer in BUYERS:
        created = await calls.create(
            pb.CreateSessionRequest(vaulting_request_id=buyer.request_id, labels={"k": "v"})
        )
        assert created is not None
        await buyer_submits(
            emulator,
            created.session_data,
            buyer.card,
            cvv=buyer.cvv,
            cardholder_name=buyer.name,
            billing_address=buyer.address,
        )
    seen = await events(live, len(BUYERS))
    live.cancel()
    assert {event.result.vaulting_request_id for event in seen} == {
        buyer.request_id for buyer in BUYERS
    }
    for buyer in BUYERS:
        for refresh in (False, True):
            assert await calls.get(buyer.request_id, refresh=refresh) is not None
        _add_card_of(emulator, buyer.request_id, secret)
    resumed = calls.stream(pb.StreamResultsRequest(resume_token=seen[0].resume_token))
    assert len(await events(resumed, len(BUYERS) - 1)) == len(BUYERS) - 1
    resumed.cancel()
    return opened.checkpoint.resume_token


def _add_card_of(emulator: EmulatorServer, request_id: str, secret: Secrets) -> None:
    """The card token and fingerprint Antom issued for ``request_id``, as secrets."""
    card = emulator.state.sessions.by_request_id(request_id).card
    assert card is not None
    secret.add(f"{request_id} card token", card.card_token)
    secret.add(f"{request_id} fingerprint", card.fingerprint)


async def _request_errors(calls: Calls) -> None:
    """Invalid arguments, unknown ids, a conflicting repeat and a forged resume token."""
    for request_id in ("", "x" * 65, "has spaces 4111 1111 1111 1111"):
        assert await calls.create(pb.CreateSessionRequest(vaulting_request_id=request_id)) is None
    conflicting = pb.CreateSessionRequest(vaulting_request_id="ls-visa", labels={"k": "other"})
    assert await calls.create(conflicting) is None
    assert await calls.get("") is None
    assert await calls.get("ls-never-created") is None
    assert await calls.get("ls-never-created", refresh=True) is None
    await calls.stream_error(pb.StreamResultsRequest(resume_token="v1.forged"))


async def _authentication_errors(calls: Calls, token: str) -> None:
    """No token, a token one character off, a token in the wrong scheme, a token twice."""
    wrong: tuple[Metadata, ...] = (
        (),
        bearer(token[:-1]),
        bearer(token + "x"),
        (("authorization", f"Basic {token}"),),
        (("authorization", token),),
        bearer(token) + bearer(token[::-1]),
    )
    for metadata in wrong:
        refused = calls.as_caller(metadata)
        assert await refused.get("ls-visa") is None
        assert await refused.create(pb.CreateSessionRequest(vaulting_request_id="ls-x")) is None
        await refused.stream_error(pb.StreamResultsRequest())


async def _missing_scope(admin: Calls, emulator: EmulatorServer) -> None:
    """An admin-only caller reads every result but may not create sessions."""
    assert await admin.get("ls-visa") is not None
    assert await admin.create(pb.CreateSessionRequest(vaulting_request_id="ls-admin")) is None
    assert admin.codes[-1] == grpc.StatusCode.PERMISSION_DENIED
    assert emulator.state.stats.calls("createVaultingSession", "ls-admin") == 0


async def _revoked_stream(
    leaver: Calls, token_file: TokenFileEditor, emulator: EmulatorServer, secret: Secrets
) -> None:
    """A stream that delivered a card, then had its token removed from the callers file: it
    ends UNAUTHENTICATED (the file is polled once a second, the stream checks at its next
    checkpoint)."""
    stream = leaver.stream(pb.StreamResultsRequest())
    created = await leaver.create(pb.CreateSessionRequest(vaulting_request_id="ls-leaver"))
    assert created is not None
    buyer = BUYERS[1]
    await buyer_submits(
        emulator, created.session_data, buyer.card, cvv=buyer.cvv, cardholder_name=buyer.name
    )
    assert (await next_event(stream)).result.vaulting_request_id == "ls-leaver"
    _add_card_of(emulator, "ls-leaver", secret)
    token_file.remove("leaver")
    assert await leaver.ended(stream) == grpc.StatusCode.UNAUTHENTICATED


async def _antom_faults(calls: Calls, emulator: EmulatorServer) -> None:
    """Antom answering ``U``, a bad signature, 5xx pages, and a refresh while it is down."""
    for number, fault in enumerate(("unknown_result", "bad_signature", "http_5xx")):
        emulator.state.faults.update({fault: -1})
        request = pb.CreateSessionRequest(vaulting_request_id=f"ls-fault-{number}")
        assert await calls.create(request) is None
        if fault == "http_5xx":
            await calls.get("ls-visa", refresh=True)
        emulator.state.faults.update({fault: 0})


async def _webhook_errors(
    webhook: Webhook,
    emulator: EmulatorServer,
    service: app.RunningService,
    merchant_key: PrivateKey,
    secret: Secrets,
) -> None:
    """A replayed genuine notification, then forgeries and junk, each refused."""
    session = emulator.state.sessions.by_request_id("ls-visa")
    genuine = notification_body(session, emulator.state.config.expiry_spelling)
    assert await webhook.post(genuine) == 200
    forged_token = "ALIPAY" + secrets.token_urlsafe(33)
    secret.add("forged card token", forged_token)
    card_token = json.loads(genuine)["paymentMethodDetail"]["card"]["cardToken"]
    tampered = genuine.replace(card_token.encode(), forged_token.encode())
    garbage = b'{"cardNo": "4111111111111111", "cvv": "7391", "cardToken": ' + forged_token.encode()
    not_a_notification = json.dumps(
        {"cardholderName": "Perpetua Quillfeather", "address1": "77 Larkspur Crescent"}
    ).encode()
    refused = [
        await webhook.post(tampered, signed=False),
        await webhook.post(genuine, signer=Signer(merchant_key)),
        await webhook.post(genuine, client_id="SANDBOX_SOMEONEELSE"),
        await webhook.post(garbage),
        await webhook.post(not_a_notification),
        await webhook.post(genuine, content_type="text/plain"),
        await webhook.post(genuine + b" " * (128 * 1024)),
        await webhook.post(genuine, url=service.notify_url + "x"),
        await webhook.post(genuine, method="GET"),
        await webhook.post(tampered, signature_of=genuine),
    ]
    assert all(status >= 400 for status in refused), refused


async def _orphan_notification(webhook: Webhook, emulator: EmulatorServer, secret: Secrets) -> None:
    """A correctly signed notification, card and all, for an id this service never created:
    kept as an orphan and acknowledged, so that Antom stops retrying."""
    session = emulator.state.sessions.by_request_id("ls-mastercard")
    body = json.loads(notification_body(session, emulator.state.config.expiry_spelling))
    orphan_token = "ALIPAY" + secrets.token_urlsafe(33)
    secret.add("orphan card token", orphan_token)
    body["vaultingRequestId"] = "ls-orphan"
    body["paymentMethodDetail"]["card"]["cardToken"] = orphan_token
    assert await webhook.post(json.dumps(body).encode()) == 200


async def _damage_event(service_env: ServiceEnv, victim: str, *, taken_from: str) -> None:
    """Put another event's sealed card token on ``victim``'s event with plain SQL, as someone
    with the database file could: it no longer decrypts (it was sealed for another id)."""
    database = service_env["VAULT_DATABASE_URL"].removeprefix("sqlite:///")

    def damage() -> int:
        with contextlib.closing(sqlite3.connect(database)) as db, db:
            changed: int = db.execute(
                "UPDATE events SET card_token = (SELECT card_token FROM events"
                " WHERE vaulting_request_id = ? AND card_token IS NOT NULL)"
                " WHERE vaulting_request_id = ? AND card_token IS NOT NULL",
                (taken_from, victim),
            ).rowcount
        return changed

    assert await asyncio.to_thread(damage) == 1


async def _unreadable_event(
    calls: Calls, emulator: EmulatorServer, origin: str, secret: Secrets
) -> None:
    """A replay from before the damaged event (read from the database) reports it as an
    unreadable event (issue 9 #2: it used to leave it out in silence) and goes on to the
    results after it; the log line about it holds no card value (checked with the rest)."""
    created = await calls.create(pb.CreateSessionRequest(vaulting_request_id="ls-after"))
    assert created is not None
    buyer = BUYERS[1]
    await buyer_submits(
        emulator, created.session_data, buyer.card, cvv=buyer.cvv, cardholder_name=buyer.name
    )
    _add_card_of(emulator, "ls-after", secret)
    replay = calls.stream(
        pb.StreamResultsRequest(
            resume_token=origin, vaulting_request_ids=["ls-visa", "ls-mastercard", "ls-after"]
        )
    )
    delivered: list[str] = []
    async with asyncio.timeout(10):
        while "event ls-after" not in delivered:
            message = await replay.read()
            assert message is not grpc.aio.EOF
            match message.WhichOneof("kind"):
                case "event":
                    delivered.append(f"event {message.event.result.vaulting_request_id}")
                case "unreadable_event":
                    delivered.append(f"unreadable {message.unreadable_event.vaulting_request_id}")
    replay.cancel()
    assert delivered == ["unreadable ls-visa", "event ls-mastercard", "event ls-after"]


def _strings(value: object) -> Iterator[str]:
    """Every string inside the decoded log lines, so JSON escaping hides nothing."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
