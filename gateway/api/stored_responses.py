"""GET and DELETE /v1/responses/{id} (and GET .../input_items): the responses the gateway
stored, for their owner only. Also the refusals of POST /v1/responses/compact (`compact`)
and of POST .../cancel (`cancel`): the gateway compacts nothing and runs no background responses.

The owner of a stored response is the client key that created it (`Owner`): a virtual key
by its name and creation time, so a key made anew under an old name (its key store lost, or
restored from a backup older than it) is not the old key; a static key (GATEWAY_API_KEYS) by
its name, which is all the operator gives it. A gateway without keys has one owner for
everyone. Another key asking for the id gets the same 404 as for an id that never existed
(OpenAI's shape), so ids do not leak across keys. A store that fails is a 503, counted
(`gateway_response_store_errors_total`) and logged.

Also here: opening the store in the lifespan (`start`), and the helpers `POST /v1/responses`
uses to read and write it with the same rules (`owner_of`, `load`, `save`,
`resolve_references`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.state import AppState
from gateway.conversations.store import ResponseStore, StoredResponse, StoreUnavailable
from gateway.conversations.stores import open_response_store
from gateway.protocol.errors import GatewayError, echoed, invalid_request
from gateway.protocol.responses_answer import listed_input_items
from gateway.tenants.principal import Principal

log = logging.getLogger("gateway.responses")


def start(state: AppState) -> None:
    """Open the store the settings name (Redis when configured, else SQLite in the data dir)."""
    store = open_response_store(state.settings, state.redis)
    state.response_store = store
    state.closers.append(store.aclose)


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose stored responses a request reads and writes: `id`, the store's owner. Records
    written before virtual keys were told apart by creation are owned by the key's name
    (`legacy`): the key reads those it made, created (the Response's `created_at`) at or
    after the key was (`since`), so a key made anew under that name reads none of an earlier
    one's. They expire with the retention; nothing is rewritten."""

    id: str
    legacy: str | None = None
    since: float = 0.0

    def made(self, record: StoredResponse) -> bool:
        created = record.response.get("created_at")
        return isinstance(created, (int, float)) and created >= int(self.since)


def owner_of(principal: Principal) -> Owner:
    key = principal.key
    if key is None:
        return Owner(principal.key_name or "")
    return _virtual_owner(key.name, key.created_at)


@lru_cache(maxsize=4096)  # made once per key: 0.1 µs a request, not the 1.3 µs of the float's repr
def _virtual_owner(name: str, created_at: float) -> Owner:
    # `created_at` is kept through updates, rotations and revocation, and is the same on
    # every replica (read from the one key store); a name never holds `#`.
    return Owner(f"{name}#{created_at!r}", name, created_at)


def not_found(response_id: str, param: str | None = None) -> GatewayError:
    """OpenAI's refusal of an id its owner has no stored response for, in its words: a 404 for
    the response asked by path; for a `previous_response_id`, a 400 `previous_response_not_found`
    (the request is what is wrong, and clients such as Codex resend the whole conversation on
    that code)."""
    if param == "previous_response_id":
        return GatewayError(
            400,
            f"Previous response with id '{echoed(response_id)}' not found.",
            param=param,
            code="previous_response_not_found",
        )
    return GatewayError(404, f"Response with id '{echoed(response_id)}' not found.", param=param)


def _store(state: AppState) -> ResponseStore:
    if state.response_store is None:
        raise GatewayError(503, "The response store is not open yet.", code="response_store_unavailable")
    return state.response_store


def _unavailable(state: AppState, op: str, exc: StoreUnavailable) -> GatewayError:
    state.metrics.response_store_error(op)
    log.warning("response store %s failed: %s", op, exc)
    return GatewayError(503, "The response store is unavailable; try again shortly.", code="response_store_unavailable")


