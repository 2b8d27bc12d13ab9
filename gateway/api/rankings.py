"""GET /v1/rankings (OpenRouter-style rankings of this gateway's traffic), GET /v1/rankings/series
(tokens per model per day or week, for the chart) and the /rankings web page.

Rankings are computed on a thread (a month's takes tens of milliseconds of CPU, which on
the event loop would stall every proxied call of this worker), kept and served from memory
for `GATEWAY_RANKINGS_REFRESH_S`, then refreshed in the background (`RefreshedAnswers`): a
page polled by many viewers costs at most one computation per query per interval. A refresh
is skipped while the aggregates it reads have not changed (`AnswerMemo`).

The page is a static HTML file plus a small script under gateway/web/, read once at
startup: no build step, no CDN, nothing fetched from outside the gateway. So its files are
served with a CSP that allows nothing else (no inline script or style, no framing): a
script injected through what apps put in their headers would not run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import date
from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.answers import RefreshedAnswers
from gateway.api.state import AppState
from gateway.protocol.errors import GatewayError
from gateway.usage.aggregates import DayRows
from gateway.usage.rankings import (
    Period,
    QueryError,
    RankingQuery,
    SeriesQuery,
    compute_rankings,
    compute_series,
    prices_of,
    ranking_query,
    series_query,
)
from gateway.usage.scoped import Scope, scoped_aggregates
from gateway.usage.store import UsageStore

log = logging.getLogger("gateway.usage")

# The page holds an API key the viewer typed in: no framing (clickjacking), no inline or
# foreign script, nothing sent to other origins.
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}

_PAGE_FILES = {
    "rankings.html": "text/html; charset=utf-8",
    "rankings.js": "text/javascript; charset=utf-8",
    "rankings.css": "text/css; charset=utf-8",
}


class AnswerMemo:
    """The last answer (JSON bytes) per query, with the inputs it was computed from.

    The store is read on every request (the read is cheap, and it is what tells whether the
    answer changed); only the computation is skipped when the inputs compare equal.
    """

    def __init__(self, size: int = 8) -> None:  # inputs are kept too: a few answers, not a history
        self.size = size
        self.computed = 0  # answers computed (not reused): for tests and curiosity
        self._answers: OrderedDict[Any, tuple[Any, bytes]] = OrderedDict()

    async def answer(self, key: Any, inputs: Any, compute: Callable[[], Any]) -> bytes:
        cached = self._answers.get(key)
        if cached is not None and cached[0] == inputs:
            self._answers.move_to_end(key)
            return cached[1]
        body = await asyncio.to_thread(lambda: orjson.dumps(compute()))
        self.computed += 1
        self._answers[key] = (inputs, body)
        self._answers.move_to_end(key)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)
        return body


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


def _store(state: AppState) -> UsageStore:
    if state.usage_store is None:
        raise GatewayError(503, "The usage ledger is not running.", code="usage_store_unavailable")
    return state.usage_store


def _unavailable(exc: Exception) -> GatewayError:
    log.warning("usage store read failed: %s: %s", type(exc).__name__, exc)
    return GatewayError(503, "The usage store could not be read; try again shortly.", code="usage_store_unavailable")


async def _read(state: AppState, store: UsageStore, spans: dict[str, Period], scope: Scope) -> dict[date, DayRows]:
    """The stored aggregates for everything; one tenant's rebuilt from the ledger's events."""
    try:
        if scope.everything:
            return await store.read_aggregates(spans)
        return await scoped_aggregates(store, spans, scope, state.settings.usage_max_apps_per_day)
    except Exception as exc:
        raise _unavailable(exc) from None


def _spans(query: RankingQuery | SeriesQuery) -> dict[str, Period]:
    return query.spans()  # ranking_query and series_query refused the ones that overflow


def viewer_scope(state: AppState, request: Request) -> tuple[Scope, bool]:
    """Whose traffic this request may see (see README, "Who sees what"): a client key its own
    calls only; the admin key (or anyone on an open gateway) everything, narrowed by `?key=`
    and `?team=`. A client key naming another key or a team is refused, not silently narrowed.
    The flag says whether the viewer may see everything (the page offers filters then)."""
    principal, everything = state.auth.authenticate_viewer(request)
    params = request.query_params
    key, team = params.get("key") or None, params.get("team") or None
    if everything:
        return Scope(key, team), True
    if (key is not None and key != principal.key_name) or team is not None:
        raise GatewayError(
            403,
            "A client key sees only its own usage; `key` and `team` filters need the admin key.",
            param="team" if team is not None else "key",
            code="admin_only",
        )
    return Scope(key=principal.key_name), False


def _scoped(body: bytes, scope: Scope, everything: bool) -> bytes:
    """The answer with whose traffic it counts (`scope`) and whether this viewer may see all
    (the page shows the one and offers filters for the other); the kept answer is shared by
    every viewer of one scope, so this is added per request."""
    return body[:-1] + b',"scope":' + orjson.dumps({**scope.to_json(), "all_visible": everything}) + b"}"


class RankingViews:
    """The two usage views of one app, with the answers they keep: per query and scope (each
    tenant viewing its own page is a scope, two queries each)."""

    def __init__(self) -> None:
        self._memo = AnswerMemo(32)
        self._answers = RefreshedAnswers(64)

    async def rankings(self, request: Request) -> Response:
        state: AppState = request.app.state.gateway
        scope, everything = viewer_scope(state, request)
        params = request.query_params
        try:
            query = ranking_query(params.get("window"), params.get("end"), params.get("limit"))
            spans = _spans(query)
        except QueryError as exc:
            raise GatewayError(400, str(exc), param=exc.param, code="invalid_value") from None
        store = _store(state)

        async def produce() -> bytes:
            prices = prices_of(state.config.current)
            days = await _read(state, store, spans, scope)
            return await self._memo.answer(
                (query, scope), (days, prices), lambda: compute_rankings(query, days, prices)
            )

        body = await self._answers.answer((query, scope), produce, state.settings.rankings_refresh_s)
        return _json(_scoped(body, scope, everything))

    async def series(self, request: Request) -> Response:
        state: AppState = request.app.state.gateway
        scope, everything = viewer_scope(state, request)
        params = request.query_params
        try:
            query = series_query(
                params.get("granularity"), params.get("periods"), params.get("end"), params.get("limit")
            )
            spans = _spans(query)
        except QueryError as exc:
            raise GatewayError(400, str(exc), param=exc.param, code="invalid_value") from None
        store = _store(state)

        async def produce() -> bytes:
            days = await _read(state, store, spans, scope)
            return await self._memo.answer((query, scope), days, lambda: compute_series(query, days))

        body = await self._answers.answer((query, scope), produce, state.settings.rankings_refresh_s)
        return _json(_scoped(body, scope, everything))


def page(name: str) -> Callable[[Request], Awaitable[Response]]:
    """The handler serving one of the rankings page's files, read once, here."""
    body = (resources.files("gateway") / "web").joinpath(name).read_bytes()
    media_type = _PAGE_FILES[name]

    async def serve(request: Request) -> Response:
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)

    return serve
