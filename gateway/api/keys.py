"""Tenant endpoints: key and team management under /admin (admin key only), and GET /v1/key
(the calling key's own state, in OpenRouter's shape). Also `start_tenants`, the lifespan
step that opens the key store and keeps this process's view of it fresh.

Store calls run in a thread: they are file or Redis I/O, rare, and off the proxy path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.auth import Authenticator
from gateway.api.ingress import read_body
from gateway.api.state import AppState
from gateway.protocol.errors import GatewayError, echoed
from gateway.ratelimit import key_rpm
from gateway.supervise import start_supervised
from gateway.tenants.admin import TenantAdmin, new_limits
from gateway.tenants.directory import KeyDirectory
from gateway.tenants.keys import TenantError, parse_overlap, parse_when
from gateway.tenants.store import open_tenant_store, store_failure, store_timed_out
from gateway.tenants.throttle import FailedAuthThrottle, parse_networks

log = logging.getLogger("gateway.tenants")
MAX_ADMIN_BODY = 64 * 1024


async def start_tenants(state: AppState) -> None:
    """Open the key store, load it once before serving, refresh it in the background."""
    settings = state.settings
    store = open_tenant_store(settings)
    directory = KeyDirectory(store, refresh_s=settings.keys_refresh_s, on_error=state.metrics.key_store_error)
    state.tenant_admin = TenantAdmin(store, static_names=settings.client_keys().values())
    state.auth = Authenticator(
        settings.client_keys(),
        settings.admin_key,
        directory=directory,
        throttle=FailedAuthThrottle(settings.auth_failures_per_minute),
        trusted_proxies=parse_networks(settings.trusted_proxies),
        on_failure=state.metrics.auth_failed,
        require_keys=settings.require_keys,
    )
    await directory.refresh()
    state.tasks.append(start_supervised("key_refresh", directory.run, state.metrics.background_task_restarted))

    async def close() -> None:
        await state.limiter.aclose()
        await asyncio.to_thread(store.close)

    state.closers.append(close)
    if state.auth.is_open:
        log.warning("no client keys (GATEWAY_API_KEYS empty, no virtual keys): the gateway is open to anyone")
    elif settings.require_keys and not settings.client_keys() and state.auth.directory_empty:
        log.warning(
            "GATEWAY_REQUIRE_KEYS is set and there is no client key yet: every API request is refused (/health, /ready and /metrics stay open)"
        )
    if not settings.admin_key:
        log.info("GATEWAY_ADMIN_KEY is not set: key management over HTTP is off (the `gateway keys` CLI works)")
    if settings.workers > 1 and not settings.redis_url:
        log.warning(
            "%d workers without GATEWAY_REDIS_URL: rate limits, concurrency and budgets are counted per worker, "
            "so together they allow up to %d times each limit",
            settings.workers,
            settings.workers,
        )


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object sent, read after the admin key was checked and through the bounded
    reader the proxy routes use: a declared length over the bound is refused before a byte
    is read, a chunked body as soon as it passes it (`request.body()` buffered the whole body
    first, however large, and only then answered 413)."""
    raw = await read_body(request, MAX_ADMIN_BODY)
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.")
    return body


_LIMIT_FIELDS = ("rpm", "tpm", "max_concurrent", "budget_usd", "budget_period")
_KEY_FIELDS = {"name", "models", "team", "expires", *_LIMIT_FIELDS}
_TEAM_FIELDS = {"name", *_LIMIT_FIELDS}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Each field's JSON type, checked before anything reads it: a wrong type is the client's 400,
# never a crash in the code that trusted it (schemathesis found `"expires": {}` answering 500).
_FIELD_TYPES: dict[str, tuple[str, Any]] = {
    "name": ("a string", lambda v: isinstance(v, str)),
    "team": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "expires": ("an ISO date string or null", lambda v: v is None or isinstance(v, str)),
    "overlap": ("a duration string like 24h", lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool)),
    "models": (
        "an array of strings or null",
        lambda v: v is None or (isinstance(v, list) and all(isinstance(m, str) for m in v)),
    ),
    "rpm": ("an integer or null", lambda v: v is None or _is_int(v)),
    "tpm": ("an integer or null", lambda v: v is None or _is_int(v)),
    "max_concurrent": ("an integer or null", lambda v: v is None or _is_int(v)),
    "budget_usd": ("a number or null", lambda v: v is None or _is_int(v) or isinstance(v, float)),
    "budget_period": ("day, month or null", lambda v: v is None or v in ("day", "month")),
}


