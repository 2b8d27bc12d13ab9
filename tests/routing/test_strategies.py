"""The strategy registry is the one list: the YAML schema, `provider.sort`, the docs and the
ranking all agree with it, and a strategy added to it ranks without touching anything else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from gateway.config.schema import GatewaySettings, RouteConfig, RoutingSettings, Strategy
from gateway.routing import strategies
from gateway.routing.admission import CLOSED
from gateway.routing.candidates import gather
from gateway.routing.facts import request_facts
from gateway.routing.overrides import SORTS
from gateway.routing.rank import rank
from gateway.routing.resolve import resolve
from gateway.routing.strategies import SORT_STRATEGY, STRATEGIES, Ranking
from tests.routing.support import POLICY, chat, snapshot_from

README = Path(__file__).resolve().parents[2] / "policies" / "README.md"


def test_the_schema_accepts_exactly_the_registered_strategies():
    assert set(get_args(Strategy)) == set(STRATEGIES)
    for name in STRATEGIES:
        assert RouteConfig(strategy=name, models=["m"]).strategy == name
    with pytest.raises(ValidationError) as caught:
        RouteConfig(strategy="fastest", models=["m"])
    assert all(f"'{name}'" in str(caught.value) for name in STRATEGIES)


def test_provider_sort_values_each_select_a_registered_strategy():
    assert set(SORT_STRATEGY) == set(SORTS)
    assert set(SORT_STRATEGY.values()) <= set(STRATEGIES)


def test_the_docs_table_lists_exactly_the_registered_strategies():
    text = README.read_text()
    table = text.split("Strategies order the candidates", 1)[1].split("\n\n", 2)[1]
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert documented == list(STRATEGIES)


def test_the_worked_example_of_the_docs_ranks_once_registered(monkeypatch):
    """policies/README.md's "Adding a strategy": its function, run as written, plus its entry."""
    text = README.read_text()
    block = text.split("### Adding a strategy", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    function = block.split("STRATEGIES: dict", 1)[0]
    namespace = dict(vars(strategies))
    exec(compile(function, "policies/README.md", "exec"), namespace)
    monkeypatch.setitem(STRATEGIES, "roomiest", strategies.Strategy(namespace["roomiest"]))
    assert '"roomiest": Strategy(roomiest),' in block

    snap = snapshot_from(POLICY)
    eligible = [(c, CLOSED) for c in gather([resolve("auto", snap)], "chat", snap)]
    facts = request_facts(chat("hello"), GatewaySettings())
    ranked = rank(eligible, Ranking("roomiest", facts, None, RoutingSettings(exploration=0.0)))
    # big/long has 131072 tokens on both backends (cheap's output price is lower), small/fast 4096
    assert [(r.candidate.offer.backend, r.candidate.offer.model) for r in ranked] == [
        ("cheap", "big/long"),
        ("pricey", "big/long"),
        ("cheap", "small/fast"),
    ]
    assert ranked[0].score.detail == "context 131,072 tokens"
    cost = rank(eligible, Ranking("cost", facts, None, RoutingSettings()))
    assert (cost[0].candidate.offer.backend, cost[0].candidate.offer.model) == ("cheap", "small/fast")


def test_the_cost_tie_break_is_the_observed_wait_it_writes_out_in_line():
    """`cost` repeats `observed_wait` in line (it runs for every candidate of most requests):
    both pick the same wait for every combination of samples."""
    from gateway.routing.stats import Observed
    from gateway.routing.strategies import cost, observed_wait

    snap = snapshot_from(POLICY)
    candidate = gather([resolve("big/long", snap)], "chat", snap)[0]
    settings = RoutingSettings(prior_ttft_s=7.0)
    for stream in (True, False):
        facts = request_facts(chat("hello", stream=stream), GatewaySettings())
        how = Ranking("cost", facts, None, settings)
        for ttft in (None, 0.2):
            for latency in (None, 0.9):
                seen = Observed(ttft_s=ttft, latency_s=latency)
                expected = observed_wait(seen, stream)[0]
                assert cost(candidate, seen, how)[1] == (7.0 if expected is None else expected)
        assert cost(candidate, None, how)[1] == 7.0
