"""The routing YAML's schema, as pydantic models.

This is the admin's interface: field names here are what they write, so they change only
in backward-compatible ways. Runtime indexes derived from it live in `snapshot`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from gateway.backends.registry import VENDORS

BackendType = Literal[
    "vllm", "openai", "openrouter", "deepseek", "moonshot", "zhipu", "dashscope",
    "minimax", "groq", "together", "fireworks", "mock", "anthropic",
]
Strategy = Literal["cost", "latency", "throughput", "ordered", "weighted"]
Task = Literal["code", "math", "reasoning", "translation", "long_context", "tool_use", "vision", "chat"]
Capability = Literal["tools", "json", "json_schema", "vision", "reasoning"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelOffer(Strict):
    """One model as one backend serves it. Prices are USD per 1M tokens."""

    upstream_id: str | None = None
    context_length: int = Field(default=32768, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    input_price: float = Field(default=0.0, ge=0)
    output_price: float = Field(default=0.0, ge=0)
    cached_input_price: float | None = Field(default=None, ge=0)
    weight: float = Field(default=1.0, ge=0)


class CircuitConfig(Strict):
    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class HealthCheckConfig(Strict):
    enabled: bool = False
    interval_s: float = Field(default=15.0, gt=0)
    timeout_s: float = Field(default=3.0, gt=0)


class BackendConfig(Strict):
    type: BackendType
    base_url: str | None = None
    api_key: str | None = None
    enabled: bool = True
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # Time allowed for the first byte of the answer; past it the call fails over.
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    max_connections: int = Field(default=512, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
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

    @model_validator(mode="after")
    def _base_url_known(self) -> "BackendConfig":
        if self.base_url is None and VENDORS[self.type].base_url is None and self.type != "mock":
            raise ValueError(f"backends of type `{self.type}` need a base_url")
        return self


class ModelInfo(Strict):
    """Metadata about a canonical model, whoever serves it."""

    name: str | None = None
    tasks: list[Task] = Field(default_factory=list)
    capabilities: list[Capability] | None = None  # None: unknown, assume capable


class RouteConfig(Strict):
    strategy: Strategy = "cost"
    models: list[str] = Field(min_length=1)
    tasks: dict[Task, list[str]] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)  # model or backend name -> weight
    fallback: bool = True
    max_attempts: int = Field(default=3, ge=1, le=10)
    deadline_s: float = Field(default=120.0, gt=0)


class ClassifierConfig(Strict):
    kind: str = "heuristic"  # "heuristic" or "module:callable" for a pluggable classifier
    long_context_tokens: int = Field(default=24000, gt=0)


class GatewaySettings(Strict):
    """Knobs of the gateway itself that belong with the policy."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    default_completion_tokens: int = Field(default=1024, gt=0)
    classifier: ClassifierConfig = ClassifierConfig()


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
    gateway: GatewaySettings = GatewaySettings()
    rate_limits: RateLimitsConfig = RateLimitsConfig()


def _check_canonical(model_id: str) -> None:
    author, sep, slug = model_id.partition("/")
    if not sep or not author or not slug:
        raise ValueError(f"model id `{model_id}` must look like author/slug (e.g. deepseek/deepseek-v3.2)")
