"""Tool ids sent to Anthropic in its alphabet (`gateway/backends/anthropic_ids.py`)."""

from __future__ import annotations

import copy

from gateway.backends.anthropic_ids import anthropic_tool_id, with_anthropic_tool_ids


def _conversation(*ids: str) -> dict:
    uses = [{"type": "tool_use", "id": i, "name": "f", "input": {}} for i in ids]
    results = [{"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in ids]
    turns = [{"role": "user", "content": "go"}, {"role": "assistant", "content": uses}]
    return {"model": "m", "max_tokens": 5, "messages": [*turns, {"role": "user", "content": results}]}


def test_a_conversation_whose_ids_are_all_fine_is_sent_as_the_same_object():
    payload = _conversation("toolu_01", "call-2")
    assert with_anthropic_tool_ids(payload) is payload


def test_ids_differing_only_outside_the_alphabet_stay_apart_and_pair_up_and_the_client_body_stays():
    payload = _conversation("functions.f:0", "functions_f_0", "functions:f.0")
    before = copy.deepcopy(payload)
    sent = with_anthropic_tool_ids(payload)
    uses = [b["id"] for b in sent["messages"][1]["content"]]
    results = [b["tool_use_id"] for b in sent["messages"][2]["content"]]
    assert uses == results == [anthropic_tool_id("functions.f:0"), "functions_f_0", anthropic_tool_id("functions:f.0")]
    assert len(set(uses)) == 3 and all(u.replace("_", "").replace("-", "").isalnum() for u in uses)
    assert payload == before and sent["messages"][0] is payload["messages"][0]
