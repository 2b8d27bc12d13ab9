"""usage.cost on chat answers (gateway.api.usage_cost), without a server."""

from __future__ import annotations

from functools import partial

import orjson

from gateway.api.usage_cost import CostStream, body_with_cost, usd_text, wants_cost
from gateway.config.schema import ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.outcome import price_usd

OFFER = Offer("m/x", "up", "x", ModelOffer(input_price=2.0, output_price=4.0))
USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
COST = (1000 * 2.0 + 500 * 4.0) / 1e6


def test_only_usage_include_true_asks():
    assert wants_cost({"usage": {"include": True}})
    assert not wants_cost({"usage": {"include": "yes"}}) and not wants_cost({"usage": True}) and not wants_cost({})


def test_a_body_gains_cost_only_where_it_has_usage():
    body = orjson.dumps({"id": "c", "choices": [], "usage": USAGE})
    assert orjson.loads(body_with_cost(body, OFFER))["usage"] == {**USAGE, "cost": COST}
    bare = orjson.dumps({"id": "c", "choices": []})
    assert body_with_cost(bare, OFFER) is bare


def test_the_stream_rewrites_only_the_event_carrying_usage():
    content = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    usage = b"data: " + orjson.dumps({"choices": [], "usage": USAGE}) + b"\n\n"
    stream = CostStream(partial(price_usd, OFFER), broken=None)
    assert stream.feed(content) is content  # no "usage" in it: not even split
    out = stream.feed(content + usage + b"data: [DONE]\n\n")
    events = out.split(b"\n\n")
    assert events[0] + b"\n\n" == content and events[2] == b"data: [DONE]"
    assert orjson.loads(events[1][6:])["usage"]["cost"] == COST
    broken = b'data: {"usage": \n\n'
    assert stream.feed(broken) == broken and stream.finish() == b""


def test_costs_read_as_plain_decimals():
    assert usd_text(0.00042) == "0.00042" and usd_text(0.0) == "0" and usd_text(12.5) == "12.5"
    assert usd_text(1e-12) == "0.000000000001"
