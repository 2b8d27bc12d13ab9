"""A chat completion that the chat endpoint would relay but the Messages and Responses
translations cannot read (a choice that is not an object, `tool_calls` that are not a list of
calls): the real gateway process, a fake upstream answering it, the real `anthropic` and
`openai` SDKs as callers.

Found by a hostile-upstream pass: such an answer was accepted by the fallback loop (it has a
`choices` list), then the translation raised, so the client got a 502 quoting a Python
exception (`AttributeError: 'str' object has no attribute 'get'`), the route's next candidate
was never asked, and the ledger billed the key for the tokens of an answer it never got.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.e2e.test_hostile_upstream_e2e import ENV, MESSAGES, ledger, policy

UNREADABLE_CALLS = [
    {"id": "call_1", "type": "function", "function": "get_weather"},  # function not an object
    "get_weather",  # a call that is not an object
]


@pytest.mark.parametrize("call", UNREADABLE_CALLS, ids=["function-not-object", "call-not-object"])
@pytest.mark.parametrize("api", ["messages", "responses"])
def test_an_answer_the_translation_cannot_read_falls_back_unbilled(
    start_gateway, upstream, upstream_b, openai_client, api, call
):
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    upstream.reset(tool_call=call)
    if api == "messages":
        with anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30) as client:
            message = client.messages.create(model="auto", max_tokens=64, messages=MESSAGES)
        assert [block.text for block in message.content] == ["Hello from the fake upstream."]
    else:
        response = openai_client(gw).responses.create(model="auto", input="Say hello.")
        assert response.output_text == "Hello from the fake upstream."
    assert len(upstream_b.received) == 1  # the next candidate answered
    [row] = ledger(gw, 1, failed=(("a", "malformed"),))
    assert (row["backend"], row["status"], row["prompt_tokens"]) == ("b", 200, 11)


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_an_answer_with_unreadable_usage_details_is_translated(start_gateway, upstream, upstream_b, api):
    """Usage details the translation cannot read are left out, as the chat endpoint's usage
    reader leaves them: the answer itself is fine, and is the client's."""
    gw = start_gateway(policy(upstream, upstream_b, models=("m/first",)), env=ENV)
    upstream.reset(
        usage={
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "prompt_tokens_details": "n/a",
            "completion_tokens_details": [1],
        }
    )
    if api == "messages":
        with anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30) as client:
            message = client.messages.create(model="auto", max_tokens=64, messages=MESSAGES)
        assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    else:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, timeout=30) as client:
            response = client.responses.create(model="auto", input="Say hello.")
        assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    [row] = ledger(gw, 1)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (200, 11, 7)
