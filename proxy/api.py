"""The gateway's HTTP side: health and metrics now, the approvals and audit API later."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


def make_app(health: Callable[[], dict[str, object]]) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **health()})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app