async def _get(state: AppState, owner: Owner, response_id: str) -> StoredResponse | None:
    """The owner's record, a legacy one it made included (read only when the id has no
    record of its own: a second read on a miss)."""
    store = _store(state)
    try:
        record = await store.get(owner.id, response_id)
        if record is None and owner.legacy is not None:
            record = await store.get(owner.legacy, response_id)
            if record is not None and not owner.made(record):
                record = None
    except StoreUnavailable as exc:
        raise _unavailable(state, "get", exc) from None
    return record


async def load(state: AppState, owner: Owner, response_id: str, param: str | None = None) -> StoredResponse:
    """The owner's stored response, or the error the client gets (`not_found`: a 404 by path, a
    400 for a `previous_response_id`; a 503 when the store is unreachable)."""
    record = await _get(state, owner, response_id)
    if record is None:
        raise not_found(response_id, param)
    return record


async def save(state: AppState, owner: Owner, record: StoredResponse) -> bool:
    """Store a response the client already has; a failure is logged and counted, not raised
    (the answer is delivered either way; only continuing from it will fail, `not_found`)."""
    store = state.response_store
    if store is None:
        return False
    try:
        result = await store.put(owner.id, record)
    except StoreUnavailable as exc:
        _unavailable(state, "put", exc)
        return False
    if result == "too_large":
        log.warning(
            "response %s not stored: over the record limit of %d bytes (GATEWAY_RESPONSES_MAX_RECORD_BYTES)",
            record.id,
            store.limits.max_record_bytes,
        )
    elif result == "not_encodable":
        log.warning("response %s not stored: its input holds JSON nested too deep to write", record.id)
    elif result == "id_taken":
        log.warning("response %s not stored: another key's stored response has that id (from the backend)", record.id)
    return result == "stored"


# item_reference items one request may hold: each may be a store read, and a body of
# references would otherwise be as many reads as it has room for.
MAX_REFERENCES = 100


def has_references(items: list[dict[str, Any]]) -> bool:
    return any(item.get("type") == "item_reference" for item in items)


async def resolve_references(
    state: AppState, owner: Owner, items: list[dict[str, Any]], previous: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`items` with each `item_reference` replaced by the item it names, as OpenAI resolves
    them: an item of the conversation `previous_response_id` continues (`previous`), else of
    the owner's stored response the id names. The store is keyed by response, not by item:
    an item id is read as the gateway writes them, a prefix, its response's suffix and
    perhaps a place (`msg_<suffix>`, `fc_<suffix>_1`, `msg_<suffix>_in0` for an input item
    as `input_items` lists it), and that response's output and input are searched (one read
    per response named). A backend's own item ids (native answers) rarely name their
    response so: those items are found in the conversation being continued only. Anything
    else is OpenAI's 400 (`param: input`)."""
    if sum(item.get("type") == "item_reference" for item in items) > MAX_REFERENCES:
        raise invalid_request(f"An input holds more than {MAX_REFERENCES} item_reference items.", "input")
    by_id: dict[str, dict[str, Any]] | None = None
    records: dict[str, StoredResponse | None] = {}
    out = []
    for i, item in enumerate(items):
        if item.get("type") != "item_reference":
            out.append(item)
            continue
        ref = item.get("id")
        if type(ref) is not str or not ref:
            raise invalid_request(
                f"Missing required parameter: 'input[{i}].id'.", f"input[{i}].id", "missing_required_parameter"
            )
        if by_id is None:
            by_id = {x["id"]: x for x in previous if type(x.get("id")) is str}
        found = by_id.get(ref)
        if found is None:
            found = await _stored_item(state, owner, ref, records)
        if found is None:
            raise GatewayError(
                400,
                f"Item with id '{echoed(ref)}' not found. An item_reference names an item of a response this key "
                "stored (`store` true): its output, or its input as `input_items` lists it, or an item of the "
                "conversation `previous_response_id` continues.",
                param="input",
            )
        out.append(found)
    return out


