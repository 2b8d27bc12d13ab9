"""Operational endpoints: liveness, readiness, config status and reload."""

from __future__ import annotations

import os
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.state import AppState


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def config_status(state: AppState) -> dict[str, Any]:
    snapshot = state.config.current
    status = state.config.status
    return {
        "config": {
            "source": snapshot.source,
            "version": snapshot.version,
            "loaded_at": snapshot.loaded_at,
            "warnings": list(snapshot.warnings),
            "reloads_ok": status.ok,
            "reloads_failed": status.failed,
            "last_reload_attempt_at": status.last_attempt_at,
            "last_reload_error": status.last_error or None,
        },
        "backends": {name: {"type": b.type, "models": sorted(b.models)} for name, b in snapshot.backends.items()},
        "routes": sorted(snapshot.routes),
        "worker_pid": os.getpid(),  # with --workers N, each worker answers for itself
        "circuits": [
            {"backend": c.backend, "model": c.model, "state": c.state}
            for c in (state.stats.circuit_states() if state.stats is not None else [])
        ],
    }


async def health(request: Request) -> Response:
    return _json({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness, beside `/health`'s liveness: whether this process can serve requests. Not
    before its key directory has loaded once when the keys are in a store (a replica started
    while Redis is down answers every key but the static ones with a 503 `key_store_unavailable`,
    while replicas that had loaded them serve from their copy): a load balancer sends it
    nothing meanwhile, and a restart would not help, so `/health` still answers."""
    state: AppState = request.app.state.gateway
    directory = state.auth.directory
    if directory is not None and not directory.loaded:
        return _json({"status": "not_ready", "reason": "The key store has not answered yet."}, 503)
    return _json({"status": "ready"})


async def status(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    state.auth.authenticate_admin(request)
    return _json(config_status(state))


async def reload(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    state.auth.authenticate_admin(request)
    swapped = await state.config.reload_async(force=True)
    body = config_status(state)
    body["reloaded"] = swapped
    return _json(body, 200 if swapped else 422)
