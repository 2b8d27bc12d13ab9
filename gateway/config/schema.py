"""The routing YAML's schema, as pydantic models.

This is the admin's interface: field names here are what they write, so they change only
in backward-compatible ways. Runtime indexes derived from it live in `snapshot`.
"""

from __future__ import annotations

import re
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator, model_validator

from gateway.config.tasks import Task
from gateway.config.vendors import VENDORS, PrefillMode

# A backend type is valid iff it is a key of the vendor registry: one source of truth, and a
# refused type's error lists them all. Type checkers see a plain str (the set is data).
if TYPE_CHECKING:
    BackendType = str
else:
    BackendType = Literal[tuple(VENDORS)]

# The names of `gateway.routing.strategies.STRATEGIES`, the registry that scores them. Config
# sits below routing and cannot read it, so the names are written here too and
# tests/routing/test_strategies.py fails when the two differ.
Strategy = Literal["cost", "latency", "throughput", "ordered", "weighted"]
Capability = Literal["tools", "json", "json_schema", "vision", "reasoning"]
# The ingress APIs, by the name the ledger's `endpoint` field and a backend's `apis` use.
ApiName = Literal["chat", "messages", "responses", "completions", "embeddings"]
# What a model offer answers: chat models serve chat, messages, responses and completions;
# embedding models serve only `/v1/embeddings`.
ModelKind = Literal["chat", "embedding"]

# Anthropic bills 5-minute prompt-cache writes at 1.25x the model's input price.
ANTHROPIC_CACHE_WRITE_FACTOR = 1.25

# RFC 9110's field names (tokens) and what a field value may not hold (CR, LF, NUL, other
# controls but the tab).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A chat message's field name, as `refused_message_fields` lists them.
_MESSAGE_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What an assistant turn says and the calls later messages answer: left out, the conversation
# would change (a turn saying nothing, a tool result answering no call), so never refused.
_CONVERSATION_FIELDS = ("role", "content", "tool_calls", "function_call")


def _wants_number(annotation: Any) -> bool:
    """Whether a field of this type holds a number and nothing a boolean could be (int,
    float, constrained, or optional: `int | None`)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _wants_number(get_args(annotation)[0])
    if origin is Union or origin is UnionType:
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return bool(args) and all(_wants_number(arg) for arg in args)
    return isinstance(annotation, type) and issubclass(annotation, (int, float)) and annotation is not bool


class Strict(BaseModel):
    # `.inf` (or 1e400) passed every `ge=0`: a price of `$inf`, a timeout never reached.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads `yes`, `on` and `true` as booleans, and pydantic takes a boolean for a
        number (`rpm: yes` was a limit of 1 request a minute): refused where a number is
        expected, in a field or a name -> number map (`rate_limits.keys`). Quoted numbers
        stay numbers: `${VAR}` interpolation makes strings of them."""
        if info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool):
            if _wants_number(annotation):
                raise ValueError("expected a number, not true/false")
        elif isinstance(value, dict) and get_origin(annotation) is dict:
            inner = get_args(annotation)[1]
            bad = next((k for k, v in value.items() if isinstance(v, bool)), None)
            if bad is not None and _wants_number(inner):
                raise ValueError(f"`{bad}`: expected a number, not true/false")
        return value


