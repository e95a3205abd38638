"""A running webhook over the real service, store and emulator, plus a signing caller.

``webhook`` binds a loopback socket first, builds the service with that notify URL (as app.py
does), then serves the app on the socket; the emulator's notifications reach it for real.
``WebhookCaller`` posts requests the way Antom does, signing with Antom's key from
``tests.fixtures.rsa_keys``, and lets each test break exactly one thing.

The webhooks trust Antom's keys mid-rotation (``antom_verifier``): keyVersion 1 is
``antom_key``, keyVersion 2 is ``antom_next_key``. A test module can change the app's options
(the failure limit, say) by overriding ``webhook_options``, the server's (the header timeout,
the connection cap) by overriding ``serve_options``, and the store (SQLite by default) by
overriding ``vault_store`` (see tests.fixtures.stack).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from tests.fixtures.antom import CLIENT_ID, buyer_submits
from tests.fixtures.stack import VaultingFactory
from vault_service.antom import PrivateKey, Signer, Verifier
from vault_service.domain import ANONYMOUS_OWNER, SessionParameters, VaultingRecord
from vault_service.emulator import EmulatorServer
from vault_service.service import VaultingService
from vault_service.store import Store
from vault_service.webhook import (
    NotificationSink,
    WebhookServer,
    bind,
    build_webhook_app,
    serve_webhook,
)

PATH = "/antom/vaulting/notify"
JSON_UTF8 = "application/json; charset=UTF-8"
VISA = "4111111111111111"
DECLINED = "4000000000000002"
THREE_DS = "4000000000003220"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def notification(
    vaulting_request_id: str,
    *,
    status: str = "S",
    code: str = "SUCCESS",
    card_token: str = "ALIPAYtoken-from-test",
) -> bytes:
    """A compact notifyVaulting body, shaped like the emulator's (and Antom's samples)."""
    return json.dumps(
        {
            "result": {"resultCode": code, "resultStatus": status, "resultMessage": "success."},
            "vaultingRequestId": vaulting_request_id,
            "paymentMethodDetail": {
                "paymentMethodType": "CARD",
                "card": {
                    "cardToken": card_token,
                    "brand": "VISA",
                    "maskedCardNo": "************1111",
                    "lastFour": "1111",
                },
            },
            "vaultingCreateTime": "2026-05-18T10:40:00+08:00",
        },
        separators=(",", ":"),
    ).encode()


def antom_time_now() -> str:
    """A request-time as Antom's current docs show it: epoch milliseconds, now."""
    return str(time.time_ns() // 1_000_000)


class WebhookCaller:
    """Posts to the webhook like Antom: signed headers by default, each overridable."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, antom_key: PrivateKey) -> None:
        self.http = http
        self.base_url = base_url
        self.signer = Signer(antom_key)

    def headers(
        self,
        body: bytes,
        *,
        signer: Signer | None = None,
        sign_path: str = PATH,
        client_id: str = CLIENT_ID,
        request_time: str | None = None,
    ) -> dict[str, str]:
        """Antom's notification headers with a signature over exactly these values (the
        request-time defaults to now)."""
        if request_time is None:
            request_time = antom_time_now()
        signature = (signer or self.signer).sign("POST", sign_path, client_id, request_time, body)
        return {
            "Content-Type": JSON_UTF8,
            "client-id": client_id,
            "request-time": request_time,
            "signature": signature,
        }

    async def post(
        self,
        body: bytes | AsyncIterator[bytes],
        headers: Mapping[str, str] | None = None,
        *,
        target: str = PATH,
        method: str = "POST",
        drop: tuple[str, ...] = (),
    ) -> Reply:
        """Send ``body``; ``headers`` default to a valid signature, ``drop`` removes some."""
        if headers is None:
            assert isinstance(body, bytes)
            headers = self.headers(body)
        sent = {name: value for name, value in headers.items() if name not in drop}
        async with self.http.request(
            method,
            self.base_url + target,
            data=body,
            headers=sent,
            skip_auto_headers=[name for name in drop if name == "Content-Type"],
        ) as response:
            return Reply(response.status, response.headers, await response.read())


@dataclass
class Webhook:
    """The running webhook and what sits behind it."""

    url: str
    port: int
    server: WebhookServer
    service: VaultingService
    store: Store
    emulator: EmulatorServer
    caller: WebhookCaller

    async def open_session(self, vaulting_request_id: str) -> VaultingRecord:
        """A session created through the service, so Antom will notify this webhook."""
        created = await self.service.create_session(
            ANONYMOUS_OWNER, vaulting_request_id, SessionParameters()
        )
        return created.record

    async def submit_card(self, record: VaultingRecord, card_no: str) -> dict[str, Any]:
        """What the buyer does in Antom's card form, via the emulator's buyer endpoint."""
        return await buyer_submits(self.emulator, record.session.session_data, card_no)

    async def set_faults(self, **faults: int) -> None:
        async with self.caller.http.put(
            f"{self.emulator.base_url}/emulator/faults", json=faults
        ) as response:
            assert response.status == 200, await response.text()

    async def attempts(self, vaulting_request_id: str) -> list[dict[str, Any]]:
        """The emulator's notification attempt log for one id, once deliveries are over."""
        await self.emulator.state.notifier.wait_idle()
        async with self.caller.http.get(
            f"{self.emulator.base_url}/emulator/notifications",
            params={"vaultingRequestId": vaulting_request_id},
        ) as response:
            assert response.status == 200
            attempts: list[dict[str, Any]] = (await response.json())["attempts"]
            return attempts

    async def final_record(self, vaulting_request_id: str, within: float = 5.0) -> VaultingRecord:
        """The record once a notification made it final (polls the store)."""
        record: VaultingRecord | None = None

        async def final() -> bool:
            nonlocal record
            record = await self.store.get(vaulting_request_id)
            return record is not None and record.status.is_final

        await eventually(final, within)
        assert record is not None
        return record

    async def snapshot(self, vaulting_request_id: str) -> tuple[object, ...]:
        """Everything a notification could change: the record, the log head, the orphans."""
        return (
            await self.store.get(vaulting_request_id),
            await self.store.last_event_id(),
            await self.store.list_orphans(limit=100),
        )


