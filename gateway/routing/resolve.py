"""What the client's `model` names: a route, a canonical model id, or either with an
OpenRouter variant suffix (`:floor` = cheapest provider first, `:nitro` = fastest throughput);
failing those, the first `aliases:` glob that matches it, in the order the YAML lists them
(so agents' built-in names such as `claude-haiku-4-5` reach a route without client settings).

Anything else is a 404 `model_not_found`, the error OpenAI's SDKs expect for an unknown model.
Resolved names are remembered in the snapshot's memo: names the config knows (a 404 is not
cached), and at most `MAX_REMEMBERED_ALIASED` names an alias matched, each of at most
`MAX_REMEMBERED_NAME` characters (clients choose those: one glob matches endlessly many names,
of any length), so the memo stays bounded whatever clients send.
"""

from __future__ import annotations

import fnmatch
import re
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
    alias: str | None = None  # the `aliases:` pattern that mapped `requested` here


MAX_REMEMBERED_ALIASED = 1024
# Longer aliased names are resolved each time, not remembered: counted alone, 1,024 names of a
# few MB each (`claude-` and an 8 MiB body's worth of padding) were held until the next reload.
MAX_REMEMBERED_NAME = 256
_ALIASED = "aliased names remembered"


def is_known_model(name: str, snapshot: ConfigSnapshot) -> bool:
    """Named in the config, whether or not an enabled backend serves it right now."""
    return name in snapshot.known_models


def resolve(name: str, snapshot: ConfigSnapshot) -> Target:
    key = ("resolve", name)
    found = snapshot.memo.get(key)
    if found is None:
        found = _resolve(name, snapshot)
        if found.alias is None:
            snapshot.memo[key] = found
        elif len(name) <= MAX_REMEMBERED_NAME:
            remembered = snapshot.memo.get(_ALIASED, 0)
            if remembered < MAX_REMEMBERED_ALIASED:
                snapshot.memo[key] = found
                snapshot.memo[_ALIASED] = remembered + 1
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
    for pattern, compiled, target in _aliases(snapshot):
        if compiled.match(name):
            found = _exact(target, snapshot)
            if found is not None:  # the loader checked every target; a disabled one is still known
                return Target(name, found.route_name, found.route, found.model, None, pattern)
    raise model_not_found(name)


def _aliases(snapshot: ConfigSnapshot) -> tuple[tuple[str, re.Pattern[str], str], ...]:
    """The `aliases:` globs compiled once per snapshot, in the order written."""
    found: tuple[tuple[str, re.Pattern[str], str], ...] | None = snapshot.memo.get("aliases")
    if found is None:
        found = snapshot.memo["aliases"] = tuple(
            (pattern, re.compile(fnmatch.translate(pattern)), target)
            for pattern, target in snapshot.config.aliases.items()
        )
    return found


def _exact(name: str, snapshot: ConfigSnapshot) -> Target | None:
    route = snapshot.routes.get(name)
    if route is not None:
        return Target(name, route_name=name, route=route)
    if is_known_model(name, snapshot):
        return Target(name, model=name)
    return None
