"""The emulator's aiohttp application: Antom's API under ``/ams``, the rest under ``/emulator``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from vault_service.emulator import buyer, control
from vault_service.emulator.gateway import handle_api
from vault_service.emulator.state import BUYER_PAGE_PATH, STATE_KEY, EmulatorState


def build_app(state: EmulatorState) -> web.Application:
    """The application serving ``state``; its startup/cleanup start and stop deliveries."""
    app = web.Application()
    app[STATE_KEY] = state
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_route("*", "/ams/{tail:.*}", handle_api)
    app.router.add_post(f"{BUYER_PAGE_PATH}/submit", buyer.handle_submit)
    app.router.add_get(BUYER_PAGE_PATH, buyer.handle_page)
    app.router.add_get("/emulator/faults", control.get_faults)
    app.router.add_put("/emulator/faults", control.put_faults)
    app.router.add_delete("/emulator/faults", control.delete_faults)
    app.router.add_get("/emulator/stats", control.get_stats)
    app.router.add_get("/emulator/notifications", control.get_notifications)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE_KEY]
    await state.start()
    try:
        yield
    finally:
        await state.aclose()
