"""The immutable runtime view of one config: indexes built once at load, read per request.

A request takes the snapshot current when it starts and uses it to the end, so a hot
reload never changes the rules under a request in flight.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from gateway.config.schema import BackendConfig, GatewayConfig, ModelInfo, ModelOffer, RouteConfig
from gateway.config.vendors import VENDORS
from gateway.protocol.redact import Redactor


@dataclass(frozen=True, slots=True)
class Offer:
    """A canonical model as served by one backend: the unit routing chooses among.

    `key`, `author` and `qualified_id` are derived once here because routing, the stats
    and the observers read them on every call: as properties they allocated each time.
    """

    model: str  # canonical author/slug
    backend: str
    upstream_id: str
    spec: ModelOffer
    # The APIs the offer's backend serves natively (its `apis`, resolved at load).
    apis: frozenset[str] = field(default=frozenset({"chat"}), compare=False)
    # The message fields a translated request sends it earlier turns' reasoning in (none: not
    # sent; `BackendConfig.reasoning_fields`).
    reasoning_fields: tuple[str, ...] = field(default=(), compare=False)
    # Assistant-message fields a chat request is sent without (`BackendConfig.refused_fields`).
    refused_message_fields: frozenset[str] = field(default=frozenset(), compare=False)
    # Whether its backend's chat API takes `top_k` (`Vendor.top_k`): a translated request's is
    # left out where not.
    takes_top_k: bool = field(default=True, compare=False)
    key: tuple[str, str] = field(init=False, compare=False, repr=False)  # (backend, model)
    author: str = field(init=False, compare=False, repr=False)
    qualified_id: str = field(init=False, compare=False, repr=False)  # backend/author/slug
    # The most a prompt token may be billed at (USD per 1M): the input price, or the cache-write
    # price for a prompt written to a prompt cache (Claude Code marks every prompt for one),
    # whichever is dearer. What budget reservations price a prompt at, so they never under-reserve.
    prompt_price_ceiling: float = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.backend, self.model))
        object.__setattr__(self, "author", self.model.split("/", 1)[0])
        object.__setattr__(self, "qualified_id", f"{self.backend}/{self.model}")
        spec = self.spec
        ceiling = max(spec.input_price, spec.cache_write_price or 0.0, spec.cached_input_price or 0.0)
        object.__setattr__(self, "prompt_price_ceiling", ceiling)


@dataclass(frozen=True)
class ConfigSnapshot:
    config: GatewayConfig
    source: str = "<memory>"
    warnings: tuple[str, ...] = ()
    loaded_at: float = field(default_factory=time.time)
    version: str = ""
    # Derived indexes.
    backends: dict[str, BackendConfig] = field(default_factory=dict)  # enabled ones only
    offers: dict[str, tuple[Offer, ...]] = field(default_factory=dict)  # model -> offers
    # Every model id the config names (offers, `models`, disabled backends' lists).
    known_models: frozenset[str] = frozenset()
    # What other packages derive from this config and read per request (routing's candidate
    # lists and resolved names), filled on first use. Safe because the snapshot never
    # changes: a reload builds a new snapshot, and with it an empty memo. Values are of many
    # kinds: each package owns the keys it writes and reads its own values back as their type.
    memo: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls, config: GatewayConfig, source: str = "<memory>", warnings: list[str] | None = None, text: str = ""
    ) -> ConfigSnapshot:
        enabled = {
            name: b
            for name, b in config.backends.items()
            if b.enabled and (b.api_key or not VENDORS[b.type].key_required)
        }
        offers: dict[str, list[Offer]] = {}
        for name, backend in enabled.items():
            apis = backend.served_apis
            refused = backend.refused_fields
            top_k = VENDORS[backend.type].top_k
            for model_id, spec in backend.models.items():
                upstream_id = spec.upstream_id or model_id
                offer = Offer(model_id, name, upstream_id, spec, apis, backend.reasoning_fields(spec), refused, top_k)
                offers.setdefault(model_id, []).append(offer)
        known = set(config.models) | {m for b in config.backends.values() for m in b.models}
        version = hashlib.sha256((text or config.model_dump_json()).encode()).hexdigest()[:12]
        return cls(
            config=config,
            source=source,
            warnings=tuple(warnings or ()),
            version=version,
            backends=enabled,
            offers={m: tuple(o) for m, o in offers.items()},
            known_models=frozenset(known),
        )

    @property
    def routes(self) -> dict[str, RouteConfig]:
        return self.config.routes

    @property
    def redactor(self) -> Redactor:
        """Removes every configured backend key from upstream text; built on first use and
        kept with the snapshot (a reload builds a new snapshot, and with it a new redactor)."""
        redactor: Redactor | None = self.memo.get("redactor")
        if redactor is None:
            keys = [b.api_key for b in self.config.backends.values()]
            redactor = self.memo["redactor"] = Redactor(keys)
        return redactor

    def apis(self, backend: str) -> frozenset[str]:
        """The APIs an enabled backend serves natively (empty for an unknown one)."""
        config = self.backends.get(backend)
        return config.served_apis if config is not None else frozenset()

    def model_info(self, model: str) -> ModelInfo | None:
        return self.config.models.get(model)

    def offer(self, backend: str, model: str) -> Offer | None:
        for o in self.offers.get(model, ()):
            if o.backend == backend:
                return o
        return None