async def _stored_item(
    state: AppState, owner: Owner, ref: str, records: dict[str, StoredResponse | None]
) -> dict[str, Any] | None:
    """The item `ref` of the owner's stored response its id names (`resolve_references`)."""
    prefix, _, rest = ref.partition("_")
    suffix = rest.partition("_")[0]
    if not prefix or not suffix:
        return None
    response_id = "resp_" + suffix
    if response_id not in records:
        records[response_id] = await _get(state, owner, response_id)
    record = records[response_id]
    if record is None:
        return None
    for item in record.items:  # the response's output, and input items with ids of their own
        if item.get("id") == ref:
            return item
    own = record.input
    for listed, item in zip(listed_input_items(own, response_id), own, strict=True):
        if listed["id"] == ref:
            return item
    return None


def input_items_page(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of a response's input items, as OpenAI pages lists: `order` (`desc`, the
    default, or `asc`), `limit` (1-100, default 20), `after` (an item id: start past it)."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise GatewayError(400, "order must be 'asc' or 'desc'.", param="order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise GatewayError(400, "limit must be an integer from 1 to 100.", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise GatewayError(400, f"No input item with id '{echoed(after)}' in this response.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }


async def retrieve(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    principal = await state.auth.authenticate_current(request)
    if request.query_params.get("stream", "").lower() in ("true", "1"):
        # OpenAI streams a background response's events; the gateway keeps finished responses
        # only. A JSON answer to a streaming client would read as a stream of no events.
        raise invalid_request(
            "Streaming a stored response (`stream=true`) is not supported: the gateway keeps finished "
            "responses only. Retrieve it without `stream`.",
            "stream",
        )
    record = await load(state, owner_of(principal), request.path_params["response_id"])
    return Response(orjson.dumps(record.response), media_type="application/json")


async def delete(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    principal = await state.auth.authenticate_current(request)
    response_id = request.path_params["response_id"]
    owner = owner_of(principal)
    store = _store(state)
    try:
        deleted = await store.delete(owner.id, response_id)
        if not deleted and owner.legacy is not None:
            record = await store.get(owner.legacy, response_id)
            deleted = record is not None and owner.made(record) and await store.delete(owner.legacy, response_id)
    except StoreUnavailable as exc:
        raise _unavailable(state, "delete", exc) from None
    if not deleted:
        raise not_found(response_id)
    body = {"id": response_id, "object": "response", "deleted": True}
    return Response(orjson.dumps(body), media_type="application/json")


async def compact(request: Request) -> Response:
    """POST /v1/responses/compact: OpenAI's compaction, not served. Its answer is items only
    OpenAI's models read (encrypted `compaction` items), which no backend here could take
    back. Codex asks it of OpenAI's and Azure's providers only, and compacts locally for any
    other (`model_providers` with this gateway's `base_url`), so the refusal costs it nothing;
    it was a 405 naming no reason (the path matched a stored response's GET and DELETE)."""
    state: AppState = request.app.state.gateway
    await state.auth.authenticate_current(request)
    raise GatewayError(
        404,
        "POST /v1/responses/compact is not supported by this gateway: OpenAI's compaction returns items only "
        "OpenAI's models can read. Compact the conversation on the client (Codex does for providers other "
        "than OpenAI's and Azure's), or continue it with `previous_response_id`.",
        code="unsupported_endpoint",
    )


async def cancel(request: Request) -> Response:
    """POST /v1/responses/{id}/cancel: OpenAI cancels background responses only, and the
    gateway runs none (`background: true` is refused), so a stored response is a 400 saying
    so and any other id the 404 `retrieve` gives it (it was a 404 naming an unknown path)."""
    state: AppState = request.app.state.gateway
    principal = await state.auth.authenticate_current(request)
    response_id = request.path_params["response_id"]
    await load(state, owner_of(principal), response_id)
    raise invalid_request(
        f"Only background responses can be cancelled; response '{echoed(response_id)}' was not one: this "
        "gateway runs no background responses, so it had finished when it was created."
    )


async def input_items(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    principal = await state.auth.authenticate_current(request)
    response_id = request.path_params["response_id"]
    record = await load(state, owner_of(principal), response_id)
    page = input_items_page(listed_input_items(record.input, response_id), request.query_params)
    return Response(orjson.dumps(page), media_type="application/json")
