"""The FastAPI application: lifespan wiring and route registration, nothing else."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from gateway.api import keys, stored_responses
from gateway.api.anthropic_answers import anthropic_error_response
from gateway.api.auth import Authenticator
from gateway.api.fastpath import FastPathApp, Middleware, imported_middleware, with_middleware
from gateway.api.routes import fast_routes, route_table, starlette_routes
from gateway.api.state import AppState
from gateway.backends.inflight import CandidateGate, InFlight
from gateway.backends.pool import BackendPool
from gateway.config.reload import ConfigHolder, last_good_path
from gateway.logs import configure_logging
from gateway.protocol.errors import GatewayError
from gateway.ratelimit import RateLimiter
from gateway.routing.runtime import start_routing
from gateway.settings import Settings
from gateway.supervise import start_supervised
from gateway.usage.recorder import install_recorder

log = logging.getLogger("gateway")

# Tracked objects allocated (net of those freed) between two young-generation collections.
YOUNG_COLLECTION_THRESHOLD = 50_000


async def _seed_spend(state: AppState) -> None:
    """Without Redis, spend is counted in this process's memory: it starts from what the
    ledger says each key and team was billed this month (today's among it), so a restart
    does not give every budget back. A ledger that cannot be read leaves the counts at zero,
    as they were before there was a ledger, and says so."""
    if state.usage_store is None:
        return
    first_day = datetime.now(UTC).date().replace(day=1)
    try:
        spends = await state.usage_store.day_spends(first_day)
    except Exception:
        log.exception("could not read this month's spend from the usage ledger: budgets count from zero")
        return
    state.limiter.seed_spend(spends)


def build_state(settings: Settings) -> AppState:
    pool = BackendPool(CandidateGate(InFlight(settings.max_upstream_inflight or settings.max_connections)))
    # Applies the first snapshot to the pool itself, before keeping it as the last good copy.
    holder = ConfigHolder(
        settings.config, on_swap=pool.apply, last_good=last_good_path(settings.data_dir, settings.config)
    )
    return AppState(
        settings=settings,
        config=holder,
        backends=pool,
        auth=Authenticator(settings.client_keys(), settings.admin_key, require_keys=settings.require_keys),
    )


def create_app(settings: Settings | None = None, middleware: Sequence[Middleware] = ()) -> FastPathApp:
    """The gateway as an ASGI app. `middleware` (then `GATEWAY_MIDDLEWARE`'s, outermost first)
    wraps every route, the fast ones too, and the lifespan (see gateway.api.fastpath)."""
    settings = settings or Settings()
    configure_logging(settings.log_level)  # worker processes start with no logging set up

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        state = build_state(settings)
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: last-good config, ledger
        if settings.redis_url:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff

            # Retry connection errors so the first command after a Redis restart does not
            # fail on a pooled connection the server already closed.
            retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=2)
            state.redis = Redis.from_url(
                settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, retry=retry
            )
        _wire_metrics(state)
        state.limiter = RateLimiter(state.metrics, state.redis, inflight_ttl_s=settings.limits_inflight_ttl_s)
        state.observers.add(state.limiter)  # settles each call's reservations when it ends
        state.backends.gate.model_limit = state.limiter.model_limit  # per-model limits, per candidate
        await keys.start_tenants(state)
        stored_responses.start(state)
        state.usage_store, state.usage_recorder = install_recorder(
            settings,
            state.redis,
            state.observers,
            state.closers,
            on_drop=state.metrics.usage_events_dropped,
            on_write_failure=state.metrics.usage_write_failed,
            on_task_restart=state.metrics.background_task_restarted,
        )
        if not settings.redis_url:
            await _seed_spend(state)
        app.state.gateway = state
        live, routing_tasks = start_routing(
            lambda: state.config.current,
            state.backends,
            state.redis,
            on_restart=state.metrics.background_task_restarted,
            set_circuit_state=state.metrics.set_circuit_state,
            on_sync_failure=state.metrics.routing_stats_sync_failed,
        )
        state.stats = live
        state.observers.add(live)

        def on_reload(result: str) -> None:
            if result == "success":
                live.config_applied(state.config.current)  # a corrected backend's circuits close

        state.config.on_result(on_reload)
        state.tasks.extend(routing_tasks)
        state.tasks.append(
            start_supervised(
                "limit_tickets", state.limiter.keep_open_tickets_alive, state.metrics.background_task_restarted
            )
        )
        state.tasks.append(
            start_supervised(
                "config_watcher",
                lambda: state.config.watch(settings.reload_poll_s),
                state.metrics.background_task_restarted,
            )
        )
        _install_sighup(state)
        # What startup built (modules, the app, config and routing tables) lives as long as
        # the process: out of the collector's generations, collections under load do not
        # traverse it again and again (about 5% of a proxied call's CPU, measured in-process).
        gc.collect()
        gc.freeze()
        # A parsed agent request is a thousand or more containers (20 tool schemas, 10 turns)
        # alive until its answer is sent. At CPython's default young threshold (700) that set
        # off a collection every third such request, each traversing what was in flight: 35
        # µs per call on average at 16 concurrent calls, 60 at 64 (8-13% of its CPU under
        # wrk), and 13 µs per one-line chat at 64 (counted with gc.callbacks; 10,000 still
        # cost 39 µs per agent call at 64). Past the objects in flight, they die by reference
        # count before any collection looks at them. What waits longer is cyclic garbage: the
        # proxy path makes little (a few hundred objects per ten thousand calls), and none that
        # holds a request, however the call ends (tests/api/test_reference_cycles.py).
        collector_thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *collector_thresholds[1:])
        log.info("gateway serving config %s (version %s)", state.config.path, state.config.current.version)
        try:
            yield {"gateway_metrics": state.metrics}  # lifespan state: the HTTP protocol counts what it refuses
        except asyncio.CancelledError:
            # Only the event loop's end cancels the lifespan: uvicorn skipped its shutdown (a
            # second Ctrl-C, "force quit"). The steps below run anyway; once they are done there
            # is nothing left to cancel (re-raised, uvicorn logged it as a traceback).
            log.warning("shutdown forced: open connections were not waited for")
        finally:
            gc.set_threshold(*collector_thresholds)
            await _to_the_end(_shut_down(state))

    app = FastAPI(title="open-model-gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    # Starlette calls it only for GatewayError, the class it is registered for.
    app.add_exception_handler(GatewayError, _gateway_error)  # type: ignore[arg-type]
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _method_not_allowed)
    table = route_table()
    app.router.routes.extend(starlette_routes(table))
    front = FastPathApp(app, fast_routes(table))
    return with_middleware(front, [*middleware, *imported_middleware(settings.middleware)])


async def _shut_down(state: AppState) -> None:
    for task in state.tasks:
        task.cancel()
    for closer in state.closers:
        try:
            await closer()
        except Exception:
            log.exception("shutdown step failed")
    await state.backends.aclose()
    if state.redis is not None:
        await state.redis.aclose()
    state.metrics.process_stopping()
    log.info("gateway stopped after %d shutdown step(s)", len(state.closers))


async def _to_the_end(steps: Coroutine[Any, Any, None]) -> None:
    """Run the shutdown `steps` to their end in a task of their own, whatever cancels the
    lifespan meanwhile. A second Ctrl-C ("CTRL+C to force quit") makes uvicorn skip the
    lifespan's shutdown and return; the event loop's end then cancels every task, and the
    steps were cut at their first await: the calls still buffered for the ledger were lost.
    Each step is bounded (the ledger's last flush by GATEWAY_USAGE_SHUTDOWN_FLUSH_S)."""
    task = asyncio.ensure_future(steps)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # the steps go on (the loop's end waits for this task)
    task.result()


def _wire_metrics(state: AppState) -> None:
    metrics = state.metrics
    metrics.process_started()
    metrics.track_offers(state.config.current)
    state.observers.add(metrics)
    state.backends.gate.on_skip = metrics.candidate_skipped

    def on_reload(result: str) -> None:
        metrics.config_reload(result)
        if result == "success":
            metrics.track_offers(state.config.current)

    state.config.on_result(on_reload)


def _install_sighup(state: AppState) -> None:
    reloads: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references

    def on_sighup() -> None:
        task = asyncio.create_task(state.config.reload_safely(force=True))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
    except (NotImplementedError, RuntimeError, ValueError):
        pass  # not the main thread (tests) or no signals on this platform


async def _gateway_error(request: Request, exc: GatewayError) -> Response:
    return exc.to_response()


async def _not_found(request: Request, exc: Exception) -> Response:
    message = f"Unknown path {request.url.path}."
    if request.url.path.startswith("/v1/v1/"):  # a base URL ending in /v1 given to a client that appends /v1
        root = str(request.base_url).rstrip("/")
        message += f" The client adds /v1 itself: set its base URL to the gateway's root, without /v1 ({root})."
    return _refusal(request, GatewayError(404, message, code="not_found"))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    # With `Allow`, which a 405 must carry (RFC 9110): every method a route of this path takes
    # (the router names only the first such route's: a stored response's GET, not its DELETE).
    allowed = sorted({m for route in request.app.routes for m in _methods_for(route, request.scope)})
    error = GatewayError(
        405,
        f"{request.method} is not allowed on {request.url.path}.",
        code="method_not_allowed",
        headers={"allow": ", ".join(allowed)} if allowed else None,
    )
    return _refusal(request, error)


def _methods_for(route: BaseRoute, scope: Scope) -> frozenset[str]:
    """The methods `route` takes when its path matches the request's (none otherwise)."""
    methods = getattr(route, "methods", None)
    if not methods or route.matches(scope)[0] is Match.NONE:
        return frozenset()
    return frozenset(methods)


_ANTHROPIC_PATHS = ("/v1/messages", "/messages", "/v1/v1/messages")


def _refusal(request: Request, error: GatewayError) -> Response:
    """A path or method the gateway does not serve, refused in the shape of the API the client
    speaks there: Anthropic's under Messages paths (its SDKs raise their own classes; its request
    named, as Anthropic's errors name theirs), else OpenAI's."""
    path = request.url.path
    if not any(path == prefix or path.startswith(prefix + "/") for prefix in _ANTHROPIC_PATHS):
        return error.to_response()
    return anthropic_error_response(request.app.state.gateway, error)
