"""Phase 4: signed notifyVaulting POSTs straight to the webhook, counted as stored afterwards.

Each notification is for a session the unary phase created and that has no result yet, so
each is one SQLite write transaction; the same notifications again are Antom's retries
(recognised, nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.antom import Signer, read_private_key_file
from vault_service.config import DEFAULT_NOTIFY_PATH
from vault_service.webhook import ACKNOWLEDGEMENT

from .measure import Meter, drive, pct, settle
from .processes import CLIENT_ID, Emulator, Service
from .report import Report, add_row, ms
from .streams import Streams

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub


def notification(request_id: str, now: float) -> bytes:
    """A successful notifyVaulting body shaped like the emulator's (and Antom's samples)."""
    card = {
        "cardToken": f"ALIPAY{request_id:0>40}",
        "brand": "VISA",
        "maskedCardNo": "************1111",
        "bin": "411111",
        "lastFour": "1111",
        "expiryMonth": "12",
        "expiryYear": "39",
        "funding": "CREDIT",
        "issuingCountry": "US",
        "issuerName": "EMULATOR BANK",
        "cardholderName": {"fullName": "Bench Buyer"},
        "fingerprint": "0" * 64,
    }
    document = {
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
        "vaultingRequestId": request_id,
        "paymentMethodDetail": {"paymentMethodType": "CARD", "card": card},
        "vaultingCreateTime": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def signed_notifications(signer: Signer, ids: list[str]) -> list[tuple[dict[str, str], bytes]]:
    """Signed before the timed window, so the bench's RSA work is not part of it."""
    signed = []
    for request_id in ids:
        body = notification(request_id, time.time())
        request_time = str(int(time.time() * 1000))
        headers = {
            "client-id": CLIENT_ID,
            "request-time": request_time,
            "signature": signer.sign("POST", DEFAULT_NOTIFY_PATH, CLIENT_ID, request_time, body),
            "Content-Type": "application/json; charset=UTF-8",
        }
        signed.append((headers, body))
    return signed


def notification_events(database: Path) -> int:
    uri = f"{database.absolute().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        count: int = connection.execute(
            "SELECT count(*) FROM events WHERE source = 'NOTIFICATION'"
        ).fetchone()[0]
    return count


async def webhook_phase(
    args: argparse.Namespace,
    svc: Service,
    emu: Emulator,
    ids: list[str],
    stubs: list[VaultServiceAsyncStub],
    meter: Meter,
    report: Report,
) -> None:
    """``--notifications`` for sessions without a result, the same again (Antom's retries),
    and, unless ``--webhook-streams`` is 0, as many again for other sessions while that many
    streams filtered to other vaulting requests are open (no stream gets an event)."""
    rows = report.table(
        "### Webhook: signed notifyVaulting POSTs",
        [
            "notifications",
            "streams open",
            "concurrency",
            "acknowledged",
            "notifications/s",
            "p50 ms",
            "p99 ms",
            "service CPU µs/notification",
            "bench CPU µs/notification",
            "new events stored",
            "SQLite write commits/s",
            "cores busy (others)",
        ],
    )
    count = args.notifications
    signer = Signer(read_private_key_file(emu.dev_dir / "antom-private-key.pem"))
    first = signed_notifications(signer, ids[:count])
    runs = [
        ("first delivery (state changes)", first, 0),
        ("replayed (already final)", first, 0),
    ]
    if args.webhook_streams:
        others = signed_notifications(signer, ids[count : 2 * count])
        runs.append(("first delivery (state changes)", others, args.webhook_streams))
    url = f"http://127.0.0.1:{svc.http_port}{DEFAULT_NOTIFY_PATH}"
    connector = aiohttp.TCPConnector(limit=args.notify_concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:
        for label, signed, open_streams in runs:
            acknowledged = 0

            async def post(n: int, signed: list[tuple[dict[str, str], bytes]] = signed) -> None:
                nonlocal acknowledged
                headers, body = signed[n]
                async with http.post(url, data=body, headers=headers) as answer:
                    if answer.status == 200 and await answer.read() == ACKNOWLEDGEMENT:
                        acknowledged += 1

            streams = Streams(stubs, args.open_timeout, svc.access.metadata)
            await streams.open(
                [
                    pb.StreamResultsRequest(vaulting_request_ids=[f"else-{n}"])
                    for n in range(open_streams)
                ]
            )
            if len(streams.calls) != open_streams:
                raise RuntimeError(f"streams refused: {dict(streams.refused)}")
            await settle()
            stored_before = notification_events(svc.database)
            run = await drive(meter, len(signed), args.notify_concurrency, post)
            stored = notification_events(svc.database) - stored_before
            await streams.close()
            add_row(
                rows,
                label,
                f"{open_streams:,}",
                args.notify_concurrency,
                f"{acknowledged:,} / {len(signed):,}",
                f"{run.rate:,.0f}",
                ms(pct(run.latencies, 50)),
                ms(pct(run.latencies, 99)),
                run.cpu_us("service"),
                run.cpu_us("bench"),
                f"{stored:,}",
                f"{stored / run.wall:,.0f}",
                run.others(),
            )
