"""GET /v1/models: the names clients may send as `model` (routes and canonical model ids)."""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.state import AppState
from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.errors import model_not_found


def model_entries(snapshot: ConfigSnapshot) -> list[dict]:
    created = int(snapshot.loaded_at)
    entries = [{"id": name, "object": "model", "created": created, "owned_by": "gateway"} for name in snapshot.routes]
    for model_id, offers in sorted(snapshot.offers.items()):
        best = max(o.spec.context_length for o in offers)
        entries.append(
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": model_id.split("/", 1)[0],
                "context_length": best,
                "providers": sorted(o.backend for o in offers),
            }
        )
    return entries


def register(app: FastAPI) -> None:
    async def list_models(request: Request) -> Response:
        state: AppState = request.app.state.gateway
        state.auth.authenticate(request)
        body = {"object": "list", "data": model_entries(state.config.current)}
        return Response(orjson.dumps(body), media_type="application/json")

    async def get_model(request: Request) -> Response:
        state: AppState = request.app.state.gateway
        state.auth.authenticate(request)
        wanted = request.path_params["model_id"]
        for entry in model_entries(state.config.current):
            if entry["id"] == wanted:
                return Response(orjson.dumps(entry), media_type="application/json")
        raise model_not_found(wanted)

    app.router.add_route("/v1/models", list_models, methods=["GET"])
    app.router.add_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
