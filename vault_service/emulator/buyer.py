"""The buyer's side, standing in for Antom's front-end card component.

``POST /emulator/buyer/submit`` takes what the buyer types into Antom's card form, with the
session's ``sessionData``, and answers with the component's event code. ``GET /emulator/buyer``
serves a minimal card form for a session (the session's ``normalUrl``) for manual testing.
Card data is checked and reduced to Antom's card details at once; nothing logs it.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import datetime
from typing import Final

from aiohttp import web

from vault_service.emulator.cards import TEST_CARDS, CardRejectedError, read_card
from vault_service.emulator.sessions import Phase, Session
from vault_service.emulator.state import STATE_KEY
from vault_service.emulator.wire import ANTOM_TZ

log = logging.getLogger(__name__)

_EVENT_CODES: Final = {
    Phase.VERIFYING: "SDK_ASSET_BINDING_PROCESSING",
    Phase.SUCCEEDED: "SDK_ASSET_BINDING_SUCCESSFUL",
    Phase.FAILED: "SDK_ASSET_BINDING_FAIL",
}
_VAULTING_STATUS: Final = {
    Phase.VERIFYING: "PROCESSING",
    Phase.SUCCEEDED: "SUCCESS",
    Phase.FAILED: "FAIL",
}
_MAX_SUBMISSION_BYTES: Final = 16 * 1024


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def handle_submit(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = await request.read()
    if len(body) > _MAX_SUBMISSION_BYTES:
        return error_response(413, "INVALID_REQUEST", "the submission is too large")
    try:
        submission = json.loads(body.decode("utf-8"))
    except ValueError:
        return error_response(400, "INVALID_REQUEST", "the body must be a UTF-8 JSON object")
    if not isinstance(submission, dict):
        return error_response(400, "INVALID_REQUEST", "the body must be a UTF-8 JSON object")
    session_data = submission.get("sessionData")
    if not isinstance(session_data, str) or not session_data:
        return error_response(400, "INVALID_REQUEST", "sessionData is required")
    session = state.sessions.by_session_data(session_data)
    if session is None:
        return error_response(
            404, "SESSION_NOT_FOUND", "sessionData does not belong to any vaulting session"
        )
    refusal = _closed(session)
    if refusal is not None:
        return refusal
    try:
        verdict = read_card(
            submission,
            today=datetime.fromtimestamp(state.clock(), ANTOM_TZ).date(),
            fingerprint_secret=state.fingerprint_secret,
        )
    except CardRejectedError as exc:
        return error_response(exc.status, exc.code, exc.message)
    state.sessions.submit(session, verdict)
    log.info(
        "buyer submit vaultingRequestId=%s vaultingResultCode=%s",
        session.vaulting_request_id,
        session.result_code,
    )
    answer: dict[str, object] = {
        "code": _EVENT_CODES[session.phase],
        "message": session.result_message,
        "vaultingRequestId": session.vaulting_request_id,
        "vaultingStatus": _VAULTING_STATUS[session.phase],
        "vaultingResultCode": session.result_code,
    }
    if session.params.redirect_url is not None:
        answer["redirectUrl"] = session.params.redirect_url
    return web.json_response(answer)


def _closed(session: Session) -> web.Response | None:
    """Why the session takes no card any more, or None while it still does."""
    if session.closed_by_expiry:
        return error_response(410, "SESSION_EXPIRED", "the vaulting session has expired")
    if session.final:
        return error_response(
            409, "SESSION_FINISHED", "the vaulting session already has its final result"
        )
    if session.phase is Phase.VERIFYING:
        return error_response(
            409, "SESSION_IN_PROGRESS", "a card was already submitted; 3-D Secure is pending"
        )
    return None


async def handle_page(request: web.Request) -> web.Response:
    """A bare card form for one session, for trying the flow by hand in a browser."""
    state = request.app[STATE_KEY]
    session = state.sessions.by_session_id(request.query.get("vaultingSessionId", ""))
    if session is None:
        return error_response(404, "SESSION_NOT_FOUND", "no vaulting session has this id")
    cards = "".join(
        f"<li><code>{card.number}</code> {html.escape(card.brand)}: "
        f"{html.escape(card.description)}</li>"
        for card in TEST_CARDS.values()
    )
    session_data = html.escape(json.dumps(session.session_data))
    return web.Response(
        content_type="text/html",
        text=_PAGE.format(
            request_id=html.escape(session.vaulting_request_id),
            cards=cards,
            session_data=session_data,
        ),
    )


_PAGE: Final = """<!doctype html>
<html><head><meta charset="utf-8"><title>Antom emulator: save a card</title></head>
<body>
<h1>Save a card</h1>
<p>vaultingRequestId <code>{request_id}</code></p>
<form id="card">
<p><input name="cardNo" placeholder="card number" required></p>
<p><input name="expiryMonth" placeholder="MM" size="2" required>
<input name="expiryYear" placeholder="YY" size="4" required>
<input name="cvv" placeholder="CVV" size="4" required></p>
<p><input name="cardholderName" placeholder="name on card" required></p>
<p><button>Save card</button></p>
</form>
<pre id="answer"></pre>
<p>Test cards (any future expiry, any CVV):</p><ul>{cards}</ul>
<script data-session="{session_data}">
const sessionData = JSON.parse(document.currentScript.dataset.session);
document.getElementById("card").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const fields = Object.fromEntries(new FormData(event.target));
  const reply = await fetch("/emulator/buyer/submit", {{
    method: "POST",
    headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{...fields, sessionData}}),
  }});
  document.getElementById("answer").textContent = JSON.stringify(await reply.json(), null, 2);
}});
</script>
</body></html>
"""
