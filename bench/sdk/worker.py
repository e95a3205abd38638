"""Load generator inside the official SDK's virtualenv (``.venv-antom-sdk``): vaulting sessions
created with ``DefaultAlipayClient.execute()`` from a pool of threads, as a team embedding the
SDK would.

It imports nothing from ``vault_service`` (the SDK's venv pins its own ``cryptography``).
Started by ``python -m bench.sdk`` with one JSON argument (gateway, client id, keys in the
SDK's bare base64 forms); then, per line on stdin ``{"prefix", "calls", "threads"}``, it runs
``calls`` calls on ``threads`` threads and answers one JSON line ``{"calls", "wall",
"errors"}``. The parent reads this process's CPU from ``/proc`` around each line, so start-up
and imports stay out of the figures. The SDK trusts the CA bundle named by ``SSL_CERT_FILE``
(``ssl.create_default_context()``) and always connects to port 443.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from com.alipay.ams.api.default_alipay_client import DefaultAlipayClient
from com.alipay.ams.api.request.pay.alipay_vaulting_session_request import (
    AlipayVaultingSessionRequest,
)


def run(client: DefaultAlipayClient, notify_url: str, line: dict[str, Any]) -> dict[str, Any]:
    prefix, calls, threads = line["prefix"], int(line["calls"]), int(line["threads"])
    counter = iter(range(calls))
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            request = AlipayVaultingSessionRequest()
            request.parse_rsp_body(
                {
                    "vaultingRequestId": f"{prefix}-{n}",
                    "vaultingNotificationUrl": notify_url,
                    "paymentMethodType": "CARD",
                }
            )
            try:
                result = json.loads(client.execute(request))["result"]
            except Exception as exc:  # counted and reported: the run must have none
                result = {"resultStatus": "F", "resultCode": f"{type(exc).__name__}: {exc}"}
            if result["resultStatus"] != "S":
                with lock:
                    errors.append(result["resultCode"])

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(worker)
    return {"calls": calls, "wall": time.perf_counter() - began, "errors": errors[:5]}


def main() -> None:
    settings = json.loads(sys.argv[1])
    client = DefaultAlipayClient(
        settings["gateway"],
        settings["client_id"],
        settings["merchant_private_key"],
        settings["antom_public_key"],
    )
    for text in sys.stdin:
        print(json.dumps(run(client, settings["notify_url"], json.loads(text))), flush=True)


if __name__ == "__main__":
    main()