def _check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        takes = f"Allowed: {', '.join(sorted(allowed))}." if allowed else "This call takes none."
        message = f"Unknown field(s): {echoed(', '.join(unknown))}. {takes}"
        # The first unknown one as `param`, as OpenAI's `unknown_parameter` errors name theirs.
        raise GatewayError(400, message, param=echoed(unknown[0]), code="unknown_parameter")
    for name, value in body.items():
        expected, valid = _FIELD_TYPES[name]
        if not valid(value):
            raise GatewayError(400, f"`{name}` must be {expected}.", param=name, code="invalid_type")


# One key or team operation: (the admin, the request's JSON body, who asks) -> the answer's body.
AdminAction = Callable[[TenantAdmin, dict[str, Any], str], object]


def _actor(request: Request) -> str:
    return f"http:{request.client.host if request.client else 'unknown'}"


async def _admin_call(request: Request, action: AdminAction, status: int = 200) -> Response:
    state: AppState = request.app.state.gateway
    state.auth.authenticate_key_admin(request)
    admin = state.tenant_admin
    if admin is None:
        raise GatewayError(503, "The key store is not open yet.", code="key_store_unavailable")
    try:
        body = await _body(request) if request.method in ("POST", "PATCH") else {}
        result = await asyncio.to_thread(action, admin, body, _actor(request))
    except TenantError as exc:
        raise GatewayError(exc.status, str(exc), code=exc.code, param=exc.param) from None
    except Exception as exc:
        if not store_failure(exc):
            raise
        # Redis down or a locked SQLite file: the admin's retry may work, so a 503 in the
        # API's shape (it was a bare 500 "Internal Server Error" with a traceback per call).
        log.warning("key store failed on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        if request.method != "GET" and store_timed_out(exc):
            # The write was sent: a hung Redis runs it when it resumes. Say so, or the admin's
            # retry meets a 409 for a key whose secret nobody saw.
            raise GatewayError(
                503,
                "The key store did not answer in time; the change may still take effect when it does. "
                "Check GET /admin/keys or /admin/audit before retrying (a key created this way was never "
                "shown: rotate it for its secret).",
                code="key_store_unavailable",
            ) from None
        raise GatewayError(
            503, "The key store could not be reached; retry shortly.", code="key_store_unavailable"
        ) from None
    if state.auth.directory is not None and request.method != "GET":
        await state.auth.directory.refresh()  # this replica sees the change at once
    return _json(result, status)


def _limits(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body.get(k) for k in _LIMIT_FIELDS}


async def list_keys(request: Request) -> Response:
    return await _admin_call(request, lambda admin, body, actor: {"data": [k.public() for k in admin.store.all_keys()]})


async def create_key(request: Request) -> Response:
    def act(admin: TenantAdmin, body: dict[str, Any], actor: str) -> dict[str, Any]:
        _check_fields(body, _KEY_FIELDS)
        if not isinstance(body.get("name"), str):
            raise TenantError("`name` is required", param="name")
        issued = admin.create_key(
            body["name"],
            actor=actor,
            limits=new_limits(_limits(body)),
            models=body.get("models"),
            team=body.get("team"),
            expires_at=parse_when(body.get("expires")),
        )
        return issued.public()

    return await _admin_call(request, act, 201)


async def update_key(request: Request) -> Response:
    name = request.path_params["name"]

    def act(admin: TenantAdmin, body: dict[str, Any], actor: str) -> dict[str, Any]:
        _check_fields(body, _KEY_FIELDS - {"name"})
        expires = body.get("expires")
        expires_at = None if expires is None else (parse_when(expires) if expires else 0)
        key = admin.update_key(
            name,
            actor=actor,
            models=body.get("models"),
            team=body.get("team"),
            expires_at=expires_at,
            **_limits(body),
        )
        return key.public()

    return await _admin_call(request, act)


async def revoke_key(request: Request) -> Response:
    name = request.path_params["name"]

    def act(admin: TenantAdmin, body: dict[str, Any], actor: str) -> dict[str, Any]:
        # A revoke takes no field: one it cannot honour (`{"at": ...}` for a revoke later)
        # is refused rather than revoking now.
        _check_fields(body, set())
        return admin.revoke_key(name, actor=actor).public()

    return await _admin_call(request, act)


async def rotate_key(request: Request) -> Response:
    name = request.path_params["name"]

    def act(admin: TenantAdmin, body: dict[str, Any], actor: str) -> dict[str, Any]:
        _check_fields(body, {"overlap"})
        overlap = parse_overlap(str(body.get("overlap", "0")))
        return admin.rotate_key(name, actor=actor, overlap_s=overlap).public()

    return await _admin_call(request, act)


async def list_teams(request: Request) -> Response:
    return await _admin_call(
        request, lambda admin, body, actor: {"data": [t.public() for t in admin.store.all_teams()]}
    )


async def create_team(request: Request) -> Response:
    def act(admin: TenantAdmin, body: dict[str, Any], actor: str) -> dict[str, Any]:
        _check_fields(body, _TEAM_FIELDS)
        if not isinstance(body.get("name"), str):
            raise TenantError("`name` is required", param="name")
        return admin.create_team(body["name"], actor=actor, limits=new_limits(_limits(body))).public()

    return await _admin_call(request, act, 201)


async def update_team(request: Request) -> Response:
    name = request.path_params["name"]

    def act(admin: TenantAdmin, body: dict[str, Any], actor: str) -> dict[str, Any]:
        _check_fields(body, _TEAM_FIELDS - {"name"})
        return admin.update_team(name, actor=actor, **_limits(body)).public()

    return await _admin_call(request, act)


async def audit(request: Request) -> Response:
    return await _admin_call(
        request, lambda admin, body, actor: {"data": [e.public() for e in admin.store.audit(1000)]}
    )


def _budget_fields(budget: float | None, period: str | None, day: float, month: float) -> dict[str, Any]:
    """OpenRouter's `limit`, `limit_reset` and `limit_remaining` for one budget."""
    if budget is None:
        return {"limit": None, "limit_reset": None, "limit_remaining": None}
    used = day if period == "day" else month
    return {
        "limit": budget,
        "limit_reset": "daily" if period == "day" else "monthly",
        "limit_remaining": round(max(0.0, budget - used), 9),
    }


async def current_key(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    principal = await state.auth.authenticate_current(request)
    key = principal.key
    if key is None:
        raise GatewayError(
            404, "This endpoint describes virtual keys; this request used none.", code="not_a_virtual_key"
        )
    day, month = await state.limiter.spent(f"key:{key.name}")
    limits = key.limits
    team_budget = None
    team_limits = principal.team_limits
    if principal.team is not None and team_limits is not None and team_limits.budget_usd is not None:
        # The key's calls also spend its team's budget, which can run out first: shown beside
        # OpenRouter's per-key fields, which stay the key's own.
        team_day, team_month = await state.limiter.spent(f"team:{principal.team}")
        team_budget = {
            "name": principal.team,
            **_budget_fields(team_limits.budget_usd, team_limits.budget_period, team_day, team_month),
            "usage_daily": round(team_day, 9),
            "usage_monthly": round(team_month, 9),
        }
    data = {
        "label": key.name,
        **_budget_fields(limits.budget_usd, limits.budget_period, day, month),
        "usage": round(month, 9),
        "usage_daily": round(day, 9),
        "usage_monthly": round(month, 9),
        "is_free_tier": False,
        "expires_at": key.public()["expires_at"],
        "team": principal.team,
        "team_budget": team_budget,
        "models": list(key.models),
        "rate_limit": {
            # What the key is held to: a key without an rpm of its own gets the routing YAML's
            # (`rate_limits.keys`, `default_key_rpm`), as its x-ratelimit-limit-requests says.
            "requests": key_rpm(key, state.config.current.config.rate_limits),
            "interval": "1m",
            "tokens": limits.tpm,
            "max_concurrent": limits.max_concurrent,
        },
    }
    return _json({"data": data})
