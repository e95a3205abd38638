"""JSON-lines bridge to the official Antom Python SDK (``global-open-sdk-python==1.7.1``).

Runs under the SDK's own virtualenv (``.venv-antom-sdk``, which pins ``cryptography==44.0.3``),
never under the project's: it imports nothing from ``vault_service`` or ``tests``.

Protocol: one JSON object per line on stdin, ``{"id": <any>, "op": <name>, ...arguments}``; one
JSON object per line on stdout, ``{"id": <same>, "result": <value>}`` or
``{"id": <same>, "error": "<ExceptionType>: <message>"}``. A request that fails, including a line
that is not JSON, gets an error line; the worker itself only stops at end of input.

Every op calls the SDK's own code; nothing of the SDK's behaviour is re-implemented here.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from importlib import metadata
from typing import Any

from com.alipay.ams.api import default_alipay_client
from com.alipay.ams.api.default_alipay_client import DefaultAlipayClient
from com.alipay.ams.api.request_transport_resolver import allows_unsigned_response
from com.alipay.ams.api.tools import date_tools, signature_tool, webhook_tool

# The SDK's request classes for the vaulting operations (module path, class name).
_REQUESTS = {
    "createVaultingSession": (
        "com.alipay.ams.api.request.pay.alipay_vaulting_session_request",
        "AlipayVaultingSessionRequest",
    ),
    "vaultPaymentMethod": (
        "com.alipay.ams.api.request.pay.alipay_vaulting_payment_method_request",
        "AlipayVaultingPaymentMethodRequest",
    ),
    "inquireVaulting": (
        "com.alipay.ams.api.request.pay.alipay_vaulting_query_request",
        "AlipayVaultingQueryRequest",
    ),
    "fetchNonce": (
        "com.alipay.ams.api.request.pay.alipay_vaults_fetch_nonce_request",
        "AlipayVaultsFetchNonceRequest",
    ),
}


class _Captured(Exception):
    """Raised by the stand-in for ``do_post`` to stop ``execute`` once the request is built."""

    def __init__(self, url: str, headers: dict[str, str], body: str) -> None:
        super().__init__("captured")
        self.url = url
        self.headers = headers
        self.body = body


def op_versions() -> dict[str, str]:
    return {
        "sdk": metadata.version("global-open-sdk-python"),
        "cryptography": metadata.version("cryptography"),
        "rsa": metadata.version("rsa"),
        "python": sys.version.split()[0],
    }


def op_sign(method: str, path: str, client_id: str, time: str, body: str, private_key: str) -> str:
    """``signature_tool.sign``: the URL-encoded base64 signature (what follows ``signature=``)."""
    return signature_tool.sign(method, path, client_id, time, body, private_key)


def op_verify(
    method: str,
    path: str,
    client_id: str,
    time: str,
    body: str,
    signature: str,
    public_key: str,
) -> bool:
    """``signature_tool.verify``; ``signature`` is the part after ``signature=``."""
    return signature_tool.verify(method, path, client_id, time, body, signature, public_key)


def op_check_signature(
    method: str,
    path: str,
    client_id: str,
    time: str,
    body: str,
    header: str,
    public_key: str,
) -> bool:
    """``webhook_tool.check_signature``, which takes the whole ``Signature`` header value."""
    return webhook_tool.check_signature(method, path, client_id, time, body, header, public_key)


def op_verify_response(
    method: str,
    path: str,
    headers: list[list[str]],
    body: str,
    public_key: str,
    client_id: str = "SANDBOX_UNUSED",
) -> dict[str, Any]:
    """The response checks of ``DefaultAlipayClient.execute``, in its order, on a given answer.

    ``headers`` are (name, value) pairs as ``http.client``'s ``getheaders()`` returns them;
    ``client_id`` is the client's own (execute replaces it with the response header's value).
    """
    client = DefaultAlipayClient("https://unused.invalid", client_id, None, public_key)
    if allows_unsigned_response(method, path):
        return {"accepted": True, "unsigned_route": True}
    signature, response_time, response_client_id = client._DefaultAlipayClient__parse_header(
        [(name, value) for name, value in headers]
    )
    client._DefaultAlipayClient__assert_response_verified(
        method, path, response_client_id, response_time, body, signature
    )
    return {"accepted": True, "unsigned_route": False}


def op_build_request(
    operation: str,
    fields: dict[str, Any],
    client_id: str,
    private_key: str,
    gateway_url: str = "https://open-sea-global.alipay.com",
    now: float | None = None,
    key_version: str | None = None,
    agent_token: str | None = None,
) -> dict[str, Any]:
    """What ``DefaultAlipayClient.execute`` sends for ``operation`` with ``fields`` (camelCase).

    The request object is filled by the SDK's own ``parse_rsp_body`` and sent through the real
    ``execute``; only the network call is replaced (it captures and stops) and, when ``now`` is
    given, the clock read by ``get_cur_iso8601_time``.
    """
    module_name, class_name = _REQUESTS[operation]
    request = getattr(importlib.import_module(module_name), class_name)()
    request.parse_rsp_body(fields)
    if key_version is not None:
        request.key_version = key_version
    client = DefaultAlipayClient(gateway_url, client_id, private_key, None, agent_token)

    def capture(url: str, headers: dict[str, str], req_body: str, *_: object) -> None:
        raise _Captured(url, dict(headers), req_body)

    real_post, real_time = default_alipay_client.do_post, date_tools.time
    default_alipay_client.do_post = capture
    if now is not None:
        date_tools.time = types.SimpleNamespace(time=lambda: now)
    try:
        client.execute(request)
    except _Captured as sent:
        captured = sent
    else:
        raise RuntimeError("execute returned without sending anything")
    finally:
        default_alipay_client.do_post, date_tools.time = real_post, real_time
    return {
        "url": captured.url,
        "path": request.path,
        "headers": captured.headers,
        "body": captured.body,
        "request_time": captured.headers["Request-Time"],
        "signature": captured.headers["Signature"],
    }


_OPS = {
    "versions": op_versions,
    "sign": op_sign,
    "verify": op_verify,
    "check_signature": op_check_signature,
    "verify_response": op_verify_response,
    "build_request": op_build_request,
}


def handle(line: str) -> dict[str, Any]:
    request_id: Any = None
    try:
        message = json.loads(line)
        if not isinstance(message, dict):
            raise TypeError("a request must be a JSON object")
        request_id = message.pop("id", None)
        name = message.pop("op", None)
        if name not in _OPS:
            raise LookupError(f"unknown op {name!r}; known: {', '.join(sorted(_OPS))}")
        op = _OPS[name]
        return {"id": request_id, "result": op(**message)}
    except Exception as exc:  # every failure becomes an answer; the worker keeps running
        return {"id": request_id, "error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    with open(
        sys.stdin.fileno(), encoding="utf-8", errors="surrogateescape", closefd=False
    ) as stdin:
        for line in stdin:  # exactly one answer per line, blank or not
            # ensure_ascii keeps the output channel pure ASCII whatever the bodies contain.
            sys.stdout.write(json.dumps(handle(line), ensure_ascii=True) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