async def forge(
    caller: WebhookCaller,
    vaulting_request_id: str,
    key: PrivateKey,
    extra_headers: Mapping[str, str] | None = None,
) -> int:
    """Post a well-formed notification signed with ``key`` (not Antom's, so one failed
    authentication), plus ``extra_headers``; the answer's status."""
    body = notification(vaulting_request_id)
    headers = {**caller.headers(body, signer=Signer(key)), **(extra_headers or {})}
    return (await caller.post(body, headers)).status


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Wait until ``check`` holds, failing the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.005)


@pytest.fixture
def antom_verifier(antom_key: PrivateKey, antom_next_key: PrivateKey) -> Verifier:
    """Antom's public keys during a rotation, by keyVersion."""
    return Verifier({"1": antom_key.public_key(), "2": antom_next_key.public_key()})


@pytest.fixture(scope="module")
def foreign_key() -> PrivateKey:
    """A well-formed key that is not Antom's."""
    return PrivateKey.generate()


@pytest.fixture
async def other_source() -> AsyncIterator[aiohttp.ClientSession]:
    """HTTP from another loopback address (127.0.0.2): another source than ``http``'s."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture
def webhook_options() -> dict[str, Any]:
    """Extra ``build_webhook_app`` options of the ``webhook`` fixture (none: the defaults)."""
    return {}


@pytest.fixture
def serve_options() -> dict[str, Any]:
    """Extra ``serve_webhook`` options of the ``webhook`` fixture (none: the defaults)."""
    return {}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


ServeFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(antom_verifier: Verifier) -> AsyncIterator[ServeFactory]:
    """``await serve(sink, **app_options)``: another webhook app on its own port; its URL."""
    servers: list[WebhookServer] = []

    async def start(sink: NotificationSink, **options: Any) -> str:
        sock = bind("127.0.0.1", 0)
        app = build_webhook_app(
            sink,
            path=PATH,
            client_id=CLIENT_ID,
            verifier=antom_verifier,
            **options,
        )
        servers.append(await serve_webhook(app, sock))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server in servers:
        await server.cleanup()


@pytest.fixture
async def webhook(
    make_vaulting: VaultingFactory,
    vault_store: Store,
    emulator: EmulatorServer,
    antom_key: PrivateKey,
    antom_verifier: Verifier,
    webhook_options: dict[str, Any],
    serve_options: dict[str, Any],
    http: aiohttp.ClientSession,
) -> AsyncIterator[Webhook]:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    service = make_vaulting(base_url + PATH)
    app = build_webhook_app(
        service, path=PATH, client_id=CLIENT_ID, verifier=antom_verifier, **webhook_options
    )
    server = await serve_webhook(app, sock, **serve_options)
    try:
        yield Webhook(
            url=base_url + PATH,
            port=port,
            server=server,
            service=service,
            store=vault_store,
            emulator=emulator,
            caller=WebhookCaller(http, base_url, antom_key),
        )
    finally:
        await server.cleanup()


async def raw_exchange(
    port: int, head: bytes, body_parts: tuple[bytes, ...] = (), within: float = 3.0
) -> tuple[str, dict[str, str], bytes]:
    """Write a request by hand (possibly never finishing its body) and read one answer.

    The answer is read by its Content-Length, not to end of stream, so a server that answers
    before the body is complete is observed doing exactly that.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for part in body_parts:
            writer.write(part)
        await writer.drain()
        async with asyncio.timeout(within):
            raw_head = await reader.readuntil(b"\r\n\r\n")
            lines = raw_head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return lines[0], headers, body
