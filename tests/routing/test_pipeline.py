import pytest

from gateway.protocol.errors import GatewayError
from gateway.proxy.outcome import Attempt
from gateway.routing.pipeline import decide, plan
from tests.routing.support import POLICY, Clock, chat, live_for, snapshot_from

SNAP = snapshot_from(POLICY)


def tried(decision):
    return [(o.backend, o.model) for o in decision.candidates]


def test_cheapest_candidate_first_under_cost():
    decision = decide(chat("What is the capital of Australia?"), {}, SNAP)
    assert tried(decision) == [("cheap", "small/fast"), ("cheap", "big/long"), ("pricey", "big/long")]
    assert decision.route == "auto" and decision.task == "chat" and decision.strategy == "cost"


def test_long_prompt_skips_the_short_context_model():
    decision = decide(chat("lorem ipsum " * 2000), {}, SNAP)
    assert ("cheap", "small/fast") not in tried(decision)
    report = next(r for r in decision.reports if r.offer.model == "small/fast")
    assert not report.eligible and report.rank is None and report.rejections[0].filter == "context_length"


def test_code_goes_to_the_code_model_first():
    decision = decide(chat("Write a Python function that merges two sorted lists."), {}, SNAP)
    assert decision.task == "code" and tried(decision)[0] == ("pricey", "code/coder")
    assert decide(chat("Who painted the Mona Lisa?"), {}, SNAP).candidates[0].model != "code/coder"


def test_floor_and_nitro_and_provider_sort():
    assert tried(decide(chat(model="big/long:floor"), {}, SNAP))[0] == ("cheap", "big/long")
    live = live_for(SNAP)
    for _ in range(3):
        live.stats.record_throughput(("pricey", "big/long"), 200.0, 0.3, 0)
        live.stats.record_throughput(("cheap", "big/long"), 20.0, 0.3, 0)
    decision = plan(chat(model="big/long:nitro"), {}, SNAP, live, explore=False)
    assert decision.strategy == "throughput" and tried(decision)[0] == ("pricey", "big/long")
    decision = plan(chat(model="big/long", provider={"sort": "throughput"}), {}, SNAP, live, explore=False)
    assert tried(decision)[0] == ("pricey", "big/long")


def test_provider_order_and_models_array():
    assert tried(decide(chat(model="big/long", provider={"order": ["pricey"]}), {}, SNAP))[0] == ("pricey", "big/long")
    decision = decide(chat(model="code/coder", models=["small/fast"]), {}, SNAP)
    assert tried(decision) == [("pricey", "code/coder"), ("cheap", "small/fast")]
    decision = decide(chat(model="big/long", provider={"order": ["pricey"], "allow_fallbacks": False}), {}, SNAP)
    assert tried(decision) == [("pricey", "big/long")]
    decision = decide(chat(model="auto", provider={"allow_fallbacks": False}), {}, SNAP)
    assert tried(decision) == [("cheap", "small/fast"), ("cheap", "big/long")]  # one provider per model


def test_attempt_limits_come_from_the_route_or_the_defaults():
    snap = snapshot_from(
        POLICY.replace("    strategy: cost\n", "    strategy: cost\n    max_attempts: 5\n    deadline_s: 9\n")
        + "gateway:\n  fallback: {max_attempts: 2, deadline_s: 30}\n"
    )
    decision = decide(chat(), {}, snap)
    assert (decision.max_attempts, decision.deadline_s) == (5, 9)
    decision = decide(chat(model="big/long"), {}, snap)
    assert (decision.max_attempts, decision.deadline_s) == (2, 30)


def test_open_circuit_is_skipped_and_named():
    clock = Clock()
    live = live_for(SNAP, clock)
    offer = SNAP.offer("cheap", "big/long")
    for _ in range(3):
        live.attempt_finished(offer, Attempt("cheap", "big/long", "http_500", 500, 0.1, backend_fault=True), None)
    decision = decide(chat(model="big/long"), {}, SNAP, live)
    assert tried(decision) == [("pricey", "big/long")]
    report = next(r for r in decision.reports if r.offer.backend == "cheap")
    assert "circuit open after 3 consecutive failures" in report.rejections[0].reason


def test_no_eligible_candidate_because_of_context_is_400_with_a_reason_each():
    with pytest.raises(GatewayError) as e:
        decide(chat("word " * 200_000), {}, SNAP)
    error = e.value
    assert error.status == 400 and error.code == "context_length_exceeded" and error.param == "messages"
    for name in ("small/fast on cheap", "big/long on cheap", "big/long on pricey"):
        assert name + ": ~" in error.message
    assert len(error.body()["error"]["metadata"]["candidates"]) == 3


def test_no_eligible_candidate_for_what_the_request_asks_is_400_naming_each():
    """Not 503: no retry finds a candidate for tools the model does not declare or a price
    under its own (a 503 made the SDKs retry it, Anthropic's for minutes as 529 overloaded)."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(GatewayError) as e:
        decide(chat(model="small/fast", tools=tools, provider={"max_price": {"prompt": 0.01}}), {}, SNAP)
    error = e.value
    assert error.status == 400 and error.code == "no_backend_available"
    assert "does not declare tools" in error.message and "over the ceiling" in error.message
    reasons = error.body()["error"]["metadata"]["candidates"][0]["reasons"]
    assert set(reasons) == {"capabilities", "max_price"}


def test_known_model_without_enabled_backend_is_503():
    snap = snapshot_from(
        POLICY.replace("  pricey:\n    type: openai\n", "  pricey:\n    type: openai\n    enabled: false\n")
    )
    with pytest.raises(GatewayError) as e:
        decide(chat(model="code/coder"), {}, snap)
    assert e.value.status == 503 and "No enabled backend serves `code/coder`" in e.value.message


def test_plan_returns_the_error_instead_of_raising():
    decision = plan(chat("word " * 200_000), {}, SNAP)
    assert decision.error is not None and decision.candidates == ()
    assert all(len(r.verdicts) == 5 for r in decision.reports)


def test_unknown_model_and_bad_header_raise_even_from_plan():
    with pytest.raises(GatewayError) as e:
        plan(chat(model="auto", models=["nobody/none"]), {}, SNAP)
    assert e.value.status == 404
    with pytest.raises(GatewayError):
        plan(chat(), {"x-gateway-task": "nope"}, SNAP)
