"""Request-level routing overrides, in OpenRouter's shape: a `models` array (ordered fallback
list) and a `provider` object (order, only, ignore, allow_fallbacks, sort, max_price).

A client that already talks to OpenRouter keeps its request body unchanged. Wrong types are a
400 naming the field; provider fields this gateway does not act on (data_collection,
quantizations, zdr...) are accepted and ignored, as they only narrow OpenRouter's own pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.protocol.errors import invalid_request

SORTS = ("price", "latency", "throughput")


@dataclass(frozen=True, slots=True)
class ProviderPrefs:
    order: tuple[str, ...] = ()  # backend names or types, lower-cased
    only: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    allow_fallbacks: bool = True
    sort: str | None = None  # price | latency | throughput
    max_prompt_price: float | None = None  # USD per 1M tokens
    max_completion_price: float | None = None

    @property
    def empty(self) -> bool:
        return self is NO_PREFS or self == NO_PREFS


NO_PREFS = ProviderPrefs()


def requested_models(payload: dict[str, Any], model: str) -> tuple[str, ...]:
    """`model` first, then the `models` fallback list, without repeats.

    Deduplicated through a dict, in linear time: a list searched for each name was quadratic
    in what the client sent, and the 100,000 distinct names an 8 MiB body holds kept the
    worker's event loop busy for minutes (every other request on it waiting)."""
    models = payload.get("models")
    if models is None:
        return (model,)
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise invalid_request("`models` must be an array of model names.", param="models", code="invalid_type")
    return tuple(dict.fromkeys([model, *models]))


def provider_prefs(payload: dict[str, Any]) -> ProviderPrefs:
    raw = payload.get("provider")
    if raw is None:
        return NO_PREFS
    if not isinstance(raw, dict):
        raise invalid_request("`provider` must be an object.", param="provider", code="invalid_type")
    only = raw.get("only")
    allow = raw.get("allow_fallbacks", True)
    if not isinstance(allow, bool):
        raise invalid_request(
            "`provider.allow_fallbacks` must be a boolean.", param="provider.allow_fallbacks", code="invalid_type"
        )
    prompt, completion = _max_price(raw.get("max_price"))
    prefs = ProviderPrefs(
        order=_names(raw, "order"),
        only=_names(raw, "only") if only is not None else None,
        ignore=_names(raw, "ignore"),
        allow_fallbacks=allow,
        sort=_sort(raw.get("sort")),
        max_prompt_price=prompt,
        max_completion_price=completion,
    )
    return NO_PREFS if prefs == NO_PREFS else prefs  # `provider: {}` costs nothing per candidate


def _names(raw: dict[str, Any], field: str) -> tuple[str, ...]:
    value = raw.get(field)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_request(
            f"`provider.{field}` must be an array of provider names.", param=f"provider.{field}", code="invalid_type"
        )
    return tuple(v.lower() for v in value)


def _sort(value: Any) -> str | None:
    if isinstance(value, dict):  # newer OpenRouter form: {"by": "price", "partition": ...}
        value = value.get("by")
    if value is None:
        return None
    if not isinstance(value, str) or value not in SORTS:
        raise invalid_request(
            f"`provider.sort` must be one of {', '.join(SORTS)}.", param="provider.sort", code="invalid_value"
        )
    return value


def _max_price(value: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise invalid_request(
            "`provider.max_price` must be an object.", param="provider.max_price", code="invalid_type"
        )
    return _price(value, "prompt"), _price(value, "completion")


def _price(prices: dict[str, Any], field: str) -> float | None:
    value = prices.get(field)
    if value is None:
        return None
    try:  # OpenRouter's SDKs send these as strings or numbers
        price = float(value)
    except (TypeError, ValueError):
        price = -1.0
    if isinstance(value, bool) or price < 0 or price != price:
        raise invalid_request(
            f"`provider.max_price.{field}` must be a non-negative number (USD per 1M tokens).",
            param=f"provider.max_price.{field}",
            code="invalid_value",
        )
    return price
