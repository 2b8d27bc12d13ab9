"""gateway/protocol/chat.py `upstream_payload`: what one backend is sent of a chat request."""

from __future__ import annotations

import orjson
import pytest

from gateway.protocol.chat import parse_chat_request, upstream_payload


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
