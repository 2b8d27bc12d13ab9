"""Why an upstream call failed, as classes that carry their own failover policy.

As httpx expresses retry policy through its exception tree, each class here says what the
fallback loop and the circuit breakers do about it, so neither parses labels back into
numbers nor knows which HTTP client raised what:

    UpstreamError                   retryable / same_candidate_retry / backend_fault / reason
    ├── UpstreamUnreachable         cannot connect                                  "connect"
    ├── UpstreamTimeout             no answer in time                               "timeout"
    │   ├── FirstByteTimeout        nothing (or no first content) within the allowance
    │   └── StreamIdleTimeout       a started stream went silent (`stream_idle_timeout_s`)
    ├── UpstreamProtocolError       answered badly (reset, garbage)                 "protocol"
    │   └── StreamBroken            the connection broke mid-answer
    ├── MalformedAnswer             2xx whose body is not the wire format           "malformed"
    ├── ResponseTooLarge            over `max_response_bytes` (no backend fault)   "response_too_large"
    └── UpstreamStatusError         a non-2xx answer (`status`, `body`, `retry_after`)  "http_<status>"
        ├── RateLimited             429                                             "rate_limited"
        ├── ServerError             5xx, 408
        └── ClientRejected          other 4xx: the upstream judged the request
            ├── AuthRejected        401/403: the gateway's own key for that backend
            ├── ContextTooLong      the prompt does not fit this model              "context_length"
            ├── FeatureUnsupported  this backend lacks a feature the request uses
            ├── BackendMisconfigured  the upstream does not know the model asked for "misconfigured"
            └── RequestNotEncodable  the gateway cannot write the request (never sent)  "request_not_encodable"

The three policy attributes:
- `retryable`: another candidate may succeed where this one failed (the loop moves on);
- `same_candidate_retry`: this candidate may succeed if asked again shortly (a 500 once, a
  429 or 503 with a short `Retry-After`); never after a timeout or a refused connection;
- `backend_fault`: the failure says the backend is unwell, so its circuit counts it (a 429,
  a request the upstream judged invalid, a context overflow do not).

`reason` is the bounded label metrics, logs and the ledger show; the labels are the ones
the dashboards already read.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """A backend call that did not produce a usable answer. The policy attributes are class
    defaults; a status error sets them per instance from its status and `Retry-After`."""

    retryable: bool = True
    same_candidate_retry: bool = False
    backend_fault: bool = True
    reason: str = "upstream_error"
    status: int | None = None
    body: bytes = b""
    retry_after: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UpstreamUnreachable(UpstreamError):
    reason = "connect"


class UpstreamTimeout(UpstreamError):
    reason = "timeout"


class FirstByteTimeout(UpstreamTimeout):
    """No answer (or, streamed, no first content) within the allowance: asking the same
    candidate again would likely wait as long again."""


class StreamIdleTimeout(UpstreamTimeout):
    """A stream that had started sent nothing for `stream_idle_timeout_s`."""


class UpstreamProtocolError(UpstreamError):
    reason = "protocol"


class StreamBroken(UpstreamProtocolError):
    """The connection ended mid-answer."""


class MalformedAnswer(UpstreamError):
    """A 2xx answer that is not the wire format (a failure of the backend). Its message is the
    gateway's own words: upstream bytes are not quoted. `expected` names the answer the call
    asked for, as the client's 502 says it (the fallback loop sets it from the call's format:
    a Messages call passed through expects a `message`, not a chat completion)."""

    reason = "malformed"
    expected = "a valid chat completion"


class ResponseTooLarge(UpstreamError):
    """Over `max_response_bytes`: most often the request's doing (a batch of 2,048 float
    embeddings is about 66 MB), so another candidate is tried but no circuit counts it: a
    client must not be able to open a healthy backend's circuit for everyone."""

    reason = "response_too_large"
    backend_fault = False


# A 500, 502 or 504 is often one bad moment (a worker restarting, a proxy hiccup): asked once
# more. A 503 says the service is unavailable: moved on from, unless its Retry-After is short.
_TRANSIENT = frozenset({500, 502, 504})


