"""Ordering the eligible candidates: the try order and its explanation.

The strategies themselves (how a candidate is scored) are a registry in
`gateway.routing.strategies`. Above the strategy's score sit, in this order: the tiers
(task list before route models, `models` array order), then an upstream's running
`Retry-After` (such candidates go last), then the request's `provider.order`, then (for
strategies that score from observed stats) candidates with fewer than
`explore_min_samples` observations, so a cold gateway measures everything once. Under those
strategies a small share of requests (`exploration`) also tries a random peer of the leader
first, so a recovered backend is noticed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from gateway.config.snapshot import Offer
from gateway.routing.admission import Admission
from gateway.routing.candidates import Candidate
from gateway.routing.reasons import Score
from gateway.routing.strategies import STRATEGIES, Ranking

__all__ = ["Entry", "Ranked", "Ranking", "Score", "first_per_model", "order_candidates", "rank", "ranked", "try_order"]


# One candidate in the try order, a plain tuple: (tier, cooling (1: an upstream Retry-After
# still runs), pin (place in the request's provider.order), explore (0: unexplored, goes
# first), score, secondary, position, candidate, text (the score's explanation, formatted
# when read), its args). Entries sort as tuples: by the fields down to `position`, which is
# unique, so a comparison never reaches the candidate. Not a NamedTuple: one is built per
# candidate of every request, and building a tuple subclass (even by `tuple.__new__`) costs
# several times a tuple's.
Entry = tuple[int, int, int, int, float, float, int, Candidate, str, tuple[object, ...]]
_SCORE: Final = 4
_CANDIDATE: Final = 7
_TEXT: Final = 8
_ARGS: Final = 9


@dataclass(slots=True)
class Ranked:
    candidate: Candidate
    score: Score
    key: tuple[int, int, int, int, float, float, int]


def _pin(candidate: Candidate, order: tuple[str, ...]) -> int:
    for i, name in enumerate(order):
        if name in candidate.names:
            return i
    return len(order)


def order_candidates(eligible: list[tuple[Candidate, Admission | None]], how: Ranking) -> tuple[list[Entry], bool]:
    """The try order as plain entries, and whether exploration moved the first one there.

    What the request path runs: a tuple per candidate, no object until someone asks for the
    `Ranked` view (`ranked()`). `eligible` items are (candidate, its circuit admission).
    """
    live = how.live
    observed = live.stats.lookup() if live is not None else None
    strategy = STRATEGIES[how.strategy]
    score, order = strategy.score, how.order
    entries: list[Entry] = []
    for candidate, admission in eligible:
        seen = observed(candidate.key) if observed is not None else None
        value, secondary, unexplored, text, args = score(candidate, seen, how)
        entries.append(
            (
                candidate.tier,
                1 if admission is not None and admission.cooling_for_s > 0 else 0,
                _pin(candidate, order) if order else 0,
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
    rng = how.rng
    if rng is not None and strategy.observed and len(entries) > 1 and how.settings.exploration > 0:
        return _explore(entries, how.settings.exploration, rng)
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
    # An entry's first seven fields (tier down to position) are its key.
    return [
        Ranked(e[_CANDIDATE], Score(e[_SCORE], e[_TEXT], *e[_ARGS], explored=explored and i == 0), e[:7])
        for i, e in enumerate(entries)
    ]


def rank(eligible: list[tuple[Candidate, Admission | None]], how: Ranking) -> list[Ranked]:
    """`eligible` items are (candidate, its circuit admission)."""
    return ranked(*order_candidates(eligible, how))


def _explore(entries: list[Entry], share: float, rng: random.Random) -> tuple[list[Entry], bool]:
    """With probability `share`, move a random peer of the leader (same tier, cooling, pin) to the front."""
    head = entries[0][:3]
    peers = [i for i, e in enumerate(entries) if i and e[:3] == head]
    if not peers or rng.random() >= share:
        return entries, False
    pick = peers[rng.randrange(len(peers))]
    return [entries[pick], *entries[:pick], *entries[pick + 1 :]], True
