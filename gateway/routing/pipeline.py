"""The routing decision: which offers to try for this request, in which order.

Core version: a route name tries its models in order; a canonical model id tries the
backends serving it, cheapest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.chat import ChatRequest
from gateway.protocol.errors import GatewayError, model_not_found


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    route: str | None
    task: str
    candidates: tuple[Offer, ...]
    max_attempts: int = 3
    deadline_s: float = 120.0
    fallback: bool = True


def _by_price(offers: tuple[Offer, ...]) -> list[Offer]:
    return sorted(offers, key=lambda o: (o.spec.input_price + o.spec.output_price, o.backend))


def decide(chat: ChatRequest, headers: Mapping[str, str], snapshot: ConfigSnapshot, stats: object = None) -> RoutingDecision:
    name = chat.model
    route = snapshot.routes.get(name)
    if route is not None:
        candidates = [o for model in route.models for o in _by_price(snapshot.offers.get(model, ()))]
        decision = RoutingDecision(name, "chat", tuple(candidates), route.max_attempts, route.deadline_s, route.fallback)
    elif name in snapshot.config.models or any(name in b.models for b in snapshot.config.backends.values()):
        decision = RoutingDecision(None, "chat", tuple(_by_price(snapshot.offers.get(name, ()))))
    else:
        raise model_not_found(name)
    if not decision.candidates:
        raise GatewayError(503, f"No enabled backend serves `{name}` (check API keys and `enabled`).", code="no_backend_available")
    return decision
