"""Ranking the eligible candidates by the route's strategy.

Strategies (lower score first):
- `cost`: this request's price, estimated prompt tokens x input price + completion budget x
  output price (ties: the faster backend first);
- `latency`: the observed wait that matches the request (EWMA per backend+model): time to
  first token for a stream, the whole answer's latency for a non-streamed call. While a
  candidate has no sample of that one, the other stands in (TTFT, a lower bound of the
  whole latency; or latency, an upper bound of TTFT), then the prior `prior_ttft_s`;
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
    from gateway.config.snapshot import Offer
    from gateway.routing.live import Admission, LiveState
    from gateway.routing.stats import Observed

# provider.sort / variant suffix -> strategy
SORT_STRATEGY = {"price": "cost", "latency": "latency", "throughput": "throughput"}
OBSERVED = ("latency", "throughput")


class Score:
    """A candidate's score (lower ranks first) and, formatted only when read, why."""

    __slots__ = ("_args", "_text", "explored", "value")

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
    return (
        facts.prompt_tokens * spec.input_price + completion_budget(candidate, facts) * spec.output_price
    ) / 1_000_000


def weight_of(candidate: Candidate, weights: dict[str, float]) -> float:
    offer = candidate.offer
    if weights:
        for key in (offer.qualified_id, offer.model, offer.backend):
            if key in weights:
                return weights[key]
    return offer.spec.weight


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


def score(
    candidate: Candidate,
    strategy: str,
    facts: RequestFacts,
    seen: Observed | None,
    settings: RoutingSettings,
    weights: dict[str, float],
    rng: random.Random | None,
) -> tuple[float, float, bool, str, tuple]:
    """The candidate's score, a secondary tie-break value, whether it is still unexplored,
    and the score's explanation as a format string and its arguments (formatted when read)."""
    wait, samples, matching_samples, matching = observed_wait(seen, facts.stream)
    ttft_value = wait if wait is not None else settings.prior_ttft_s
    if strategy == "cost":
        spec = candidate.offer.spec
        budget = completion_budget(candidate, facts)
        cost = (facts.prompt_tokens * spec.input_price + budget * spec.output_price) / 1_000_000
        return (
            cost,
            ttft_value,
            False,
            COST_DETAIL,
            (cost, facts.prompt_tokens, spec.input_price, budget, spec.output_price),
        )
    if strategy == "latency":
        unexplored = matching_samples < settings.explore_min_samples
        suffix = ", exploring" if unexplored else ""
        if wait is None:
            kind = "ttft" if facts.stream else "latency"
            return ttft_value, 0.0, unexplored, kind + " prior {:g}s (untried){}", (ttft_value, suffix)
        return ttft_value, 0.0, unexplored, _WAIT_TEXT[(facts.stream, matching)], (wait, samples, suffix)
    if strategy == "throughput":
        tps = seen.tokens_per_s if seen and seen.tokens_per_s is not None else None
        tps_samples = seen.tps_samples if seen else 0
        unexplored = tps_samples < settings.explore_min_samples
        suffix = ", exploring" if unexplored else ""
        if tps is None:
            prior = settings.prior_tokens_per_second
            return -prior, ttft_value, unexplored, "{:g} tok/s prior (untried){}", (prior, suffix)
        return -tps, ttft_value, unexplored, "{:.1f} tok/s (EWMA of {}){}", (tps, tps_samples, suffix)
    if strategy == "weighted":
        weight = weight_of(candidate, weights)
        if weight <= 0 or rng is None:
            return (0.0 if weight <= 0 else -weight), 0.0, False, "weight {:g}", (weight,)
        # Efraimidis-Spirakis: sorting by u^(1/w) is a weighted draw without replacement.
        draw = rng.random() ** (1.0 / weight)
        return -draw, 0.0, False, "weight {:g}, draw {:.3f}", (weight, draw)
    return float(candidate.position), 0.0, False, "position {} in the list", (candidate.position + 1,)


def _pin(candidate: Candidate, order: tuple[str, ...]) -> int:
    for i, name in enumerate(order):
        if name in candidate.names:
            return i
    return len(order)


# An entry of the try order: the sort key (its first 7 items; the position is unique, so a
# comparison never reaches the candidate), then the candidate and its score's explanation.
Entry = tuple  # (tier, cooling, pin, explore, score, secondary, position, candidate, text, args)
_CANDIDATE, _TEXT, _ARGS = 7, 8, 9


