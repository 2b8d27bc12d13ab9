"""Ranking the eligible candidates by the route's strategy.

Strategies (lower score first):
- `cost`: this request's price, estimated prompt tokens x input price + completion budget x
  output price (ties: the faster backend first);
- `latency`: observed time to first token (EWMA per backend+model);
- `throughput`: observed completion tokens per second, highest first;
- `ordered`: the order written in the config or the request;
- `weighted`: a weighted random order (weights from the route, else each offer's `weight`),
  which spreads load and still gives every fallback a place.

Observed stats start from priors. Under `latency` and `throughput` a candidate with fewer
than `explore_min_samples` observations goes first, so a cold gateway measures everything
once, and a small share of requests (`exploration`) tries a random eligible candidate so a
recovered backend is noticed. Above the strategy sit the tiers (task list before route
models, `models` array order), then an upstream's running `Retry-After` (such candidates
go last), then the request's `provider.order`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config.schema import RoutingSettings
from gateway.routing.candidates import Candidate
from gateway.routing.facts import RequestFacts
from gateway.routing.filters import completion_budget

if TYPE_CHECKING:
    from gateway.routing.live import Admission, LiveState

# provider.sort / variant suffix -> strategy
SORT_STRATEGY = {"price": "cost", "latency": "latency", "throughput": "throughput"}
OBSERVED = ("latency", "throughput")


class Score:
    """A candidate's score (lower ranks first) and, formatted only when read, why."""

    __slots__ = ("value", "explored", "_text", "_args")

    def __init__(self, value: float, text: str, *args: object, explored: bool = False) -> None:
        self.value = value
        self.explored = explored  # moved first by exploration
        self._text = text
        self._args = args

    @property
    def detail(self) -> str:
        text = self._text.format(*self._args) if self._args else self._text
        return text + ", picked by exploration" if self.explored else text

    def __repr__(self) -> str:
        return f"Score({self.value!r}, {self.detail!r})"


@dataclass(slots=True)
class Ranked:
    candidate: Candidate
    score: Score
    key: tuple


def estimated_cost(candidate: Candidate, facts: RequestFacts) -> float:
    spec = candidate.offer.spec
    return (facts.prompt_tokens * spec.input_price + completion_budget(candidate, facts) * spec.output_price) / 1_000_000


def weight_of(candidate: Candidate, weights: dict[str, float]) -> float:
    offer = candidate.offer
    if weights:
        for key in (offer.qualified_id, offer.model, offer.backend):
            if key in weights:
                return weights[key]
    return offer.spec.weight


def _observed(live: "LiveState | None", candidate: Candidate):
    return live.observed(candidate.key) if live is not None else None


def score(
    candidate: Candidate,
    strategy: str,
    facts: RequestFacts,
    live: "LiveState | None",
    settings: RoutingSettings,
    weights: dict[str, float],
    rng: random.Random | None,
) -> tuple[Score, float, bool]:
    """The candidate's score, a secondary tie-break value, and whether it is still unexplored."""
    seen = _observed(live, candidate)
    samples = seen.samples if seen else 0
    ttft = seen.ttft_s if seen and seen.ttft_s is not None else None
    ttft_value = ttft if ttft is not None else settings.prior_ttft_s
    if strategy == "cost":
        spec = candidate.offer.spec
        budget = completion_budget(candidate, facts)
        cost = (facts.prompt_tokens * spec.input_price + budget * spec.output_price) / 1_000_000
        text = "${:.6f} = {:,} in x ${:g} + {:,} out x ${:g} per 1M"
        return Score(cost, text, cost, facts.prompt_tokens, spec.input_price, budget, spec.output_price), ttft_value, False
    if strategy == "latency":
        unexplored = samples < settings.explore_min_samples
        suffix = ", exploring" if unexplored else ""
        if ttft is None:
            return Score(ttft_value, "ttft prior {:g}s (untried){}", ttft_value, suffix), 0.0, unexplored
        return Score(ttft_value, "ttft {:.3f}s (EWMA of {}){}", ttft, samples, suffix), 0.0, unexplored
    if strategy == "throughput":
        tps = seen.tokens_per_s if seen and seen.tokens_per_s is not None else None
        tps_samples = seen.tps_samples if seen else 0
        unexplored = tps_samples < settings.explore_min_samples
        suffix = ", exploring" if unexplored else ""
        if tps is None:
            prior = settings.prior_tokens_per_second
            return Score(-prior, "{:g} tok/s prior (untried){}", prior, suffix), ttft_value, unexplored
        return Score(-tps, "{:.1f} tok/s (EWMA of {}){}", tps, tps_samples, suffix), ttft_value, unexplored
    if strategy == "weighted":
        weight = weight_of(candidate, weights)
        if weight <= 0 or rng is None:
            return Score(0.0 if weight <= 0 else -weight, "weight {:g}", weight), 0.0, False
        # Efraimidis-Spirakis: sorting by u^(1/w) is a weighted draw without replacement.
        draw = rng.random() ** (1.0 / weight)
        return Score(-draw, "weight {:g}, draw {:.3f}", weight, draw), 0.0, False
    return Score(float(candidate.position), "position {} in the list", candidate.position + 1), 0.0, False


def _pin(candidate: Candidate, order: tuple[str, ...]) -> int:
    for i, name in enumerate(order):
        if name in candidate.names:
            return i
    return len(order)


def rank(
    eligible: list[tuple[Candidate, "Admission | None"]],
    strategy: str,
    facts: RequestFacts,
    live: "LiveState | None",
    settings: RoutingSettings,
    weights: dict[str, float],
    order: tuple[str, ...],
    rng: random.Random | None,
) -> list[Ranked]:
    """`eligible` items are (candidate, its circuit admission)."""
    ranked = []
    for candidate, admission in eligible:
        s, secondary, unexplored = score(candidate, strategy, facts, live, settings, weights, rng)
        cooling = 1 if admission is not None and admission.cooling_for_s > 0 else 0
        explore_key = 0 if unexplored else 1
        pin = _pin(candidate, order) if order else 0
        key = (candidate.tier, cooling, pin, explore_key, s.value, secondary, candidate.position)
        ranked.append(Ranked(candidate, s, key))
    ranked.sort(key=_sort_key)
    if rng is not None and strategy in OBSERVED and len(ranked) > 1 and settings.exploration > 0:
        ranked = _explore(ranked, settings.exploration, rng)
    return ranked


def _sort_key(ranked: Ranked) -> tuple:
    return ranked.key


def _explore(ranked: list[Ranked], share: float, rng: random.Random) -> list[Ranked]:
    """With probability `share`, move a random peer of the leader (same tier, pin) to the front."""
    head = ranked[0].key[:3]
    peers = [i for i, r in enumerate(ranked) if i and r.key[:3] == head]
    if not peers or rng.random() >= share:
        return ranked
    pick = peers[rng.randrange(len(peers))]
    chosen = ranked[pick]
    score = chosen.score
    explored = Ranked(chosen.candidate, Score(score.value, score._text, *score._args, explored=True), chosen.key)
    return [explored] + ranked[:pick] + ranked[pick + 1 :]
