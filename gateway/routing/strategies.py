"""The routing strategies, one registry: how the candidates that passed every filter are ordered.

A strategy is a scoring function plus an entry in `STRATEGIES`. The function returns, for one
candidate, its score (lower ranks first), a secondary value for ties, whether the candidate
is still unexplored (`observed` strategies move those first), and its explanation as a
format string with its arguments (formatted only when read: `gateway.routing.reasons`).

Who reads the registry: `gateway.routing.rank` scores with it; the YAML's `strategy:` names
are the schema's `Strategy` Literal (config sits below routing, so it cannot import this;
tests/routing/test_strategies.py fails when the two differ, and when policies/README.md's
strategy table does not list exactly these); a request's `provider.sort` picks the strategy
whose `sort` it names. Adding one is shown in policies/README.md ("Adding a strategy").
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.schema import RoutingSettings
from gateway.routing.candidates import Candidate
from gateway.routing.facts import RequestFacts
from gateway.routing.stats import Observed

if TYPE_CHECKING:
    from gateway.routing.live import LiveState


@dataclass(slots=True)
class Ranking:
    """What ranking reads besides the candidates; built once per request (plain slots: cheap)."""

    strategy: str
    facts: RequestFacts
    live: LiveState | None
    settings: RoutingSettings
    weights: Mapping[str, float] = field(default_factory=dict)  # the route's, for `weighted`
    order: tuple[str, ...] = ()  # the request's provider.order
    rng: random.Random | None = None  # None: no exploration, `weighted` keeps its weights' order


# (score, secondary, unexplored, explanation format, its arguments)
Scored = tuple[float, float, bool, str, tuple[object, ...]]
ScoreFn = Callable[[Candidate, "Observed | None", Ranking], Scored]


@dataclass(frozen=True, slots=True)
class Strategy:
    """One way to order candidates."""

    score: ScoreFn
    observed: bool = False  # scores from observed stats: untried first, and exploration
    sort: str | None = None  # the `provider.sort` value (OpenRouter's) that selects it


COST_DETAIL = "${:.6f} = {:,} in x ${:g} + {:,} out x ${:g} per 1M"


_WAIT_TEXT = {
    (True, True): "ttft {:.3f}s (EWMA of {}){}",
    (True, False): "ttft unknown, latency {:.3f}s stands in (EWMA of {}){}",
    (False, True): "latency {:.3f}s (EWMA of {}){}",
    (False, False): "latency unknown, ttft {:.3f}s stands in (EWMA of {}){}",
}


def observed_wait(seen: Observed | None, stream: bool) -> tuple[float | None, int, int, bool]:
    """(EWMA, its samples, samples of the matching statistic, whether it is the matching one)
    of the wait a request sees: a stream's time to first token, a non-streamed call's whole
    latency; the other statistic when the matching one has no samples; None when neither has."""
    if seen is None:
        return None, 0, 0, True
    if stream:
        if seen.ttft_s is not None:
            return seen.ttft_s, seen.samples, seen.samples, True
        return seen.latency_s, seen.latency_samples, 0, False
    if seen.latency_s is not None:
        return seen.latency_s, seen.latency_samples, seen.latency_samples, True
    return seen.ttft_s, seen.samples, 0, False


def _wait_or_prior(seen: Observed | None, how: Ranking) -> float:
    wait = observed_wait(seen, how.facts.stream)[0] if seen is not None else None
    return how.settings.prior_ttft_s if wait is None else wait


def cost(candidate: Candidate, seen: Observed | None, how: Ranking) -> Scored:
    """This request's price in USD: estimated prompt tokens x input price + completion budget x
    output price (list prices per 1M tokens); ties go to the faster backend (observed wait).
    The default strategy: written out in line, as it runs for every candidate of most requests."""
    facts = how.facts
    prompt, budget, limit = facts.prompt_tokens, facts.completion_tokens, candidate.max_output_tokens
    if not facts.completion_asked and limit is not None and budget > limit:
        budget = limit  # `completion_budget`, in line
    input_price, output_price = candidate.input_price, candidate.output_price
    usd = (prompt * input_price + budget * output_price) / 1_000_000
    wait = None
    if seen is not None:  # `observed_wait(seen, facts.stream)[0]`, in line
        if facts.stream:
            wait = seen.ttft_s if seen.ttft_s is not None else seen.latency_s
        else:
            wait = seen.latency_s if seen.latency_s is not None else seen.ttft_s
    if wait is None:
        wait = how.settings.prior_ttft_s
    return usd, wait, False, COST_DETAIL, (usd, prompt, input_price, budget, output_price)


def latency(candidate: Candidate, seen: Observed | None, how: Ranking) -> Scored:
    """The observed wait that matches the request (EWMA per backend+model): time to first token
    for a stream, the whole answer's latency for a non-streamed call. While a candidate has no
    sample of that one, the other stands in, then the prior `prior_ttft_s`."""
    stream = how.facts.stream
    wait, samples, matching_samples, matching = observed_wait(seen, stream)
    unexplored = matching_samples < how.settings.explore_min_samples
    suffix = ", exploring" if unexplored else ""
    if wait is None:
        prior = how.settings.prior_ttft_s
        return prior, 0.0, unexplored, ("ttft" if stream else "latency") + " prior {:g}s (untried){}", (prior, suffix)
    return wait, 0.0, unexplored, _WAIT_TEXT[(stream, matching)], (wait, samples, suffix)


def throughput(candidate: Candidate, seen: Observed | None, how: Ranking) -> Scored:
    """Observed completion tokens per second (EWMA), highest first; ties to the faster wait."""
    tps = seen.tokens_per_s if seen is not None else None
    tps_samples = seen.tps_samples if seen is not None else 0
    unexplored = tps_samples < how.settings.explore_min_samples
    suffix = ", exploring" if unexplored else ""
    wait = _wait_or_prior(seen, how)
    if tps is None:
        prior = how.settings.prior_tokens_per_second
        return -prior, wait, unexplored, "{:g} tok/s prior (untried){}", (prior, suffix)
    return -tps, wait, unexplored, "{:.1f} tok/s (EWMA of {}){}", (tps, tps_samples, suffix)


def ordered(candidate: Candidate, seen: Observed | None, how: Ranking) -> Scored:
    """The order written in the config or the request."""
    return float(candidate.position), 0.0, False, "position {} in the list", (candidate.position + 1,)


def weight_of(candidate: Candidate, weights: Mapping[str, float]) -> float:
    """The route's weight for this offer (by `backend/author/slug`, model or backend), else the offer's."""
    offer = candidate.offer
    if weights:
        for key in (offer.qualified_id, offer.model, offer.backend):
            if key in weights:
                return weights[key]
    return offer.spec.weight


def weighted(candidate: Candidate, seen: Observed | None, how: Ranking) -> Scored:
    """A weighted random order: spreads load, and every fallback keeps a place."""
    weight = weight_of(candidate, how.weights)
    if weight <= 0 or how.rng is None:
        return (0.0 if weight <= 0 else -weight), 0.0, False, "weight {:g}", (weight,)
    # Efraimidis-Spirakis: sorting by u^(1/w) is a weighted draw without replacement.
    draw = how.rng.random() ** (1.0 / weight)
    return -draw, 0.0, False, "weight {:g}, draw {:.3f}", (weight, draw)


STRATEGIES: dict[str, Strategy] = {
    "cost": Strategy(cost, sort="price"),
    "latency": Strategy(latency, observed=True, sort="latency"),
    "throughput": Strategy(throughput, observed=True, sort="throughput"),
    "ordered": Strategy(ordered),
    "weighted": Strategy(weighted),
}

# provider.sort / a `:nitro`/`:floor` variant's sort -> strategy name
SORT_STRATEGY: dict[str, str] = {s.sort: name for name, s in STRATEGIES.items() if s.sort is not None}
