"""Routing YAML for tests, built rather than pasted.

Most end-to-end tests need the same small policy: one OpenAI-compatible backend (a
FakeUpstream) offering a model or two, and a route or two over them, sometimes with rate
limits or gateway settings. `one_backend_policy` writes that file, so each test states only
what differs, and a change to the config format is made here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

DEFAULT_MODEL = "qwen/qwen3-32b"


def one_backend_policy(
    base_url: str,
    *,
    models: Mapping[str, Mapping[str, Any]] | Sequence[str] = (DEFAULT_MODEL,),
    routes: Mapping[str, Mapping[str, Any] | Sequence[str]] | None = None,
    backend: str = "up",
    api_key: str | None = "sk-upstream",
    timeout_s: float | None = None,
    rate_limits: Mapping[str, Any] | None = None,
    gateway: Mapping[str, Any] | None = None,
) -> str:
    """The routing YAML for one `openai` backend at `base_url`.

    models: model ids, or ids mapped to their offer fields (upstream_id, prices...).
    routes: route name -> its settings, or just its model list; by default one route
        `auto` over every model.
    """
    offers = (
        {model: dict(fields) for model, fields in models.items()}
        if isinstance(models, Mapping)
        else {model: {} for model in models}
    )
    entry: dict[str, Any] = {"type": "openai", "base_url": base_url}
    if api_key is not None:
        entry["api_key"] = api_key
    if timeout_s is not None:
        entry["timeout_s"] = timeout_s
    entry["models"] = offers
    if routes is None:
        routes = {"auto": list(offers)}
    policy: dict[str, Any] = {
        "backends": {backend: entry},
        "routes": {
            name: dict(route) if isinstance(route, Mapping) else {"models": list(route)}
            for name, route in routes.items()
        },
    }
    if rate_limits is not None:
        policy["rate_limits"] = dict(rate_limits)
    if gateway is not None:
        policy["gateway"] = dict(gateway)
    return yaml.safe_dump(policy, sort_keys=False, default_flow_style=False)