class ModelOffer(Strict):
    """One model as one backend serves it. Prices are USD per 1M tokens."""

    upstream_id: str | None = None
    context_length: int = Field(default=32768, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    input_price: float = Field(default=0.0, ge=0)
    output_price: float = Field(default=0.0, ge=0)
    cached_input_price: float | None = Field(default=None, ge=0)
    # Prompt tokens written to a prompt cache. Unset: 1.25x `input_price` on `type: anthropic`
    # backends (Anthropic's 5-minute cache writes; 1-hour writes cost 2x: set it), else
    # `input_price` (OpenAI-compatible vendors bill writes, where they report them, as input).
    cache_write_price: float | None = Field(default=None, ge=0)
    weight: float = Field(default=1.0, ge=0)
    # What this backend's deployment of the model supports, when it differs from the model's
    # own `models.<id>.capabilities` (e.g. a vLLM server started without a tool parser).
    capabilities: list[Capability] | None = None
    # Whether this offer may continue a stream that broke on another candidate, and how
    # (`gateway.config.vendors.PrefillMode`); false: never. Unset: the backend type's default.
    prefill: PrefillMode | Literal[False] | None = None
    # Whether a translated Messages or Responses request sends this offer the reasoning of
    # earlier assistant turns (chat's `reasoning_content`). Unset: the backend type's default
    # (`gateway.config.vendors.Vendor.reasoning_history`).
    reasoning_history: bool | None = None
    # `embedding`: this offer answers only `/v1/embeddings`, and chat endpoints never route to it.
    kind: ModelKind = "chat"
    # Embedding offers: the vector length the model returns when a request sets no
    # `dimensions` (the `mock` backend synthesises vectors of this size; default 1536).
    dimensions: int | None = Field(default=None, gt=0, le=65536)

    def longest_answer(self, ceiling: int, prompt_tokens: int = 0) -> int:
        """The most tokens this offer can answer with when asked for at most `ceiling`: its
        `max_output_tokens`, and its context less the prompt (at least 1). What a candidate
        is asked under Anthropic's max_tokens, and what spend reserves for it."""
        cap = ceiling if self.max_output_tokens is None else min(ceiling, self.max_output_tokens)
        return max(min(cap, self.context_length - prompt_tokens), 1)

    @field_validator("upstream_id")
    @classmethod
    def _printable_upstream_id(cls, value: str | None) -> str | None:
        # `gateway models` prints it, and no upstream names a model with a control character.
        if value is not None:
            _check_printable("upstream_id", value)
        return value

    @model_validator(mode="after")
    def _dimensions_for_embeddings(self) -> ModelOffer:
        if self.dimensions is not None and self.kind != "embedding":
            raise ValueError("`dimensions` is for `kind: embedding` offers only")
        return self


class CircuitConfig(Strict):
    """Per backend+model breaker: open after consecutive failures, probe again after a cooldown.

    The cooldown starts short, so a backend that was down briefly gets traffic back within
    seconds, and doubles with each failed probe, so one that stays down is probed less and
    less often, up to `cooldown_max_s`. The default cap keeps a recovered backend's return
    within 5 s; a larger one trades that for fewer probe requests to a long-dead backend.
    """

    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=2.0, gt=0)
    # Never below `cooldown_s`: a policy written when the cooldown was fixed (`cooldown_s: 30`
    # alone) keeps its fixed cooldown.
    cooldown_max_s: float = Field(default=4.0, gt=0)

    @model_validator(mode="after")
    def _cap_not_below_start(self) -> CircuitConfig:
        if "cooldown_max_s" in self.model_fields_set and self.cooldown_max_s < self.cooldown_s:
            raise ValueError(
                f"cooldown_max_s ({self.cooldown_max_s:g}) must be at least cooldown_s ({self.cooldown_s:g})"
            )
        return self


class HealthCheckConfig(Strict):
    """Active probe of the backend (`/health` for vLLM, `/models` for the others)."""

    enabled: bool = False
    interval_s: float = Field(default=15.0, gt=0)
    timeout_s: float = Field(default=3.0, gt=0)
    # Consecutive failed probes before the backend is taken out of routing.
    unhealthy_threshold: int = Field(default=2, ge=1)


class MaxPrice(Strict):
    """Price ceilings in USD per 1M tokens, as OpenRouter's `provider.max_price`."""

    prompt: float | None = Field(default=None, ge=0)
    completion: float | None = Field(default=None, ge=0)


