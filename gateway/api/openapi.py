"""GET /openapi.json: the gateway's own OpenAPI 3.1 document, every route it serves.

Written by hand rather than generated: the hot routes are raw ASGI (no FastAPI models to
derive it from), and what matters to a client is the wire contract (the OpenAI, Anthropic
and OpenRouter shapes the gateway speaks, and its error bodies), which is stated here once.
Request bodies list the fields the gateway itself reads and checks; every other field passes
through to the upstream (`additionalProperties` is left open). Each operation lists the
statuses the gateway answers with and their bodies; `tests/test_openapi.py` fuzzes the
running gateway against this document with schemathesis (no 5xx, no answer outside it).
The document is built once, at import, and served as bytes.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

JSON = "application/json"
OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
ANTHROPIC_ERROR = {"$ref": "#/components/schemas/AnthropicError"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int, shape: dict[str, Any] = OPENAI_ERROR) -> dict[str, Any]:
    """Error answers: the listed statuses, and any other status in the same shape."""
    out = {str(status): _json(shape, _ERROR_MEANINGS.get(status, "Error")) for status in statuses}
    out["default"] = _json(shape, "Any other error, in the same shape")
    return out


_ERROR_MEANINGS = {
    400: "Invalid request (the field is named in `param`)",
    401: "Missing, unknown, revoked or expired API key",
    403: "Not allowed for this key (model not allowed, admin only)",
    404: "Unknown model, route or resource",
    409: "Conflict (a key or team of that name exists)",
    413: "Request body too large",
    422: "The new configuration is invalid",
    429: "A limit was reached (`Retry-After` says when to retry)",
    502: "The upstream failed or answered with something malformed",
    503: "No backend can take the request now (`Retry-After`), or a store is unreachable",
    504: "The upstream timed out",
}

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_STREAM_OR_JSON = {
    JSON: {"schema": {"type": "object"}},
    "text/event-stream": {"schema": {"type": "string"}},
}


def _proxy_operation(
    summary: str, request: str, ok: dict[str, Any], error: dict[str, Any] = OPENAI_ERROR
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": _BEARER,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{request}"}}},
            },
            "responses": {
                "200": {"description": "The answer (an event stream when `stream` is true)", "content": ok},
                **_errors(400, 401, 403, 404, 413, 429, 502, 503, 504, shape=error),
            },
        }
    }


_LIMITS = {
    "rpm": {"type": ["integer", "null"], "minimum": 0},
    "tpm": {"type": ["integer", "null"], "minimum": 0},
    "max_concurrent": {"type": ["integer", "null"], "minimum": 0},
    "budget_usd": {"type": ["number", "null"], "minimum": 0},
    "budget_period": {"enum": ["day", "month", None]},
}
_KEY_BODY = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "models": {"type": ["array", "null"], "items": {"type": "string"}},
        "team": {"type": ["string", "null"]},
        "expires": {"type": ["string", "null"]},
        **_LIMITS,
    },
}
_ADMIN_ERRORS = _errors(400, 401, 403, 404, 409, 413, 503)
_OBJECT = {"type": "object"}


def _admin(method: str, summary: str, body: dict[str, Any] | None = None, ok: str = "200") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "security": _BEARER,
        "responses": {ok: _json(_OBJECT, "Done"), **_ADMIN_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = {"content": {JSON: {"schema": body}}}
    return {method: operation}


def _name_parameter() -> list[dict[str, Any]]:
    return [{"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]


_RANKING_PARAMETERS = [
    {"name": "end", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "key", "in": "query", "description": "admin only: one key's traffic", "schema": {"type": "string"}},
    {"name": "team", "in": "query", "description": "admin only: one team's traffic", "schema": {"type": "string"}},
]
_SCOPE = {
    "type": "object",
    "required": ["key", "team", "all_visible"],
    "properties": {
        "key": {"type": ["string", "null"]},
        "team": {"type": ["string", "null"]},
        "all_visible": {"type": "boolean"},
    },
}

PATHS: dict[str, Any] = {
    "/v1/chat/completions": _proxy_operation(
        "OpenAI chat completions, routed", "ChatCompletionRequest", _STREAM_OR_JSON
    ),
    "/v1/completions": _proxy_operation("OpenAI legacy completions, routed", "CompletionRequest", _STREAM_OR_JSON),
    "/v1/embeddings": _proxy_operation(
        "OpenAI embeddings, routed", "EmbeddingRequest", {JSON: {"schema": {"type": "object"}}}
    ),
    "/v1/responses": _proxy_operation("OpenAI Responses, routed", "ResponsesRequest", _STREAM_OR_JSON),
    "/v1/messages": _proxy_operation(
        "Anthropic Messages, routed", "MessagesRequest", _STREAM_OR_JSON, error=ANTHROPIC_ERROR
    ),
    "/v1/messages/count_tokens": {
        "post": {
            "summary": "Anthropic's token count of a Messages request (the gateway's estimate)",
            "security": _BEARER,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/MessagesRequest"}}},
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["input_tokens"],
                        "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
                    },
                    "The count",
                ),
                **_errors(400, 401, 413, 429, shape=ANTHROPIC_ERROR),
            },
        }
    },
    "/v1/responses/input_tokens": {
        "post": {
            "summary": "OpenAI's input token count of a Responses request (the gateway's estimate)",
            "security": _BEARER,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/ResponsesRequest"}}},
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["object", "input_tokens"],
                        "properties": {
                            "object": {"const": "response.input_tokens"},
                            "input_tokens": {"type": "integer", "minimum": 0},
                        },
                    },
                    "The count",
                ),
                **_errors(400, 401, 403, 404, 413, 429, 503),
            },
        }
    },
    "/v1/responses/compact": {
        "post": {
            "summary": "OpenAI's compaction: not supported (a 404 saying so; compact on the client)",
            "security": _BEARER,
            "responses": _errors(401, 404, 429),
        }
    },
    "/v1/responses/{response_id}": {
        "parameters": [
            {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        ],
        "get": {
            "summary": "A stored Response (its owner's key only)",
            "security": _BEARER,
            "responses": {"200": _json(_OBJECT, "The Response"), **_errors(401, 404, 429, 503)},
        },
        "delete": {
            "summary": "Delete a stored Response (its owner's key only)",
            "security": _BEARER,
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["id", "object", "deleted"],
                        "properties": {
                            "id": {"type": "string"},
                            "object": {"const": "response"},
                            "deleted": {"type": "boolean"},
                        },
                    },
                    "The deletion",
                ),
                **_errors(401, 404, 429, 503),
            },
        },
    },
    "/v1/responses/{response_id}/cancel": {
        "parameters": [
            {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        ],
        "post": {
            "summary": "Cancel a background Response: the gateway runs none (a 400 for a stored Response)",
            "security": _BEARER,
            "responses": _errors(400, 401, 404, 429, 503),
        },
    },
    "/v1/responses/{response_id}/input_items": {
        "parameters": [
            {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        ],
        "get": {
            "summary": "The input items of a stored Response, paged (its owner's key only)",
            "security": _BEARER,
            "parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                {"name": "after", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": _json(_OBJECT, "A list of items"), **_errors(400, 401, 404, 429, 503)},
        },
    },
    "/v1/models": {
        "get": {
            "summary": "Models and routes this gateway serves (OpenAI's list shape)",
            "security": _BEARER,
            "responses": {
                "200": _json({"$ref": "#/components/schemas/ModelList"}, "The models"),
                **_errors(401, 429),
            },
        }
    },
    "/v1/models/{model_id}": {
        "get": {
            "summary": "One model or route",
            "security": _BEARER,
            "parameters": [
                {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            ],
            "responses": {"200": _json(_OBJECT, "The model"), **_errors(401, 404, 429)},
        }
    },
    "/v1/route/explain": {
        "post": {
            "summary": "How a request would be routed: every candidate, filter and score",
            "security": _BEARER,
            "parameters": [
                {
                    "name": "endpoint",
                    "in": "query",
                    "description": "Whose request shape the body is (default chat)",
                    "schema": {"enum": ["chat", "messages", "responses", "embeddings", "completions"]},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
            },
            "responses": {"200": _json(_OBJECT, "The decision, explained"), **_errors(400, 401, 403, 404, 413, 429)},
        }
    },
    "/v1/rankings": {
        "get": {
            "summary": "Rankings of the traffic this key may see (a client key: its own; the admin key: all)",
            "security": _BEARER,
            "parameters": [
                {"name": "window", "in": "query", "schema": {"enum": ["day", "week", "month"]}},
                *_RANKING_PARAMETERS,
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["window", "totals", "models", "scope"],
                        "properties": {"scope": _SCOPE, "models": {"type": "array"}, "totals": _OBJECT},
                    },
                    "The rankings",
                ),
                **_errors(400, 401, 403, 429, 503),
            },
        }
    },
    "/v1/rankings/series": {
        "get": {
            "summary": "Tokens per model per day or week, for the chart (same visibility as /v1/rankings)",
            "security": _BEARER,
            "parameters": [
                {"name": "granularity", "in": "query", "schema": {"enum": ["day", "week"]}},
                {"name": "periods", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 120}},
                *_RANKING_PARAMETERS,
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["granularity", "periods", "models", "totals", "scope"],
                        "properties": {"scope": _SCOPE, "totals": {"type": "array", "items": {"type": "integer"}}},
                    },
                    "The series",
                ),
                **_errors(400, 401, 403, 429, 503),
            },
        }
    },
    "/v1/key": {
        "get": {
            "summary": "The calling virtual key: spend today and this month, budget, limits (OpenRouter's shape)",
            "security": _BEARER,
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "type": "object",
                                "required": ["label", "usage", "limit"],
                                "properties": {
                                    "label": {"type": "string"},
                                    "usage": {"type": "number"},
                                    "limit": {"type": ["number", "null"]},
                                    "limit_remaining": {"type": ["number", "null"]},
                                    "team_budget": {
                                        "description": "The key's team's budget, which its calls spend too",
                                        "type": ["object", "null"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "limit": {"type": "number"},
                                            "limit_reset": {"enum": ["daily", "monthly"]},
                                            "limit_remaining": {"type": "number"},
                                            "usage_daily": {"type": "number"},
                                            "usage_monthly": {"type": "number"},
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "The key's state",
                ),
                **_errors(401, 404, 429, 503),
            },
        }
    },
    "/rankings": {
        "get": {
            "summary": "The rankings page (HTML; it asks for a key when the gateway has keys)",
            "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}},
        }
    },
    "/health": {
        "get": {
            "summary": "Liveness: answers once the gateway serves",
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}, "Serving"
                )
            },
        }
    },
    "/ready": {
        "get": {
            "summary": "Readiness: whether this process can serve calls (its key store answered once)",
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["status"], "properties": {"status": {"const": "ready"}}}, "Ready"
                ),
                "503": _json(
                    {
                        "type": "object",
                        "required": ["status", "reason"],
                        "properties": {"status": {"const": "not_ready"}, "reason": {"type": "string"}},
                    },
                    "Not ready yet",
                ),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    },
    "/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": _json(_OBJECT, "The OpenAPI document")}},
    },
    "/admin/status": {
        "get": {
            "summary": "Config version, backends, circuits",
            "security": _BEARER,
            "responses": {"200": _json(_OBJECT, "Status"), **_errors(401, 403, 429)},
        }
    },
    "/admin/reload": {
        "post": {
            "summary": "Reload the routing config now",
            "security": _BEARER,
            "responses": {
                "200": _json(_OBJECT, "Reloaded (or unchanged)"),
                "422": _json(_OBJECT, "The new config is invalid; the old one stays"),
                **_errors(401, 403, 429),
            },
        }
    },
    "/admin/keys": {
        **_admin("get", "List virtual keys (admin key only)"),
        **_admin("post", "Create a virtual key; its plain key is in the answer, once", _KEY_BODY, ok="201"),
    },
    "/admin/keys/{name}": {
        "parameters": _name_parameter(),
        **_admin("patch", "Change a key's limits, models, team or expiry", _KEY_BODY),
    },
    "/admin/keys/{name}/revoke": {"parameters": _name_parameter(), **_admin("post", "Revoke a key")},
    "/admin/keys/{name}/rotate": {
        "parameters": _name_parameter(),
        **_admin(
            "post",
            "Issue a new key; the one it replaces stays valid for `overlap` (at most 30d), any older one ends now",
            {"type": "object", "properties": {"overlap": {"type": "string"}}},
        ),
    },
    "/admin/teams": {
        **_admin("get", "List teams"),
        **_admin(
            "post", "Create a team", {"type": "object", "properties": {"name": {"type": "string"}, **_LIMITS}}, ok="201"
        ),
    },
    "/admin/teams/{name}": {
        "parameters": _name_parameter(),
        **_admin("patch", "Change a team's limits", {"type": "object", "properties": _LIMITS}),
    },
    "/admin/audit": _admin("get", "The audit log of admin actions, newest last"),
}

_USAGE_ACCOUNTING = {  # chat's, text completions' and embeddings' (gateway.api.usage_cost)
    "type": "object",
    "description": "OpenRouter's usage accounting: `include: true` adds `usage.cost` (USD)",
    "properties": {"include": {"type": "boolean"}},
}
_MESSAGES_ITEM = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"type": "string"}, "content": {}},
}

SCHEMAS: dict[str, Any] = {
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                    "metadata": {"type": "object"},
                },
            }
        },
    },
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error", "request_id"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
            "request_id": {"type": "string", "description": "the request, as the `request-id` header names it"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a model, a route, or `auto`"},
            "models": {"type": "array", "items": {"type": "string"}, "description": "OpenRouter's fallback list"},
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGES_ITEM},
            "stream": {"type": ["boolean", "null"]},
            "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
            "n": {"type": ["integer", "null"], "minimum": 1},
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "tools": {"type": ["array", "null"]},
            "usage": _USAGE_ACCOUNTING,
            "provider": {"type": "object", "description": "OpenRouter's provider preferences"},
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "prompt": {"type": ["string", "array"]},
            "stream": {"type": ["boolean", "null"]},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "usage": _USAGE_ACCOUNTING,
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {"type": ["string", "array"]},
            "usage": _USAGE_ACCOUNTING,
        },
    },
    "ResponsesRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {"type": ["string", "array"]},
            "instructions": {"type": ["string", "null"]},
            "stream": {"type": ["boolean", "null"]},
            "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
        },
    },
    "MessagesRequest": {
        "type": "object",
        "required": ["model", "messages", "max_tokens"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGES_ITEM},
            "system": {"type": ["string", "array"]},
            "max_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": "boolean"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object"],
                    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
                },
            },
        },
    },
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("open-model-gateway")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0.0.0"


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "open-model-gateway",
            "version": _version(),
            "description": "OpenAI-compatible routing gateway for open models. Errors are OpenAI's shape "
            "(Anthropic's on /v1/messages). See README.md for keys, limits and who sees what.",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@functools.cache
def _document_bytes() -> bytes:
    return orjson.dumps(document())


async def openapi(request: Request) -> Response:
    return Response(_document_bytes(), media_type=JSON)
