"""GET /metrics: the Prometheus scrape endpoint.

Open like /health: Prometheus scrapes without credentials, and label values come from the
config only (no keys, prompts or client input). Rendering merges files when several
workers serve, so it runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.state import AppState


async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    if state.metrics.multiprocess_dir is None:
        body, content_type = state.metrics.render()
    else:
        body, content_type = await asyncio.to_thread(state.metrics.render)
    return Response(body, media_type=content_type)
