"""What the client's `model` names: a route, a canonical model id, or either with an
OpenRouter variant suffix (`:floor` = cheapest provider first, `:nitro` = fastest throughput).

Anything else is a 404 `model_not_found`, the error OpenAI's SDKs expect for an unknown model.
Resolved names are remembered in the snapshot's memo: only names the config knows get there
(a 404 is not cached), so the memo stays as small as the config whatever clients send.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.schema import RouteConfig
from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.errors import model_not_found

# Variant suffix -> the provider sort it stands for (OpenRouter's documented aliases).
VARIANTS = {"floor": "price", "nitro": "throughput"}


@dataclass(frozen=True, slots=True)
class Target:
    """One resolved name: exactly one of `route` / `model` is set."""

    requested: str
    route_name: str | None = None
    route: RouteConfig | None = None
    model: str | None = None  # canonical author/slug
    sort: str | None = None  # from a variant suffix: "price" | "throughput"


def is_known_model(name: str, snapshot: ConfigSnapshot) -> bool:
    """Named in the config, whether or not an enabled backend serves it right now."""
    return name in snapshot.known_models


def resolve(name: str, snapshot: ConfigSnapshot) -> Target:
    key = ("resolve", name)
    found = snapshot.memo.get(key)
    if found is None:
        found = snapshot.memo[key] = _resolve(name, snapshot)
    return found


def _resolve(name: str, snapshot: ConfigSnapshot) -> Target:
    found = _exact(name, snapshot)
    if found is not None:
        return found
    base, sep, variant = name.rpartition(":")
    if sep and variant in VARIANTS:
        found = _exact(base, snapshot)
        if found is not None:
            return Target(name, found.route_name, found.route, found.model, VARIANTS[variant])
    raise model_not_found(name)


def _exact(name: str, snapshot: ConfigSnapshot) -> Target | None:
    route = snapshot.routes.get(name)
    if route is not None:
        return Target(name, route_name=name, route=route)
    if is_known_model(name, snapshot):
        return Target(name, model=name)
    return None