class BackendConfig(Strict):
    type: BackendType
    base_url: str | None = None
    api_key: str | None = None
    enabled: bool = True
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # Time allowed for the first byte of the answer; past it the call fails over.
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    # Once a stream has produced content: the longest silence between its reads before it
    # counts as stalled (a `StreamIdleTimeout`, continued elsewhere when it can be). Separate
    # from `timeout_s`, which bounds non-streamed answers and a stream's wait for its start.
    stream_idle_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=512, ge=1)
    # Upstream calls in flight at once; past it the backend is skipped like one answering
    # 429 (gateway/backends/inflight.py). None: max_connections.
    max_inflight: int | None = Field(default=None, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    # The APIs this backend serves natively (passed through as is; the others are translated
    # through chat completions). Unset: the vendor registry's default for `type`; read the
    # resolved set as `served_apis` (or `Offer.apis`), never this field.
    apis: list[ApiName] | None = None
    # Assistant-message fields this backend's server refuses with a 400 (Cerebras:
    # `reasoning_content`): left out of what it is sent. Unset: the vendor registry's
    # default for `type` (`Vendor.refused_message_fields`: Groq's); read the resolved set as
    # `refused_fields` (or `Offer.refused_message_fields`), never this field.
    refused_message_fields: list[str] | None = None
    models: dict[str, ModelOffer] = Field(default_factory=dict)
    circuit: CircuitConfig = CircuitConfig()
    health_check: HealthCheckConfig = HealthCheckConfig()
    # mock backend only: simulated latency to first token and generation speed.
    delay_ms: float = Field(default=0.0, ge=0)
    tokens_per_second: float = Field(default=0.0, ge=0)  # 0: no pacing
    completion_tokens: int = Field(default=16, ge=1)

    @field_validator("models")
    @classmethod
    def _canonical_ids(cls, models: dict[str, ModelOffer]) -> dict[str, ModelOffer]:
        for model_id in models:
            _check_canonical(model_id)
        return models

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        # Checked here, not at the first call: a newline in a value or a name (or a space in
        # a name) passed validation and reload, then every call to the backend failed (502)
        # or sent the upstream a field no HTTP server accepts.
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"`{name!r}` is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)")
            if _HEADER_VALUE_FORBIDDEN.search(value):
                raise ValueError(f"the value of `{name}` holds a line break or control character")
        return headers

    @field_validator("refused_message_fields")
    @classmethod
    def _message_fields(cls, fields: list[str] | None, info: ValidationInfo) -> list[str] | None:
        kind = info.data.get("type")  # validated before: declared first (absent if it was refused)
        if fields is not None and kind is not None and VENDORS[kind].adapter != "openai_compat":
            raise ValueError(f"is for OpenAI-compatible backends, not `type: {kind}`")
        for name in fields or ():
            if not _MESSAGE_FIELD.fullmatch(name):
                raise ValueError(f"{name!r} is not a message field's name (letters, digits and _)")
            if name in _CONVERSATION_FIELDS:
                raise ValueError(
                    f"`{name}` carries the conversation: {', '.join(_CONVERSATION_FIELDS)} are never left out"
                )
        return fields

    @field_validator("base_url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        # Empty (e.g. `${VAR}` with VAR unset) means unset, as the adapters always read it.
        return _check_base_url(url) if url else None

    @model_validator(mode="after")
    def _cache_write_prices(self) -> BackendConfig:
        """Each offer's `cache_write_price`, defaulted by the backend's type where unset."""
        factor = ANTHROPIC_CACHE_WRITE_FACTOR if self.type == "anthropic" else 1.0
        models = {
            model_id: offer
            if offer.cache_write_price is not None
            else offer.model_copy(update={"cache_write_price": offer.input_price * factor})
            for model_id, offer in self.models.items()
        }
        object.__setattr__(self, "models", models)  # frozen: set once, while validating
        return self

    @property
    def served_apis(self) -> frozenset[str]:
        """`apis`, or the vendor's default when unset."""
        return frozenset(self.apis) if self.apis is not None else VENDORS[self.type].apis

    @property
    def refused_fields(self) -> frozenset[str]:
        """`refused_message_fields`, or the vendor's default when unset."""
        if self.refused_message_fields is not None:
            return frozenset(self.refused_message_fields)
        return VENDORS[self.type].refused_message_fields

    def reasoning_fields(self, offer: ModelOffer) -> tuple[str, ...]:
        """The message fields a translated request sends `offer` earlier turns' reasoning in:
        the vendor's, when the offer takes it back (`reasoning_history`), less those this
        backend refuses (none left: not sent; a vLLM that refuses `reasoning_content` still
        gets `reasoning`)."""
        vendor = VENDORS[self.type]
        takes = vendor.reasoning_history if offer.reasoning_history is None else offer.reasoning_history
        refused = self.refused_fields
        return tuple(f for f in vendor.reasoning_fields if f not in refused) if takes else ()

    @model_validator(mode="after")
    def _base_url_known(self) -> BackendConfig:
        if self.base_url is None and VENDORS[self.type].base_url is None and self.type != "mock":
            raise ValueError(f"backends of type `{self.type}` need a base_url")
        return self


class ModelInfo(Strict):
    """Metadata about a canonical model, whoever serves it."""

    name: str | None = None
    # Informational (documented in policies/README.md): routing reads a route's `tasks` map,
    # never this, so metadata about a model cannot reorder a route.
    tasks: list[Task] = Field(default_factory=list)
    capabilities: list[Capability] | None = None  # None: unknown, assume capable


class HedgeConfig(Strict):
    """A hedged request: if the first candidate has produced no content `after_ms` into its
    attempt, the next candidate is started as well; the first to produce content answers
    and the other is cancelled (recorded in the ledger, never billed to the key)."""

    after_ms: float = Field(gt=0, le=600_000)


class RouteConfig(Strict):
    strategy: Strategy = "cost"
    models: list[str] = Field(min_length=1)
    tasks: dict[Task, list[str]] = Field(default_factory=dict)
    # For `weighted`: key is a model id, a backend name, or `backend/author/slug` for one offer.
    weights: dict[str, float] = Field(default_factory=dict)
    # When every model of `tasks[task]` is filtered out or fails, go on with `models`.
    task_fallback: bool = True
    fallback: bool = True
    # Unset: `gateway.fallback.max_attempts` / `gateway.fallback.deadline_s`.
    max_attempts: int | None = Field(default=None, ge=1, le=10)
    deadline_s: float | None = Field(default=None, gt=0)
    max_price: MaxPrice | None = None
    # Opt-in hedging: start the next candidate too when the first has no content by then.
    hedge: HedgeConfig | None = None

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        for key, weight in weights.items():
            if weight < 0:
                raise ValueError(f"weight of `{key}` must be >= 0")
        return weights


class ClassifierConfig(Strict):
    # "heuristic", or "module:callable" for a pluggable classifier called as
    # callable(chat_request, request_facts) -> task name or None (None: use the heuristic).
    kind: str = "heuristic"
    long_context_tokens: int = Field(default=24000, gt=0)


class FallbackSettings(Strict):
    """How the gateway moves on from a failing candidate."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    deadline_s: float = Field(default=120.0, gt=0)  # whole request, all attempts
    # Wait before re-trying a backend that already failed this request (jittered, exponential).
    backoff_base_s: float = Field(default=0.05, ge=0)
    backoff_max_s: float = Field(default=1.0, ge=0)
    # Longest `Retry-After` honoured inside one request; a longer one moves on to other backends.
    retry_after_max_s: float = Field(default=2.0, ge=0)
    # Times a candidate is asked again after a failure its class calls transient (a 500 once,
    # a 429/503 with a short Retry-After), before moving on; each counts toward max_attempts.
    retries_per_candidate: int = Field(default=1, ge=0, le=5)


class RoutingSettings(Strict):
    """Observed-stats ranking: EWMA smoothing, priors for untried backends, exploration."""

    ewma_alpha: float = Field(default=0.3, gt=0, le=1)
    prior_ttft_s: float = Field(default=1.0, gt=0)
    prior_tokens_per_second: float = Field(default=50.0, gt=0)
    # A backend with fewer observations than this is tried before ranked ones (latency/throughput).
    explore_min_samples: int = Field(default=2, ge=0)
    # Share of requests that try a random eligible candidate first (latency/throughput).
    exploration: float = Field(default=0.05, ge=0, le=0.5)
    # How long an upstream's `Retry-After` keeps that backend+model at the back of the list.
    retry_after_cap_s: float = Field(default=60.0, ge=0)
    # Seconds between pushes/pulls of stats and circuit state when Redis is configured.
    shared_sync_s: float = Field(default=0.5, gt=0)


class GatewaySettings(Strict):
    """Knobs of the gateway itself that belong with the policy."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # A non-streamed chat answer larger than this fails the attempt (the next candidate is
    # tried); other endpoints (embeddings) get their own cap.
    max_response_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    default_completion_tokens: int = Field(default=1024, gt=0)
    classifier: ClassifierConfig = ClassifierConfig()
    fallback: FallbackSettings = FallbackSettings()
    routing: RoutingSettings = RoutingSettings()


class RateLimitsConfig(Strict):
    """The gateway's own request limits, per minute; none by default.

    Counted in Redis when the gateway has one (every replica shares the counters), else
    in each worker process's memory.
    """

    default_key_rpm: int | None = Field(default=None, gt=0)  # each client key not listed in `keys`
    keys: dict[str, PositiveInt] = Field(default_factory=dict)  # client key name -> requests per minute
    routes: dict[str, PositiveInt] = Field(default_factory=dict)  # route or model id -> rpm, all clients together

    @property
    def active(self) -> bool:
        return bool(self.default_key_rpm or self.keys or self.routes)


class GatewayConfig(Strict):
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    models: dict[str, ModelInfo] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    # Requested model name (a glob: `*`, `?`, `[...]`) -> a route or canonical model id, for
    # names clients send that the config does not know (Claude Code's `claude-*`, Codex's
    # `gpt-5*`). A name that is itself a route or model is never aliased; otherwise the first
    # pattern that matches, in the order written, wins.
    aliases: dict[str, str] = Field(default_factory=dict)
    gateway: GatewaySettings = GatewaySettings()
    rate_limits: RateLimitsConfig = RateLimitsConfig()

    @field_validator("backends", "routes")
    @classmethod
    def _printable_names(cls, named: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for name in named:
            _check_printable("backend name" if info.field_name == "backends" else "route name", name)
        return named


# Model ids and backend and route names are carried in answers' headers, the ledger's rows and
# the aggregates' keys: a control character in one (YAML spells it "\x1f" or "\n") made every
# call it answered a 500 (no header value may hold one) and, as the aggregates' separator
# (`gateway.usage.aggregates.SEP`), every ranking after its first call too.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _check_printable(kind: str, name: str) -> None:
    if _CONTROL.search(name):
        raise ValueError(f"{kind} {name!r} holds a control character")
    if not name.strip():
        # `"": {...}` loaded, and nothing could ever call it (an empty `model` is refused).
        raise ValueError(f"{kind} {name!r} is empty")


def _check_canonical(model_id: str) -> None:
    _check_printable("model id", model_id)
    author, sep, slug = model_id.partition("/")
    if not sep or not author or not slug:
        raise ValueError(f"model id `{model_id}` must look like author/slug (e.g. deepseek/deepseek-v3.2)")


_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")  # RFC 3986 path characters
_HOST = re.compile(r"[A-Za-z0-9_.-]+|[0-9A-Fa-f:.]+")  # a DNS name or IPv4, or an IPv6 literal (brackets removed)


def _check_base_url(url: str) -> str:
    """A base_url the adapters can call: parsed as httpx parses it, http(s), a host, a real port.

    Checked here so that `gateway validate` and a hot reload reject it with the field named,
    instead of the backend pool raising when it builds the adapter.
    """
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"base_url is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with http:// or https://, got `{url}`")
    if not parsed.host:
        raise ValueError(f"base_url has no host: `{url}`")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"base_url port must be between 1 and 65535, got {port}")
    try:
        host = urlsplit(url).hostname or ""
    except ValueError as exc:
        raise ValueError(f"base_url is not a valid URL ({exc})") from None
    if not _HOST.fullmatch(host):  # ASCII only: an internationalised name goes in its xn-- form
        raise ValueError(f"base_url host `{host}` is not a valid host name or IP address")
    # The upstream client writes the base_url's parts as they are (gateway.backends.http1.Target):
    # it sends no credentials from the URL, and its path prefix goes into the request line unescaped.
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url must not carry credentials (user:password@): set api_key or headers")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ValueError(f"base_url must not have a query or fragment: `{url}`")
    if not _PATH.fullmatch(parts.path):
        raise ValueError(f"base_url path `{parts.path}` has characters to percent-encode (write them %XX)")
    return url
