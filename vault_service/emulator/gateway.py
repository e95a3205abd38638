"""Antom's API gateway: authenticate the caller, apply faults, answer signed JSON.

Checks run in Antom's order: ``client-id`` must name the configured client, ``request-time``
must be present, the signature must verify over the path as received and the raw body bytes;
only then is the body parsed. Failures before the caller is authenticated go out unsigned, in
the exact form Antom's Python SDK tolerates (``signature=`` empty, ``response-time`` empty);
every other answer — ``S``, business ``F``, ``U`` — is signed. Business failures use HTTP 200,
as Antom does; only the injected outage uses a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiohttp import web

from vault_service.antom import SignatureError
from vault_service.emulator.faults import Counter
from vault_service.emulator.messages import UNKNOWN_EXCEPTION_MESSAGE, Answer, failure
from vault_service.emulator.operations import OPERATIONS
from vault_service.emulator.params import (
    ParamIllegalError,
    parse_document,
    peek_vaulting_request_id,
)
from vault_service.emulator.state import STATE_KEY, EmulatorState
from vault_service.emulator.wire import JSON_CONTENT_TYPE, antom_time, is_request_time, signed_path

log = logging.getLogger(__name__)

API_PATHS: Final = {
    f"/ams/{prefix}/v1/vaults/{operation}": operation
    for prefix in ("api", "sandbox/api")
    for operation in OPERATIONS
}
CLIENT_INVALID: Final = "CLIENT_INVALID"
UNSIGNED_SIGNATURE: Final = "algorithm=RSA256,keyVersion=1,signature="
_OUTAGE_PAGE: Final = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head>"
    "<body><h1>503 Service Temporarily Unavailable</h1></body></html>"
)


async def handle_api(request: web.Request) -> web.Response:
    """Every request under ``/ams``: the two vaulting operations, or a routing failure."""
    state = request.app[STATE_KEY]
    path = signed_path(request.raw_path)
    body = await request.read()
    operation = API_PATHS.get(path.partition("?")[0])
    request_id = peek_vaulting_request_id(body)
    if operation is not None and request.method == "POST":
        state.stats.record_call(operation, request_id)
    if state.faults.latency_seconds:
        await asyncio.sleep(state.faults.latency_seconds)
    if operation is None:
        response, code = _signed(state, request.method, path, _no_interface(path))
    elif request.method != "POST":
        answer = failure("METHOD_NOT_SUPPORTED", f"{request.method} is not supported; use POST.")
        response, code = _signed(state, request.method, path, answer)
    else:
        response, code = _call(state, request, operation, path, body)
        state.stats.record_result(operation, code)
    log.info("%s vaultingRequestId=%s resultCode=%s", operation or path, request_id or "-", code)
    return response


def _call(
    state: EmulatorState, request: web.Request, operation: str, path: str, body: bytes
) -> tuple[web.Response, str]:
    if state.faults.take(Counter.HTTP_5XX):
        outage = web.Response(status=503, text=_OUTAGE_PAGE, content_type="text/html")
        return outage, "HTTP_503"
    rejection = _authenticate(state, request, path, body)
    if rejection is not None:
        return _unsigned(state, rejection), rejection.result_code
    if state.faults.take(Counter.UNKNOWN_RESULT):
        answer = failure("UNKNOWN_EXCEPTION", UNKNOWN_EXCEPTION_MESSAGE, status="U")
    else:
        try:
            answer = OPERATIONS[operation](state, parse_document(body))
        except ParamIllegalError as exc:
            answer = failure("PARAM_ILLEGAL", str(exc))
    return _signed(state, "POST", path, answer)


def _authenticate(
    state: EmulatorState, request: web.Request, path: str, body: bytes
) -> Answer | None:
    """The gateway's rejection of an unauthenticated caller, or None when the caller is known."""
    client_id = request.headers.get("client-id")
    if client_id != state.config.client_id:
        return failure(CLIENT_INVALID, "The client-id header does not name a known client.")
    request_time = request.headers.get("request-time", "")
    if not request_time:
        return failure("PARAM_ILLEGAL", "request-time header is required")
    if not is_request_time(request_time):
        return failure(
            "PARAM_ILLEGAL", "request-time must be epoch milliseconds or ISO-8601 with an offset"
        )
    try:
        state.verifier.verify(
            request.headers.get("signature"),
            method="POST",
            path=path,
            client_id=client_id,
            time=request_time,
            body=body,
        )
    except SignatureError as exc:
        return failure("INVALID_SIGNATURE", f"The signature is invalid: {exc}")
    return None


def _no_interface(path: str) -> Answer:
    return failure("NO_INTERFACE_DEF", f"No API is defined at {path}.")


def _signed(
    state: EmulatorState, method: str, path: str, answer: Answer
) -> tuple[web.Response, str]:
    """Sign over ``<method> <path>\\n<client-id>.<response-time>.<body>``, as Antom does.

    Under the bad-signature fault the signature is genuine but covers a different body, so it
    parses and decodes like any other and only verification fails.
    """
    client_id = state.config.client_id
    response_time = antom_time(state.clock())
    covered = answer.body + b" " if state.faults.take(Counter.BAD_SIGNATURE) else answer.body
    signature = state.signer.sign(method, path, client_id, response_time, covered)
    return _json_response(answer.body, client_id, response_time, signature), answer.result_code


def _unsigned(state: EmulatorState, answer: Answer) -> web.Response:
    return _json_response(answer.body, state.config.client_id, "", UNSIGNED_SIGNATURE)


def _json_response(body: bytes, client_id: str, response_time: str, signature: str) -> web.Response:
    """Header names go out lowercase exactly as written: the Python SDK matches them so."""
    return web.Response(
        body=body,
        headers={
            "client-id": client_id,
            "response-time": response_time,
            "signature": signature,
            "Content-Type": JSON_CONTENT_TYPE,
        },
    )
