"""Which offers a request may go to, before filters and ranking.

For a route: its `tasks[task]` list when the task has one (then, as a fallback tier, its
`models` unless `task_fallback: false`), else its `models`. For a canonical model id: every
enabled backend serving it. A request's `models` array appends further targets, each a tier
after the previous one, so its order is kept whatever the strategy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.routing.resolve import Target


@dataclass(slots=True)
class Candidate:
    """One offer as this request may use it. Not changed once gathered."""

    offer: Offer
    tier: int  # 0 first; a later tier is only tried after every earlier one
    position: int  # order of appearance in the config/request, the last tie-break
    source: str  # where it came from, for the explanation
    key: tuple[str, str]  # (backend, model), computed once
    names: tuple[str, str]  # what a client may call its provider: backend name and type, lower-cased


def gather(targets: Iterable[Target], task: str, snapshot: ConfigSnapshot) -> list[Candidate]:
    out: list[Candidate] = []
    seen: set[tuple[str, str]] = set()

    backends = snapshot.backends

    def add(models: Iterable[str], tier: int, source: str) -> None:
        for model in models:
            for offer in snapshot.offers.get(model, ()):
                key = (offer.backend, offer.model)
                if key not in seen:
                    seen.add(key)
                    config = backends.get(offer.backend)
                    names = (offer.backend.lower(), (config.type if config else offer.backend).lower())
                    out.append(Candidate(offer, tier, len(out), source, key, names))

    tier = 0
    for target in targets:
        route = target.route
        if route is None:
            add((target.model,), tier, f"model {target.model}")
            tier += 1
            continue
        task_models = route.tasks.get(task)  # type: ignore[call-overload]
        if task_models:
            add(task_models, tier, f"route {target.route_name} tasks.{task}")
            tier += 1
            if not route.task_fallback:
                continue
        add(route.models, tier, f"route {target.route_name} models")
        tier += 1
    return out
