"""gateway/protocol/chat.py `upstream_payload`: what one backend is sent of a chat request."""

from __future__ import annotations

import orjson
import pytest

from gateway.protocol.chat import parse_chat_request, upstream_payload, with_reasoning_history


@pytest.mark.parametrize("owned", [{}, {"models": ["a", "b"]}, {"provider": {"order": ["x"]}}, {"route": "fast"}])
def test_the_gateway_s_fields_are_dropped_the_model_replaced_and_the_client_s_body_untouched(owned):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "seed": 7, **owned}
    chat = parse_chat_request(orjson.dumps(body))
    sent = upstream_payload(chat, "vendor-model-1")
    assert sent == {"model": "vendor-model-1", "messages": [{"role": "user", "content": "hi"}], "seed": 7}
    assert chat.payload == body  # a copy was changed, not the request


def test_a_stream_always_asks_for_usage_without_changing_the_client_s_options():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["stream_options"] = {"include_usage": False}
    chat = parse_chat_request(orjson.dumps(body))
    sent = upstream_payload(chat, "u")
    assert sent["stream_options"] == {"include_usage": True}
    assert chat.payload["stream_options"] == {"include_usage": False}


def test_reasoning_history_goes_to_a_backend_that_takes_it_and_nowhere_else():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "Go."},
        {"role": "assistant", "content": None, "tool_calls": [call], "reasoning_content": "Need f."},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "assistant", "content": None, "tool_calls": [call]},  # another backend's turn: no reasoning
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "assistant", "content": "Done."},  # no calls: nothing asked of it
    ]
    before = [dict(m) for m in messages]
    taking = with_reasoning_history({"model": "m", "messages": messages}, ("reasoning_content",))["messages"]
    assert [m.get("reasoning_content") for m in taking] == [None, "Need f.", None, "", None, None]
    assert "reasoning_content" not in taking[5]
    kept = with_reasoning_history({"model": "m", "messages": messages}, ())["messages"]
    assert all("reasoning_content" not in m for m in kept) and kept[1]["tool_calls"] == [call]
    assert messages == before  # the translation every candidate is asked from is untouched
    plain = {"model": "m", "messages": [{"role": "user", "content": "Hi."}]}
    assert with_reasoning_history(plain, ())["messages"] is plain["messages"]  # nothing to change: no copy
    # vLLM's newer releases read `reasoning`, its older ones `reasoning_content`: both are sent.
    both = with_reasoning_history({"model": "m", "messages": messages}, ("reasoning_content", "reasoning"))["messages"]
    assert [(m.get("reasoning_content"), m.get("reasoning")) for m in both[1:4:2]] == [("Need f.", "Need f."), ("", "")]
