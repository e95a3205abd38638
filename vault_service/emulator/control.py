"""The emulator's own endpoints: the fault plan, call counts, the notification attempt log."""

from __future__ import annotations

import json

from aiohttp import web

from vault_service.emulator.buyer import error_response
from vault_service.emulator.faults import FaultPlan, FaultPlanError
from vault_service.emulator.state import STATE_KEY


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].faults.plan.to_json())


async def put_faults(request: web.Request) -> web.Response:
    """Change the given faults (JSON keys of the plan); faults not named keep their value."""
    faults = request.app[STATE_KEY].faults
    try:
        changes = json.loads(await request.read())
    except ValueError:
        return error_response(400, "INVALID_FAULTS", "the body must be a JSON object")
    if not isinstance(changes, dict):
        return error_response(400, "INVALID_FAULTS", "the body must be a JSON object")
    try:
        plan = faults.update(changes)
    except FaultPlanError as exc:
        return error_response(400, "INVALID_FAULTS", str(exc))
    return web.json_response(plan.to_json())


async def delete_faults(request: web.Request) -> web.Response:
    faults = request.app[STATE_KEY].faults
    faults.set(FaultPlan())
    return web.json_response(faults.plan.to_json())


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response({**state.stats.to_json(), "sessions": len(state.sessions)})


async def get_notifications(request: web.Request) -> web.Response:
    """Every notification attempt so far, oldest first, optionally for one request id."""
    notifier = request.app[STATE_KEY].notifier
    attempts = notifier.attempts(request.query.get("vaultingRequestId"))
    return web.json_response({"attempts": [attempt.to_json() for attempt in attempts]})