class UpstreamStatusError(UpstreamError):
    """A non-2xx answer. `body` is the upstream's error body (bounded, key redacted)."""

    def __init__(self, message: str, status: int, body: bytes = b"", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.reason = self._label(status)
        self.same_candidate_retry = self._same_candidate(status, retry_after)

    def _label(self, status: int) -> str:
        return f"http_{status}"

    def _same_candidate(self, status: int, retry_after: float | None) -> bool:
        return False


class RateLimited(UpstreamStatusError):
    """429: not the backend failing (no circuit), but busy for us now. Asked again on the
    same candidate only when it said how soon (`Retry-After`, up to `retry_after_max_s`)."""

    backend_fault = False

    def _label(self, status: int) -> str:
        return "rate_limited"

    def _same_candidate(self, status: int, retry_after: float | None) -> bool:
        return retry_after is not None


class ServerError(UpstreamStatusError):
    """5xx (and 408): the backend failing."""

    def _same_candidate(self, status: int, retry_after: float | None) -> bool:
        return status in _TRANSIENT or retry_after is not None


class Redirected(UpstreamStatusError):
    """3xx: redirects are not followed (an API upstream that redirects is misconfigured, most
    often a base_url missing its path or its https); the message names the Location. Another
    candidate may serve, and the backend is at fault (its breaker counts it)."""


class ClientRejected(UpstreamStatusError):
    """The upstream judged the request invalid: no other candidate will think otherwise,
    except that a 404 may be this backend not serving the endpoint or model."""

    backend_fault = False

    def __init__(self, message: str, status: int, body: bytes = b"", retry_after: float | None = None) -> None:
        super().__init__(message, status, body, retry_after)
        self.retryable = status == 404


class AuthRejected(ClientRejected):
    """401/403: the gateway's own key for this backend is wrong; other backends have theirs."""

    def __init__(self, message: str, status: int, body: bytes = b"", retry_after: float | None = None) -> None:
        super().__init__(message, status, body, retry_after)
        self.retryable = True


class ContextTooLong(ClientRejected):
    """Too long for this model: a longer-context candidate may take it."""

    def __init__(self, message: str, status: int, body: bytes = b"", retry_after: float | None = None) -> None:
        super().__init__(message, status, body, retry_after)
        self.retryable = True

    def _label(self, status: int) -> str:
        return "context_length"


class FeatureUnsupported(ClientRejected):
    """A 400/422 naming a feature or parameter this backend lacks (vLLM serves /v1/completions
    but answers `suffix`, fill-in-the-middle, with "suffix is not currently supported"; the
    wordings: `gateway.backends.base.looks_like_unsupported_feature`), or OpenRouter's 404 "No
    endpoints found that support ...": a lack of this backend, as a context overflow is, so
    another candidate may take it; no circuit counts it, and it is no misconfiguration.
    Refused by every candidate, the client gets the last upstream's own 4xx."""

    def __init__(self, message: str, status: int, body: bytes = b"", retry_after: float | None = None) -> None:
        super().__init__(message, status, body, retry_after)
        self.retryable = True


class BackendMisconfigured(ClientRejected):
    """The upstream does not know the model the gateway asked for (its `upstream_id`), or
    the URL: the gateway's configuration is wrong, not the client's request. Another
    candidate may be configured right; the circuit counts it, as it will not heal alone."""

    backend_fault = True

    def __init__(self, message: str, status: int, body: bytes = b"", retry_after: float | None = None) -> None:
        super().__init__(message, status, body, retry_after)
        self.retryable = True

    def _label(self, status: int) -> str:
        return "misconfigured"

    @classmethod
    def of(cls, error: UpstreamError) -> BackendMisconfigured:
        return cls(error.message, error.status or 404, error.body)


class RequestNotEncodable(ClientRejected):
    """The request could not be written for the upstream: JSON nested deeper than the encoder
    writes (orjson reads about 1,000 levels, writes 254), which only a client sends. Nothing
    was sent; no candidate would fare better, and no backend is at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)

    def _label(self, status: int) -> str:
        return "request_not_encodable"


def status_error(
    message: str,
    status: int,
    body: bytes = b"",
    retry_after: float | None = None,
    *,
    context_overflow: bool = False,
    unsupported: bool = False,
) -> UpstreamStatusError:
    """The class a non-2xx status is (`context_overflow`: the body says the prompt is too long;
    `unsupported`: it says the backend does not support something the request uses)."""
    if context_overflow and status in (400, 413, 422):
        return ContextTooLong(message, status, body, retry_after)
    if unsupported and status in (400, 404, 422):
        return FeatureUnsupported(message, status, body, retry_after)
    if status == 429:
        return RateLimited(message, status, body, retry_after)
    if status in (401, 403):
        return AuthRejected(message, status, body, retry_after)
    if status >= 500 or status == 408:
        return ServerError(message, status, body, retry_after)
    if 300 <= status < 400:
        return Redirected(message, status, body, retry_after)
    return ClientRejected(message, status, body, retry_after)