def order_candidates(
    eligible: list[tuple[Candidate, Admission | None]],
    strategy: str,
    facts: RequestFacts,
    live: LiveState | None,
    settings: RoutingSettings,
    weights: dict[str, float],
    order: tuple[str, ...],
    rng: random.Random | None,
) -> tuple[list[Entry], bool]:
    """The try order as plain entries, and whether exploration moved the first one there.

    What the request path runs: a tuple per candidate, no object until someone asks for the
    `Ranked` view (`ranked()`). `eligible` items are (candidate, its circuit admission).
    """
    observed = live.stats.lookup() if live is not None else None
    entries: list[Entry] = []
    if strategy == "cost":  # the default: in line
        prompt, reserve, asked = facts.prompt_tokens, facts.completion_tokens, facts.completion_asked
        prior, stream = settings.prior_ttft_s, facts.stream
        for candidate, admission in eligible:
            limit = candidate.max_output_tokens
            budget = reserve if asked or limit is None or reserve <= limit else limit
            input_price, output_price = candidate.input_price, candidate.output_price
            cost = (prompt * input_price + budget * output_price) / 1_000_000
            seen = observed(candidate.key) if observed is not None else None
            ttft = observed_wait(seen, stream)[0] if seen is not None else None
            if ttft is None:
                ttft = prior
            cooling = 1 if admission is not None and admission.cooling_for_s > 0 else 0
            pin = _pin(candidate, order) if order else 0
            entries.append(
                (
                    candidate.tier,
                    cooling,
                    pin,
                    1,
                    cost,
                    ttft,
                    candidate.position,
                    candidate,
                    COST_DETAIL,
                    (cost, prompt, input_price, budget, output_price),
                )
            )
    else:
        for candidate, admission in eligible:
            seen = observed(candidate.key) if observed is not None else None
            value, secondary, unexplored, text, args = score(candidate, strategy, facts, seen, settings, weights, rng)
            cooling = 1 if admission is not None and admission.cooling_for_s > 0 else 0
            pin = _pin(candidate, order) if order else 0
            entries.append(
                (
                    candidate.tier,
                    cooling,
                    pin,
                    0 if unexplored else 1,
                    value,
                    secondary,
                    candidate.position,
                    candidate,
                    text,
                    args,
                )
            )
    entries.sort()
    if rng is not None and strategy in OBSERVED and len(entries) > 1 and settings.exploration > 0:
        return _explore(entries, settings.exploration, rng)
    return entries, False


def try_order(entries: list[Entry]) -> tuple[Offer, ...]:
    return tuple([e[_CANDIDATE].offer for e in entries])


def first_per_model(entries: list[Entry]) -> list[Entry]:
    """`allow_fallbacks: false` without `order`: only each model's best provider."""
    seen: set[str] = set()
    out = []
    for e in entries:
        model = e[_CANDIDATE].offer.model
        if model not in seen:
            seen.add(model)
            out.append(e)
    return out


def ranked(entries: list[Entry], explored: bool) -> list[Ranked]:
    """The `Ranked` view of a try order (explanations, tests)."""
    return [
        Ranked(e[_CANDIDATE], Score(e[4], e[_TEXT], *e[_ARGS], explored=explored and i == 0), e[:7])
        for i, e in enumerate(entries)
    ]


def rank(
    eligible: list[tuple[Candidate, Admission | None]],
    strategy: str,
    facts: RequestFacts,
    live: LiveState | None,
    settings: RoutingSettings,
    weights: dict[str, float],
    order: tuple[str, ...],
    rng: random.Random | None,
) -> list[Ranked]:
    """`eligible` items are (candidate, its circuit admission)."""
    return ranked(*order_candidates(eligible, strategy, facts, live, settings, weights, order, rng))


def _explore(entries: list[Entry], share: float, rng: random.Random) -> tuple[list[Entry], bool]:
    """With probability `share`, move a random peer of the leader (same tier, pin) to the front."""
    head = entries[0][:3]
    peers = [i for i, e in enumerate(entries) if i and e[:3] == head]
    if not peers or rng.random() >= share:
        return entries, False
    pick = peers[rng.randrange(len(peers))]
    return [entries[pick]] + entries[:pick] + entries[pick + 1 :], True
