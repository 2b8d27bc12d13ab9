import random
from collections import Counter

from gateway.config.schema import GatewaySettings, RoutingSettings
from gateway.routing.admission import Admission
from gateway.routing.candidates import gather
from gateway.routing.facts import request_facts
from gateway.routing.health import CircuitState
from gateway.routing.rank import rank
from gateway.routing.resolve import resolve
from gateway.routing.strategies import Ranking, weight_of
from tests.routing.support import POLICY, answer, chat, live_for, snapshot_from

SNAP = snapshot_from(POLICY)
FACTS = request_facts(chat("hello"), GatewaySettings())
STREAMED = request_facts(chat("hello", stream=True), GatewaySettings())
QUIET = RoutingSettings(exploration=0.0)


def eligible(names=("auto",), task="chat", snap=SNAP, cooling=()):
    out = []
    for c in gather([resolve(n, snap) for n in names], task, snap):
        admission = Admission(True, "closed", CircuitState.CLOSED, 5.0 if c.offer.key in cooling else 0.0)
        out.append((c, admission))
    return out


def order(ranked):
    return [(r.candidate.offer.backend, r.candidate.offer.model) for r in ranked]


def test_cost_ranks_by_this_requests_price():
    ranked = rank(eligible(), Ranking("cost", FACTS, None, QUIET))
    assert order(ranked) == [("cheap", "small/fast"), ("cheap", "big/long"), ("pricey", "big/long")]
    costs = [r.score.value for r in ranked]
    assert costs == sorted(costs)
    spec = ranked[0].candidate.offer.spec
    assert costs[0] == (FACTS.prompt_tokens * spec.input_price + FACTS.completion_tokens * spec.output_price) / 1e6
    assert "in x $0.1" in ranked[0].score.detail


def test_cost_ties_go_to_the_faster_backend():
    snap = snapshot_from(POLICY.replace("input_price: 3.0, output_price: 6.0", "input_price: 1.0, output_price: 2.0"))
    live = live_for(snap)
    for _ in range(3):
        live.stats.record_ttft(("pricey", "big/long"), 0.1, 0.3, 0)
        live.stats.record_ttft(("cheap", "big/long"), 0.9, 0.3, 0)
    ranked = rank(eligible(("big/long",), snap=snap), Ranking("cost", FACTS, live, QUIET))
    assert order(ranked) == [("pricey", "big/long"), ("cheap", "big/long")]


def test_latency_explores_untried_first_then_prefers_the_fastest():
    live = live_for(SNAP)
    settings = RoutingSettings(exploration=0.0, explore_min_samples=2)
    ranked = rank(eligible(("big/long",)), Ranking("latency", STREAMED, live, settings))
    assert order(ranked) == [("cheap", "big/long"), ("pricey", "big/long")]  # both untried: list order
    assert "untried" in ranked[0].score.detail
    for _ in range(2):
        live.stats.record_ttft(("cheap", "big/long"), 0.8, 0.3, 0)
    ranked = rank(eligible(("big/long",)), Ranking("latency", STREAMED, live, settings))
    assert order(ranked)[0] == ("pricey", "big/long")  # still untried: measured next
    for _ in range(2):
        live.stats.record_ttft(("pricey", "big/long"), 0.2, 0.3, 0)
    ranked = rank(eligible(("big/long",)), Ranking("latency", STREAMED, live, settings))
    assert order(ranked)[0] == ("pricey", "big/long") and ranked[0].score.value == 0.2
    for _ in range(10):
        live.stats.record_ttft(("pricey", "big/long"), 2.0, 0.5, 0)
    ranked = rank(eligible(("big/long",)), Ranking("latency", STREAMED, live, settings))
    assert order(ranked)[0] == ("cheap", "big/long")  # it got slow: the other wins


def test_exploration_sometimes_tries_a_peer_and_says_so():
    live = live_for(SNAP)
    for backend, ttft in (("cheap", 0.1), ("pricey", 0.9)):
        for _ in range(3):
            live.stats.record_ttft((backend, "big/long"), ttft, 0.3, 0)
    settings = RoutingSettings(exploration=0.2)
    rng = random.Random(1)
    firsts = Counter()
    for _ in range(500):
        ranked = rank(eligible(("big/long",)), Ranking("latency", FACTS, live, settings, rng=rng))
        firsts[order(ranked)[0][0]] += 1
        if ranked[0].candidate.offer.backend == "pricey":
            assert ranked[0].score.explored and "exploration" in ranked[0].score.detail
            assert order(ranked)[1] == ("cheap", "big/long")
    assert 60 < firsts["pricey"] < 140  # about 20%
    never = RoutingSettings(exploration=0.0)
    assert all(
        order(rank(eligible(("big/long",)), Ranking("latency", FACTS, live, never, rng=rng)))[0][0] == "cheap"
        for _ in range(50)
    )


