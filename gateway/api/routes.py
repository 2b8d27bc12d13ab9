"""Every route the gateway serves, in one table: path, methods, endpoint, and whether the
front door (gateway.api.fastpath) serves it ahead of FastAPI.

The app registers each entry on FastAPI's router (so every path is listed, answers 405 to a
wrong method and is reachable however the app is mounted), the front door takes the `fast`
ones from the same entries, and tests/test_openapi.py checks the table against the OpenAPI
document. Adding a route is one entry here and a handler that can be imported and called on
its own.

Endpoints are of two kinds: a `Request -> Response` handler (FastAPI's routing and middleware
run around it), or, for a fast route, a raw ASGI callable that sends its own response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.api import (
    admin,
    chat,
    completions,
    embeddings,
    explain,
    keys,
    messages,
    models,
    openapi,
    rankings,
    responses,
    scrape,
    stored_responses,
    token_counts,
)
from gateway.api.fastpath import AsgiHandler


@dataclass(frozen=True, slots=True)
class RouteEntry:
    path: str
    methods: tuple[str, ...]
    # fast: an ASGI callable (scope, receive, send); else a Starlette `Request` handler.
    endpoint: Callable[..., Any]
    fast: bool = False  # POST served by the front door, ahead of FastAPI's middleware


class _Asgi:
    """A raw ASGI handler as a Starlette endpoint (Starlette mounts a non-function endpoint as
    an ASGI app as is): the path still answers when the front door does not take it (another
    method, or the FastAPI app mounted on its own)."""

    __slots__ = ("handler",)

    def __init__(self, handler: AsgiHandler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def route_table() -> list[RouteEntry]:
    """The routes of one app, in matching order. A function, not a constant: the rankings
    views keep per-app caches, built fresh for each app."""
    views = rankings.RankingViews()
    fast = ("POST",)
    return [
        RouteEntry("/v1/chat/completions", fast, chat.chat_completions, fast=True),
        RouteEntry("/chat/completions", fast, chat.chat_completions, fast=True),
        RouteEntry("/v1/messages", fast, messages.messages, fast=True),
        RouteEntry("/messages", fast, messages.messages, fast=True),
        RouteEntry("/v1/messages/count_tokens", fast, token_counts.messages_count_tokens, fast=True),
        RouteEntry("/messages/count_tokens", fast, token_counts.messages_count_tokens, fast=True),
        RouteEntry("/v1/embeddings", fast, embeddings.embeddings, fast=True),
        RouteEntry("/embeddings", fast, embeddings.embeddings, fast=True),
        RouteEntry("/v1/completions", fast, completions.completions, fast=True),
        RouteEntry("/completions", fast, completions.completions, fast=True),
        RouteEntry("/v1/models", ("GET",), models.list_models),
        RouteEntry("/v1/models/{model_id:path}", ("GET",), models.get_model),
        RouteEntry("/health", ("GET",), admin.health),
        RouteEntry("/ready", ("GET",), admin.ready),
        RouteEntry("/admin/status", ("GET",), admin.status),
        RouteEntry("/admin/reload", ("POST",), admin.reload),
        RouteEntry("/v1/route/explain", ("POST",), explain.explain),
        RouteEntry("/v1/rankings", ("GET",), views.rankings),
        RouteEntry("/v1/rankings/series", ("GET",), views.series),
        RouteEntry("/rankings", ("GET",), rankings.page("rankings.html")),
        RouteEntry("/rankings/rankings.js", ("GET",), rankings.page("rankings.js")),
        RouteEntry("/rankings/rankings.css", ("GET",), rankings.page("rankings.css")),
        RouteEntry("/metrics", ("GET",), scrape.metrics),
        RouteEntry("/admin/keys", ("GET",), keys.list_keys),
        RouteEntry("/admin/keys", ("POST",), keys.create_key),
        RouteEntry("/admin/keys/{name}", ("PATCH",), keys.update_key),
        RouteEntry("/admin/keys/{name}/revoke", ("POST",), keys.revoke_key),
        RouteEntry("/admin/keys/{name}/rotate", ("POST",), keys.rotate_key),
        RouteEntry("/admin/teams", ("GET",), keys.list_teams),
        RouteEntry("/admin/teams", ("POST",), keys.create_team),
        RouteEntry("/admin/teams/{name}", ("PATCH",), keys.update_team),
        RouteEntry("/admin/audit", ("GET",), keys.audit),
        RouteEntry("/v1/key", ("GET",), keys.current_key),
        RouteEntry("/v1/responses/input_tokens", fast, token_counts.responses_input_tokens, fast=True),
        RouteEntry("/v1/responses/compact", ("POST",), stored_responses.compact),  # else a 405 of the GET below
        RouteEntry("/v1/responses/{response_id}/input_items", ("GET",), stored_responses.input_items),
        RouteEntry("/v1/responses/{response_id}/cancel", ("POST",), stored_responses.cancel),
        RouteEntry("/v1/responses/{response_id}", ("GET",), stored_responses.retrieve),
        RouteEntry("/v1/responses/{response_id}", ("DELETE",), stored_responses.delete),
        RouteEntry("/v1/responses", fast, responses.responses, fast=True),
        RouteEntry("/openapi.json", ("GET",), openapi.openapi),
    ]


def starlette_routes(table: list[RouteEntry]) -> list[Route]:
    """Each entry as a route on FastAPI's router, the fast ones mounted as ASGI apps."""
    return [
        Route(entry.path, _Asgi(entry.endpoint) if entry.fast else entry.endpoint, methods=list(entry.methods))
        for entry in table
    ]


def fast_routes(table: list[RouteEntry]) -> Mapping[str, AsgiHandler]:
    """Path -> ASGI handler of the entries the front door serves."""
    return {entry.path: entry.endpoint for entry in table if entry.fast}
