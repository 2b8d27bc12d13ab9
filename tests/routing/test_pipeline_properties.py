"""Property tests of the routing pipeline: whatever the config, request and observed state,
the try order holds only candidates that pass every filter, and an empty one says why."""

from __future__ import annotations

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.loader import parse_config
from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.chat import parse_chat_request
from gateway.protocol.tokens import estimate_prompt_tokens
from gateway.proxy.outcome import Attempt
from gateway.routing.pipeline import plan
from tests.routing.support import Clock, live_for

MODELS = ["a/m0", "a/m1", "b/m2", "c/m3"]
CAPS = ["tools", "json", "json_schema", "vision"]
DEFAULT_RESERVE = 1024


@st.composite
def offers(draw):
    return {
        "context_length": draw(st.sampled_from([512, 2048, 8192, 131072])),
        "input_price": draw(st.sampled_from([0.0, 0.1, 0.5, 2.0])),
        "output_price": draw(st.sampled_from([0.0, 0.2, 1.0, 6.0])),
        **({"max_output_tokens": draw(st.sampled_from([128, 4096]))} if draw(st.booleans()) else {}),
        **({"capabilities": draw(st.lists(st.sampled_from(CAPS), unique=True))} if draw(st.booleans()) else {}),
    }


@st.composite
def configs(draw):
    backends = {}
    for i in range(draw(st.integers(1, 3))):
        served = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=4, unique=True))
        backends[f"b{i}"] = {
            "type": "openai",
            "base_url": f"http://127.0.0.1:{i + 1}/v1",
            "models": {m: draw(offers()) for m in served},
        }
    served = sorted({m for b in backends.values() for m in b["models"]})
    route = {
        "strategy": draw(st.sampled_from(["cost", "latency", "throughput", "ordered", "weighted"])),
        "models": draw(st.lists(st.sampled_from(served), min_size=1, unique=True)),
        "task_fallback": draw(st.booleans()),
    }
    if draw(st.booleans()):
        route["tasks"] = {"code": draw(st.lists(st.sampled_from(served), min_size=1, unique=True))}
    if draw(st.booleans()):
        route["max_price"] = {
            "prompt": draw(st.sampled_from([0.1, 1.0])),
            "completion": draw(st.sampled_from([0.5, 6.0])),
        }
    models = {
        m: {"capabilities": draw(st.lists(st.sampled_from(CAPS), unique=True))} for m in served if draw(st.booleans())
    }
    return {"backends": backends, "models": models, "routes": {"auto": route}}


@st.composite
def requests(draw, served: list[str]):
    body = {
        "model": draw(st.sampled_from(["auto", *served, *(m + ":floor" for m in served)])),
        "messages": [
            {
                "role": "user",
                "content": draw(st.sampled_from(["hi", "Write a Python function to sort.", "x" * 3000, "y" * 30000])),
            }
        ],
    }
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.sampled_from([16, 1000, 5000]))
    if draw(st.booleans()):
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    if draw(st.booleans()):
        body["response_format"] = {"type": draw(st.sampled_from(["json_object", "json_schema", "text"]))}
    if draw(st.booleans()):
        body["messages"][0]["content"] = [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "http://x/i.png"}},
        ]
    if draw(st.booleans()):
        body["models"] = draw(st.lists(st.sampled_from(served), max_size=2))
    if draw(st.booleans()):
        names = ["b0", "b1", "b2", "openai"]
        provider = {}
        if draw(st.booleans()):
            provider["order"] = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        if draw(st.booleans()):
            provider["only"] = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        if draw(st.booleans()):
            provider["ignore"] = draw(st.lists(st.sampled_from(names), max_size=1))
        if draw(st.booleans()):
            provider["allow_fallbacks"] = False
        if draw(st.booleans()):
            provider["max_price"] = {
                "prompt": draw(st.sampled_from([0.05, 0.5, 5])),
                "completion": draw(st.sampled_from([0.1, 1, 10])),
            }
        if draw(st.booleans()):
            provider["sort"] = draw(st.sampled_from(["price", "latency", "throughput"]))
        body["provider"] = provider
    return body


def needs_of(body) -> set[str]:
    needs = set()
    if body.get("tools"):
        needs.add("tools")
    kind = (body.get("response_format") or {}).get("type")
    if kind == "json_schema":
        needs.add("json_schema")
    elif kind == "json_object":
        needs.add("json")
    content = body["messages"][0]["content"]
    if isinstance(content, list) and any(p.get("type") == "image_url" for p in content):
        needs.add("vision")
    return needs


