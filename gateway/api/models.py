"""GET /v1/models: the names clients may send as `model` (routes and canonical model ids), and
what each serves.

Two shapes, as the two SDK families expect them:
- OpenAI's list (`object: "list"`, entries `id`, `object: "model"`, `created`, `owned_by`),
  each entry with the gateway's own fields beside: `kind` (`chat` or `embedding`) and
  `endpoints` (the APIs that can be called with it: chat models answer chat, messages and
  responses, translated through chat where a backend lacks the API, and completions where one
  of its backends serves `/completions` natively; embedding models answer embeddings only);
- with an `anthropic-version` header (Anthropic's SDKs always send one), Anthropic's list:
  `data` of `{type: "model", id, display_name, created_at}` (`created_at` the epoch, Anthropic's
  value for an unknown release date; `max_input_tokens` and `max_tokens` where the offers say
  them), `has_more`, `first_id`,
  `last_id`, paged by `limit` (default 20, 1-1000), `after_id` and `before_id`, and filtered
  by `lifecycle` (`active`, `deprecated`, `retired`). It lists what `/v1/messages` can serve
  (no embedding models), every one `lifecycle: "active"` (what the gateway routes can be
  called), and its errors are Anthropic-shaped.

A virtual key restricted to some models (`--models`) sees only what it may call: the names
its globs match, as `check_models` admits them (a model reachable only through an allowed
route is called through the route, so only the route is listed); `GET /v1/models/{id}`
answers 404 for the others, as OpenAI does for a model an organisation cannot use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.anthropic_answers import anthropic_answer, anthropic_error_response
from gateway.api.state import AppState
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.errors import GatewayError, echoed, invalid_request, model_not_found
from gateway.routing.resolve import resolve
from gateway.tenants.principal import Principal

# What every chat offer answers, natively or translated through chat completions.
CHAT_ENDPOINTS = ("chat", "messages", "responses")
ANTHROPIC_PAGE = 20
ANTHROPIC_PAGE_MAX = 1000
LIFECYCLES = ("active", "deprecated", "retired")


def endpoints_of(offers: Iterable[Offer]) -> list[str]:
    """The endpoints a model (or a route, through its models' offers) can be called on:
    embeddings and completions only where a backend serves them natively (no translation)."""
    offers = list(offers)
    if any(o.spec.kind == "embedding" for o in offers):
        return ["embeddings"] if any("embeddings" in o.apis for o in offers) else []
    out = list(CHAT_ENDPOINTS)
    if any("completions" in o.apis for o in offers):
        out.append("completions")
    return out


def _route_offers(snapshot: ConfigSnapshot, name: str) -> list[Offer]:
    route = snapshot.routes[name]
    models = dict.fromkeys([*route.models, *(m for ms in route.tasks.values() for m in ms)])
    return [o for m in models for o in snapshot.offers.get(m, ())]


def model_entries(snapshot: ConfigSnapshot) -> list[dict[str, Any]]:
    created = int(snapshot.loaded_at)
    entries: list[dict[str, Any]] = []
    for name in snapshot.routes:
        offers = _route_offers(snapshot, name)
        entries.append(
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "gateway",
                "kind": offers[0].spec.kind if offers else "chat",
                "endpoints": endpoints_of(offers),
            }
        )
    for model_id, served in sorted(snapshot.offers.items()):
        best = max(o.spec.context_length for o in served)
        entries.append(
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": model_id.split("/", 1)[0],
                "context_length": best,
                "providers": sorted(o.backend for o in served),
                "kind": served[0].spec.kind,
                "endpoints": endpoints_of(served),
            }
        )
    return entries


def visible_to(principal: Principal, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries this caller may call: all of them unless its key lists models."""
    key = principal.key
    if key is None or not key.models:
        return entries
    return [e for e in entries if key.allows(e["id"])]


def model_entry(snapshot: ConfigSnapshot, name: str, principal: Principal | None = None) -> dict[str, Any]:
    """One listed entry; a name an alias maps (or a `:floor`/`:nitro` variant) answers as
    what it resolves to, under the name asked for, so a client that checks its configured
    model before using it (agents with their built-in names) finds it."""
    entries = {e["id"]: e for e in model_entries(snapshot)}
    found = entries.get(name)
    key = principal.key if principal is not None else None
    if found is not None:
        if key is not None and not key.allows(name):
            raise model_not_found(name)
        return found
    target = resolve(name, snapshot)  # 404 model_not_found when nothing maps it
    resolved = entries.get(target.route_name or target.model or "")
    if resolved is None or (key is not None and not _may_use(key, name, resolved["id"], target.alias is not None)):
        raise model_not_found(name)
    return {**resolved, "id": name, "alias": target.alias, "resolves_to": resolved["id"]}


def _may_use(key: Any, name: str, resolved: str, aliased: bool) -> bool:
    """What the key may call, as `ratelimit.check_models` judges it: a name an alias maps
    elsewhere by where it goes only (a glob matching the name as sent must not show a route
    the key was not given), any other by either."""
    if aliased:
        return bool(key.allows(resolved))
    return bool(key.allows(name) or key.allows(resolved))


# Anthropic's `created_at` is the model's release time, "an epoch value if the release date is
# unknown" (its ModelInfo). The gateway knows no release dates; the config's load time, which
# OpenAI's list gives as `created`, moved with every reload and differed between replicas.
_UNKNOWN_RELEASE = "1970-01-01T00:00:00Z"


def anthropic_entry(entry: dict[str, Any], snapshot: ConfigSnapshot) -> dict[str, Any]:
    """A listed entry as Anthropic's ModelInfo. A name an alias maps answers as the model id it
    resolves to, as Anthropic's lookup resolves its aliases ("resolve a model alias to a model
    ID"); a variant (`:nitro`) keeps its name, being no other model's."""
    model_id = entry["resolves_to"] if entry.get("alias") is not None else entry["id"]
    info = snapshot.model_info(model_id)
    name = info.name if info is not None and info.name else model_id
    out = {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": _UNKNOWN_RELEASE,
        "lifecycle": "active",
    }
    if "context_length" in entry:
        out["max_input_tokens"] = entry["context_length"]
        # Anthropic's `max_tokens`, the most a call may ask: known when every offer caps its
        # answer (`max_output_tokens`), the largest cap (an offer with a smaller one is asked for its own).
        caps = [offer.spec.max_output_tokens for offer in snapshot.offers.get(model_id, ())]
        if caps and None not in caps:
            out["max_tokens"] = max(cap for cap in caps if cap is not None)
    return out


def anthropic_page(
    entries: list[dict[str, Any]], query: dict[str, str], lifecycle: list[str] | None = None
) -> dict[str, Any]:
    """One page of Anthropic's model list: `limit` entries after `after_id` or before `before_id`,
    of those in a `lifecycle` stage asked for (every entry is active; without the filter
    Anthropic lists active and deprecated models, so all of them)."""
    if lifecycle:
        for stage in lifecycle:
            if stage not in LIFECYCLES:
                raise invalid_request(
                    f"lifecycle: `{echoed(stage)}` is not one of {', '.join(LIFECYCLES)}.", "lifecycle"
                )
        if len(lifecycle) > len(LIFECYCLES):
            raise invalid_request(f"lifecycle: at most {len(LIFECYCLES)} values.", "lifecycle")
        if "active" not in lifecycle:
            entries = []
    raw = query.get("limit")
    limit = ANTHROPIC_PAGE
    if raw is not None:
        # ASCII digits only: `str.isdigit` also takes "²" (which `int` refuses: a 500) and
        # other scripts' digits, which no API reads as a number.
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= ANTHROPIC_PAGE_MAX:
            raise invalid_request(f"limit: must be an integer from 1 to {ANTHROPIC_PAGE_MAX}.", "limit")
        limit = int(raw)
    ids = [e["id"] for e in entries]
    after, before = query.get("after_id"), query.get("before_id")
    for cursor, name in ((after, "after_id"), (before, "before_id")):
        if cursor is not None and cursor not in ids:
            raise invalid_request(f"{name}: `{echoed(cursor)}` is not a listed model.", name)
    if before is not None:
        end = ids.index(before)
        page = entries[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        start = ids.index(after) + 1 if after is not None else 0
        page = entries[start : start + limit]
        has_more = start + limit < len(entries)
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


async def list_models(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    snapshot = state.config.current
    if "anthropic-version" in request.headers:
        try:
            principal = await state.auth.authenticate_current(request)
            entries = [
                anthropic_entry(e, snapshot)
                for e in visible_to(principal, model_entries(snapshot))
                if "messages" in e["endpoints"]
            ]
            # The SDKs send the array as `lifecycle[]=...`; a hand-written query may say `lifecycle=`.
            query = request.query_params
            lifecycle = [*query.getlist("lifecycle[]"), *query.getlist("lifecycle")]
            body = anthropic_page(entries, dict(query), lifecycle)
        except GatewayError as exc:
            return anthropic_error_response(state, exc)
        return anthropic_answer(state, orjson.dumps(body))
    principal = await state.auth.authenticate_current(request)
    listed = {"object": "list", "data": visible_to(principal, model_entries(snapshot))}
    return Response(orjson.dumps(listed), media_type="application/json")


async def get_model(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    snapshot = state.config.current
    wanted = request.path_params["model_id"]
    anthropic = "anthropic-version" in request.headers
    try:
        principal = await state.auth.authenticate_current(request)
        entry = model_entry(snapshot, wanted, principal)
        if anthropic and "messages" not in entry["endpoints"]:
            raise model_not_found(wanted)  # as the list: what /v1/messages can serve (not an embedding model)
        if anthropic:
            return anthropic_answer(state, orjson.dumps(anthropic_entry(entry, snapshot)))
        return Response(orjson.dumps(entry), media_type="application/json")
    except GatewayError as exc:
        if anthropic:
            return anthropic_error_response(state, exc)
        raise
