import pytest

from gateway.config.schema import GatewaySettings, MaxPrice
from gateway.routing.admission import Admission
from gateway.routing.candidates import gather
from gateway.routing.facts import request_facts
from gateway.routing.filters import (
    FilterContext,
    check_capabilities,
    check_circuit,
    check_context,
    check_price,
    check_provider,
    price_ceilings,
)
from gateway.routing.health import CircuitState
from gateway.routing.overrides import NO_PREFS, provider_prefs
from gateway.routing.resolve import resolve
from tests.routing.support import POLICY, chat, snapshot_from

SNAP = snapshot_from(POLICY)
SETTINGS = GatewaySettings()


def candidate(backend: str, model: str):
    for c in gather([resolve(model, SNAP)], "chat", SNAP):
        if c.offer.backend == backend:
            return c
    raise LookupError((backend, model))


def ctx(request=None, prefs=NO_PREFS, route_max_price=None):
    request = request or chat()
    return FilterContext(request_facts(request, SETTINGS), prefs, route_max_price, SNAP)


def test_context_fits_counts_prompt_and_completion_budget():
    small = candidate("cheap", "small/fast")  # 4,096 tokens
    verdict = check_context(small, ctx(chat("hi")))
    assert verdict.passed and "of 4,096 tokens" in verdict.reason
    assert not check_context(small, ctx(chat("hi", max_tokens=4090))).passed
    long_prompt = chat("x" * 9600)  # ~3,200 tokens + 1,024 default reserve > 4,096
    verdict = check_context(small, ctx(long_prompt))
    assert not verdict.passed and "exceed the context of 4,096" in verdict.reason
    assert check_context(candidate("cheap", "big/long"), ctx(long_prompt)).passed


def test_max_output_tokens_caps_the_reserve_and_rejects_bigger_asks():
    snap = snapshot_from(
        POLICY.replace(
            "small/fast: {context_length: 4096,", "small/fast: {context_length: 4096, max_output_tokens: 256,"
        )
    )
    small = next(c for c in gather([resolve("small/fast", snap)], "chat", snap))
    facts_ctx = FilterContext(request_facts(chat("x" * 9000), SETTINGS), NO_PREFS, None, snap)
    assert check_context(small, facts_ctx).passed  # ~3,000 + min(1,024, 256) fits
    asked = FilterContext(request_facts(chat("hi", max_tokens=512), SETTINGS), NO_PREFS, None, snap)
    verdict = check_context(small, asked)
    assert not verdict.passed and "max output 256" in verdict.reason


def test_capabilities_declared_undeclared_and_per_backend():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    needs_tools = ctx(chat("hi", tools=tools))
    small = candidate("cheap", "small/fast")  # model declares [json]
    verdict = check_capabilities(small, needs_tools)
    assert not verdict.passed and verdict.reason == "does not declare tools"
    assert check_capabilities(candidate("pricey", "code/coder"), needs_tools).passed  # offer declares tools
    verdict = check_capabilities(candidate("cheap", "big/long"), needs_tools)
    assert verdict.passed and "assumed" in verdict.reason
    schema = ctx(chat("hi", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}))
    assert not check_capabilities(small, schema).passed
    json_object = ctx(chat("hi", response_format={"type": "json_object"}))
    assert check_capabilities(small, json_object).passed
    assert check_capabilities(candidate("pricey", "code/coder"), json_object).passed  # json_schema implies json
    image = [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    assert not check_capabilities(small, ctx(chat("x", messages=[{"role": "user", "content": image}]))).passed


def test_provider_preferences_match_backend_name_or_type():
    cheap = candidate("cheap", "big/long")
    assert check_provider(cheap, ctx(prefs=provider_prefs({"provider": {"only": ["cheap"]}}))).passed
    assert check_provider(cheap, ctx(prefs=provider_prefs({"provider": {"only": ["openai"]}}))).passed  # by type
    assert not check_provider(cheap, ctx(prefs=provider_prefs({"provider": {"only": ["pricey"]}}))).passed
    assert not check_provider(cheap, ctx(prefs=provider_prefs({"provider": {"ignore": ["CHEAP"]}}))).passed
    order_only = provider_prefs({"provider": {"order": ["pricey"], "allow_fallbacks": False}})
    verdict = check_provider(cheap, ctx(prefs=order_only))
    assert not verdict.passed and "allow_fallbacks" in verdict.reason
    assert check_provider(cheap, ctx(prefs=provider_prefs({"provider": {"order": ["pricey"]}}))).passed


def test_price_ceiling_is_the_tighter_of_request_and_route():
    request = provider_prefs({"provider": {"max_price": {"prompt": 2.0}}})
    both = ctx(prefs=request, route_max_price=MaxPrice(prompt=5.0, completion=1.5))
    assert price_ceilings(both) == (2.0, 1.5)
    pricey, cheap = candidate("pricey", "big/long"), candidate("cheap", "big/long")
    verdict = check_price(pricey, both, price_ceilings(both))
    assert not verdict.passed and "input $3.00/1M over the ceiling $2.00" in verdict.reason
    verdict = check_price(cheap, both, price_ceilings(both))  # output 2.0 > 1.5
    assert not verdict.passed and "output $2.00/1M" in verdict.reason
    assert check_price(candidate("cheap", "small/fast"), both, price_ceilings(both)).passed
    assert check_price(pricey, ctx(), price_ceilings(ctx())).reason == "no price ceiling"


def test_a_tiny_price_ceiling_reads_in_plain_dollars():
    """The no-candidate error quotes this verdict: `$1e-05` was Python's float, not a price."""
    tiny = ctx(prefs=provider_prefs({"provider": {"max_price": {"prompt": 0.00001}}}))
    verdict = check_price(candidate("pricey", "big/long"), tiny, price_ceilings(tiny))
    assert verdict.reason == "input $3.00/1M over the ceiling $0.00001"


@pytest.mark.parametrize("admitted", [True, False])
def test_circuit_verdict_follows_admission(admitted):
    verdict = check_circuit(Admission(admitted, "why", CircuitState.CLOSED if admitted else CircuitState.OPEN))
    assert verdict.passed is admitted and verdict.reason == "why"
    assert check_circuit(None).passed