def oracle_rejections(offer, body, config, snapshot, open_keys) -> set[str]:
    """The filters this offer fails, computed from the raw config, not by gateway.routing.filters."""
    spec = config["backends"][offer.backend]["models"][offer.model]
    failed = set()
    prompt = estimate_prompt_tokens(body)
    asked = body.get("max_tokens")
    limit = spec.get("max_output_tokens")
    budget = asked if asked else (min(DEFAULT_RESERVE, limit) if limit else DEFAULT_RESERVE)
    if (asked and limit and asked > limit) or prompt + budget > spec["context_length"]:
        failed.add("context_length")
    declared = spec.get("capabilities", config["models"].get(offer.model, {}).get("capabilities"))
    if declared is not None:
        declared = set(declared) | ({"json"} if "json_schema" in declared else set())
        if needs_of(body) - declared:
            failed.add("capabilities")
    provider = body.get("provider") or {}
    names = {offer.backend, "openai"}
    if "only" in provider and not names & set(provider["only"]):
        failed.add("provider")
    if names & set(provider.get("ignore", [])):
        failed.add("provider")
    if provider.get("order") and provider.get("allow_fallbacks") is False and not names & set(provider["order"]):
        failed.add("provider")
    ceilings = [provider.get("max_price") or {}]
    if body["model"].split(":")[0] == "auto" and config["routes"]["auto"].get("max_price"):
        ceilings.append(config["routes"]["auto"]["max_price"])
    for ceiling in ceilings:
        if spec["input_price"] > ceiling.get("prompt", float("inf")) or spec["output_price"] > ceiling.get(
            "completion", float("inf")
        ):
            failed.add("max_price")
    if offer.key in open_keys:
        failed.add("circuit")
    return failed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_try_order_holds_only_candidates_passing_every_filter_and_an_empty_one_says_why(data):
    config = data.draw(configs())
    snapshot = ConfigSnapshot.build(parse_config(yaml.safe_dump(config))[0])
    served = sorted(snapshot.offers)
    body = data.draw(requests(served))
    clock = Clock()
    live = live_for(snapshot, clock, seed=data.draw(st.integers(0, 1000)))
    all_offers = [o for offers in snapshot.offers.values() for o in offers]
    broken = data.draw(st.lists(st.sampled_from(all_offers), unique_by=lambda o: o.key, max_size=len(all_offers)))
    for offer in broken:
        for _ in range(3):  # default failure_threshold
            live.attempt_finished(
                offer, Attempt(offer.backend, offer.model, "http_500", 500, 0.1, backend_fault=True), None
            )
    open_keys = {o.key for o in broken}

    decision = plan(parse_chat_request(orjson.dumps(body)), {}, snapshot, live)

    considered = {r.offer.key: r for r in decision.reports}
    assert len(decision.candidates) == len({o.key for o in decision.candidates})
    for offer in decision.candidates:
        assert offer.key in considered
        assert oracle_rejections(offer, body, config, snapshot, open_keys) == set(), (offer, body)
    for report in decision.reports:
        assert {v.filter for v in report.rejections} == oracle_rejections(
            report.offer, body, config, snapshot, open_keys
        )

    if decision.candidates:
        assert decision.error is None
        return
    error = decision.error
    assert error is not None and decision.reports
    everyone_too_long = all(
        "context_length" in oracle_rejections(r.offer, body, config, snapshot, open_keys) for r in decision.reports
    )
    # A wait may help only where a candidate's open circuit was its one refusal.
    passing = any(
        oracle_rejections(r.offer, body, config, snapshot, open_keys) == {"circuit"} for r in decision.reports
    )
    if everyone_too_long:
        assert (error.status, error.code) == (400, "context_length_exceeded")
    else:
        assert (error.status, error.code) == (503 if passing else 400, "no_backend_available")
    for report in decision.reports:
        assert f"{report.offer.model} on {report.offer.backend}: " in error.message
    reasons = error.body()["error"]["metadata"]["candidates"]
    assert len(reasons) == len(decision.reports) and all(r["reasons"] for r in reasons)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_cost_puts_the_cheapest_eligible_candidate_of_the_first_tier_first(data):
    config = data.draw(configs())
    config["routes"]["auto"]["strategy"] = "cost"
    snapshot = ConfigSnapshot.build(parse_config(yaml.safe_dump(config))[0])
    body = {"model": "auto", "messages": [{"role": "user", "content": data.draw(st.sampled_from(["hi", "z" * 5000]))}]}
    decision = plan(parse_chat_request(orjson.dumps(body)), {}, snapshot)
    if not decision.candidates:
        return
    first = next(r for r in decision.reports if r.rank == 1)
    same_tier = [r for r in decision.reports if r.eligible and r.tier == first.tier]
    assert first.tier == min(r.tier for r in decision.reports if r.eligible)
    assert first.score.value == min(r.score.value for r in same_tier)