def test_throughput_prefers_the_most_tokens_per_second():
    live = live_for(SNAP)
    for backend, tps in (("cheap", 30.0), ("pricey", 120.0)):
        for _ in range(3):
            live.stats.record_throughput((backend, "big/long"), tps, 0.3, 0)
    ranked = rank(eligible(("big/long",)), Ranking("throughput", FACTS, live, QUIET))
    assert order(ranked)[0] == ("pricey", "big/long") and "120.0 tok/s" in ranked[0].score.detail


def test_ordered_keeps_list_order():
    ranked = rank(eligible(), Ranking("ordered", FACTS, None, QUIET))
    assert [r.candidate.position for r in ranked] == [0, 1, 2]


def test_weighted_spreads_by_weight():
    rng = random.Random(3)
    weights = {"pricey": 3.0, "cheap/big/long": 1.0, "small/fast": 0.0}
    firsts = Counter()
    for _ in range(2000):
        ranked = rank(eligible(), Ranking("weighted", FACTS, None, QUIET, weights, rng=rng))
        firsts[order(ranked)[0]] += 1
        assert order(ranked)[-1] == ("cheap", "small/fast")  # weight 0: only as the last resort
    share = firsts[("pricey", "big/long")] / 2000
    assert 0.7 < share < 0.8
    candidate = eligible()[1][0]
    assert weight_of(candidate, {}) == 1.0 and weight_of(candidate, {"big/long": 2.0}) == 2.0


def test_tiers_then_retry_after_then_provider_order_come_before_the_strategy():
    ranked = rank(eligible(("auto",), task="code"), Ranking("cost", FACTS, None, QUIET))
    assert order(ranked)[0] == ("pricey", "code/coder")  # task tier first, though pricier than small/fast
    ranked = rank(eligible(("big/long",)), Ranking("cost", FACTS, None, QUIET, order=("pricey",)))
    assert order(ranked) == [("pricey", "big/long"), ("cheap", "big/long")]
    cooling = {("pricey", "big/long")}
    ranked = rank(eligible(("big/long",), cooling=cooling), Ranking("cost", FACTS, None, QUIET, order=("pricey",)))
    assert order(ranked) == [("cheap", "big/long"), ("pricey", "big/long")]


def test_latency_ranks_streams_by_ttft_and_whole_answers_by_latency():
    """cheap streams its first token fast but finishes slowly; pricey starts late, ends sooner."""
    live = live_for(SNAP)
    cheap, pricey = SNAP.offer("cheap", "big/long"), SNAP.offer("pricey", "big/long")
    for _ in range(3):
        answer(live, cheap, 0.1)
        answer(live, cheap, stream=False, seconds=6.0)
        answer(live, pricey, 0.9)
        answer(live, pricey, stream=False, seconds=2.0)
    streamed = rank(eligible(("big/long",)), Ranking("latency", STREAMED, live, QUIET))
    assert order(streamed) == [("cheap", "big/long"), ("pricey", "big/long")]
    assert [r.score.value for r in streamed] == [0.1, 0.9]
    assert streamed[0].score.detail == "ttft 0.100s (EWMA of 3)"
    whole = rank(eligible(("big/long",)), Ranking("latency", FACTS, live, QUIET))
    assert order(whole) == [("pricey", "big/long"), ("cheap", "big/long")]
    assert [r.score.value for r in whole] == [2.0, 6.0]
    assert whole[0].score.detail == "latency 2.000s (EWMA of 3)"


def test_latency_falls_back_to_the_other_statistic_and_explores_the_matching_one():
    live = live_for(SNAP)
    cheap, pricey = SNAP.offer("cheap", "big/long"), SNAP.offer("pricey", "big/long")
    for _ in range(3):
        answer(live, cheap, 0.5)  # streams only: no whole-answer latency yet
        answer(live, pricey, stream=False, seconds=2.0)
        answer(live, pricey, 0.3)
    whole = rank(eligible(("big/long",)), Ranking("latency", FACTS, live, QUIET))
    # cheap has no latency sample: its TTFT stands in, and it is explored first to get one.
    assert order(whole) == [("cheap", "big/long"), ("pricey", "big/long")]
    assert whole[0].score.value == 0.5
    assert whole[0].score.detail == "latency unknown, ttft 0.500s stands in (EWMA of 3), exploring"
    streamed = rank(eligible(("big/long",)), Ranking("latency", STREAMED, live, QUIET))
    assert order(streamed) == [("pricey", "big/long"), ("cheap", "big/long")]
    assert [r.score.value for r in streamed] == [0.3, 0.5]
