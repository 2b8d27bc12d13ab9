"""OpenAI-shaped errors.

Every error the gateway returns has the body `{"error": {"message", "type", "param", "code"}}`
and a status code the OpenAI SDKs map to their exception classes (400 BadRequestError,
401 AuthenticationError, 404 NotFoundError, 413, 429 RateLimitError, 5xx InternalServerError).
Code anywhere in the request path raises `GatewayError`; the HTTP layer renders it.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class GatewayError(Exception):
    """An error to return to the client as-is, in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}
        # Structured detail, as OpenRouter's `error.metadata` (e.g. why each candidate was skipped).
        self.metadata = metadata

    def body(self) -> dict[str, dict[str, object]]:
        error: dict[str, object] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        if self.metadata is not None:
            error["metadata"] = self.metadata
        return {"error": error}

    def to_response(self, extra_headers: dict[str, str] | None = None) -> Response:
        headers = dict(self.headers)
        if extra_headers:
            headers.update(extra_headers)
        return Response(
            orjson.dumps(self.body()), status_code=self.status, media_type="application/json", headers=headers
        )


class ContextLengthExceeded(GatewayError):
    """The 400 for a prompt no candidate's context holds (routing's estimate, or an upstream's
    own refusal), with its figures when known: the prompt's tokens and the most any candidate
    takes. The OpenAI-shaped body is a GatewayError's; Anthropic's ingress words it as
    Anthropic's API does (`gateway.protocol.messages_answer.anthropic_error`)."""

    def __init__(
        self,
        message: str,
        *,
        param: str,
        prompt_tokens: int | None = None,
        maximum: int | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None:
        super().__init__(400, message, code="context_length_exceeded", param=param, metadata=metadata)
        self.prompt_tokens = prompt_tokens
        self.maximum = maximum


class UpstreamOverloaded(GatewayError):
    """The 502 for a call every candidate refused as overloaded (a 503, or Anthropic's 529).
    OpenAI-shaped, it is the gateway's usual 502 for a failed upstream (the same body);
    Anthropic's ingress says it as Anthropic's API does, 529 `overloaded_error`
    (`gateway.protocol.messages_answer.anthropic_error`): the SDKs' OverloadedError, and what Claude
    Code counts, on repeated 529s, to fall back to its other model."""

    def __init__(self, message: str) -> None:
        super().__init__(502, message, code="upstream_error")


# The longest Retry-After a client should be sent to sleep through before retrying by itself
# (the openai SDK's own bound, MAX_RETRY_AFTER_DELAY: it waits up to two minutes and gives up
# past them; the anthropic SDK and Codex CLI wait any). A 429 that would name a longer wait
# (a budget's reset, an upstream's hour) says it in its message, with no Retry-After and with
# `x-should-retry: false`: Codex CLI 0.171.0, which reads no `x-should-retry`, slept a whole
# Retry-After of hours before its first retry and its turn hung.
SDK_WAIT_MAX_S = 120.0


def retry_headers(seconds: int) -> dict[str, str]:
    """A 429's headers for a wait of `seconds`: Retry-After for one a client may sit out, else
    none and `x-should-retry: false` (the message says when)."""
    return {"retry-after": str(seconds)} if seconds <= SDK_WAIT_MAX_S else {"x-should-retry": "false"}


# How much of a client's name or id an error message quotes: enough to recognise it, and a
# 100 KB `model` or id is not sent back whole (nor into logs and proxies that keep bodies).
ECHO_LIMIT = 200


def echoed(value: object) -> str:
    """A client-supplied model name or id as an error message quotes it: its first
    `ECHO_LIMIT` characters, then an ellipsis."""
    text = str(value)
    return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "…"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def model_not_found(model: object) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{echoed(model)}` does not exist or is not routed by this gateway. GET /v1/models lists what is.",
        param="model",
        code="model_not_found",
    )
