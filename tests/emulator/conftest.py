"""Fixtures for emulator tests: a running emulator, a signing caller, a webhook receiver.

The key pairs ``antom_key`` and ``merchant_key`` come from the suite-wide
``tests.fixtures.rsa_keys``.
``emulator_server`` differs from the suite-wide ``emulator`` on purpose: it runs 10x faster still
and stops before the test's webhook receiver, so no delivery outlives its target.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from vault_service.antom import PrivateKey, Signer, Verifier
from vault_service.emulator import ACKNOWLEDGEMENT, EmulatorConfig, EmulatorServer

SANDBOX_API = "/ams/sandbox/api/v1/vaults"
PROD_API = "/ams/api/v1/vaults"
CREATE = f"{SANDBOX_API}/createVaultingSession"
INQUIRE = f"{SANDBOX_API}/inquireVaulting"
CLIENT_ID = "SANDBOX_VAULTDEV0001"
VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
DECLINED = "4000000000000002"
THREE_DS = "4000000000003220"
TEST_TIME_SCALE = 1e-4


ConfigFactory = Callable[..., EmulatorConfig]


@pytest.fixture
def make_config(antom_key: PrivateKey, merchant_key: PrivateKey) -> ConfigFactory:
    def make(**overrides: Any) -> EmulatorConfig:
        settings: dict[str, Any] = {
            "antom_private_key": antom_key,
            "merchant_public_key": merchant_key.public_key(),
            "client_id": CLIENT_ID,
            "time_scale": TEST_TIME_SCALE,
            "notification_timeout": 2.0,
        }
        settings.update(overrides)
        return EmulatorConfig(**settings)

    return make


@pytest.fixture
async def emulator_server(
    make_config: ConfigFactory, receiver: Receiver
) -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(make_config()) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def result(self) -> dict[str, str]:
        result: dict[str, str] = self.json()["result"]
        return result


class Api:
    """Calls the emulator the way an Antom SDK does, signing with the merchant key."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        emulator: EmulatorServer,
        merchant_key: PrivateKey,
    ) -> None:
        self.http = http
        self.emulator = emulator
        self.signer = Signer(merchant_key)
        self.verifier = Verifier(emulator.antom_public_key)
        self.client_id = emulator.config.client_id

    @property
    def base_url(self) -> str:
        return self.emulator.base_url

    async def call(
        self,
        path: str,
        document: Mapping[str, object] | bytes,
        *,
        client_id: str | None = None,
        request_time: str = "1716000000000",
        sign_path: str | None = None,
        signature: str | None = None,
        tamper: Callable[[bytes], bytes] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Reply:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        cid = self.client_id if client_id is None else client_id
        if signature is None:
            signature = self.signer.sign("POST", sign_path or path, cid, request_time, body)
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "client-id": cid,
            "Request-Time": request_time,
            "Signature": signature,
            **(extra_headers or {}),
        }
        sent = tamper(body) if tamper else body
        async with self.http.post(self.base_url + path, data=sent, headers=headers) as response:
            return Reply(
                response.status, response.headers, response.raw_headers, await response.read()
            )

    def verify(self, reply: Reply, path: str) -> None:
        """Verify the answer's signature exactly as an SDK does (raises on failure)."""
        self.verifier.verify(
            reply.headers["signature"],
            method="POST",
            path=path,
            client_id=reply.headers["client-id"],
            time=reply.headers["response-time"],
            body=reply.body,
        )

    async def create(self, request_id: str, notify_url: str, **fields: object) -> dict[str, Any]:
        document = {
            "paymentMethodType": "CARD",
            "vaultingRequestId": request_id,
            "vaultingNotificationUrl": notify_url,
            **fields,
        }
        reply = await self.call(CREATE, document)
        assert reply.status == 200
        self.verify(reply, CREATE)
        answer: dict[str, Any] = reply.json()
        assert answer["result"]["resultStatus"] == "S", answer
        return answer

    async def inquire(self, request_id: str) -> dict[str, Any]:
        reply = await self.call(INQUIRE, {"vaultingRequestId": request_id})
        assert reply.status == 200
        self.verify(reply, INQUIRE)
        answer: dict[str, Any] = reply.json()
        return answer

    async def submit(self, session_data: str, card_no: str = VISA, **fields: object) -> Reply:
        document: dict[str, object] = {
            "sessionData": session_data,
            "cardNo": card_no,
            "expiryMonth": "12",
            "expiryYear": "39",
            "cvv": "737",
            "cardholderName": "Ada Lovelace",
            **fields,
        }
        async with self.http.post(
            self.base_url + "/emulator/buyer/submit", json=document
        ) as response:
            return Reply(
                response.status, response.headers, response.raw_headers, await response.read()
            )

    async def get_json(self, path: str) -> Any:
        async with self.http.get(self.base_url + path) as response:
            assert response.status == 200
            return await response.json()

    async def put_faults(self, changes: Mapping[str, object]) -> Any:
        async with self.http.put(self.base_url + "/emulator/faults", json=changes) as response:
            assert response.status == 200, await response.text()
            return await response.json()


@pytest.fixture
def api(
    http: aiohttp.ClientSession, emulator_server: EmulatorServer, merchant_key: PrivateKey
) -> Api:
    return Api(http, emulator_server, merchant_key)


ApiFactory = Callable[[EmulatorServer], Api]


@pytest.fixture
def make_api(http: aiohttp.ClientSession, merchant_key: PrivateKey) -> ApiFactory:
    return lambda server: Api(http, server, merchant_key)


@dataclass(frozen=True)
class Received:
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


ACK_BODY = json.dumps(ACKNOWLEDGEMENT).encode()


@dataclass
class Receiver:
    """A merchant webhook: records every request and answers from a script, then with an ack."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    replies: deque[tuple[int, bytes]] = field(default_factory=deque)
    default_reply: tuple[int, bytes] = (200, ACK_BODY)
    delay: float = 0.0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/antom/notify") -> str:
        return self.base_url + path

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            Received(request.path, request.query_string, request.headers, request.raw_headers, body)
        )
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        status, body = self.replies.popleft() if self.replies else self.default_reply
        return web.Response(status=status, body=body, content_type="application/json")

    async def wait_for(self, count: int, within: float = 5.0) -> list[Received]:
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.base_url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 5.0, step: float = 0.005
) -> None:
    """Wait until ``check`` holds (polling), failing the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(step)


async def raw_exchange(host: str, port: int, request: bytes) -> tuple[str, list[str], bytes]:
    """Send raw bytes, read the raw answer: status line, header lines as sent, body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], lines[1:], body
