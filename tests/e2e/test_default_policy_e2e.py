"""policies/default.yaml as a new user first meets it: `make run` serves it, the built-in
`mock` backend (gateway/backends/mock.py) answers, and the official `openai` client talks to
it without any upstream: plain answers, streams with and without usage, paced streams."""

from __future__ import annotations

import threading

import httpx
import pytest
import yaml

from gateway.protocol.tokens import estimate_prompt_tokens
from tests.support.services import REPO, GatewayProcess

DEFAULT_POLICY = (REPO / "policies" / "default.yaml").read_text()
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]
PROMPT_TOKENS = estimate_prompt_tokens({"messages": MESSAGES})
COMPLETION_TOKENS = yaml.safe_load(DEFAULT_POLICY)["backends"]["mock"]["completion_tokens"]  # one word per token


def paced(tokens_per_second: int) -> str:
    policy = DEFAULT_POLICY.replace("tokens_per_second: 0 ", f"tokens_per_second: {tokens_per_second} ")
    assert policy != DEFAULT_POLICY, "policies/default.yaml no longer sets `tokens_per_second: 0`"
    return policy


@pytest.fixture(scope="module")
def gw():
    """The shipped file, unchanged, in one gateway for this module's read-only tests."""
    gateway = GatewayProcess(DEFAULT_POLICY).start()
    yield gateway
    gateway.stop()


def ask(**extra):
    return {"model": "auto", "messages": MESSAGES, **extra}


def test_a_plain_call_is_answered_by_the_mock_with_realistic_usage(gw, openai_client):
    raw = openai_client(gw).chat.completions.with_raw_response.create(**ask())
    completion = raw.parse()
    assert raw.headers["x-gateway-backend"] == "mock"
    assert raw.headers["x-gateway-model"] == "mock/mock-small"  # the cheaper of the route's two for a chat task
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    words = choice.message.content.split()
    assert len(words) == COMPLETION_TOKENS and words[:3] == ["This", "is", "a"]
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.completion_tokens == COMPLETION_TOKENS
    assert completion.usage.total_tokens == PROMPT_TOKENS + COMPLETION_TOKENS


def test_the_default_answer_is_the_mocks_whole_message_not_cut_mid_sentence(gw, openai_client):
    """A new user's first `make run` answer tells them what to do next: cut at `completion_tokens`
    it ended "Point a real backend at" with finish_reason `stop`, which reads like a bug."""
    choice = openai_client(gw).chat.completions.create(**ask()).choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content.endswith("Point a real backend at a model to get real text.")


def test_max_tokens_bounds_the_answer_and_its_usage(gw, openai_client):
    completion = openai_client(gw).chat.completions.create(**ask(max_tokens=5))
    assert len(completion.choices[0].message.content.split()) == 5
    assert completion.usage.completion_tokens == 5


def test_a_code_task_goes_to_the_large_model(gw, openai_client):
    code = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]
    raw = openai_client(gw).chat.completions.with_raw_response.create(model="auto", messages=code)
    assert raw.headers["x-gateway-model"] == "mock/mock-large"
    assert raw.parse().choices[0].message.content


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_a_tools_request_goes_to_the_model_that_declares_tools(gw, openai_client):
    """The small model is cheaper, so it answers plain calls; it does not declare `tools`,
    so a call with tools passes it over for the large one."""
    client = openai_client(gw)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=WEATHER, tools=TOOLS)
    assert (raw.headers["x-gateway-model"], raw.headers["x-gateway-task"]) == ("mock/mock-large", "tool_use")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=WEATHER)
    assert raw.headers["x-gateway-model"] == "mock/mock-small"
    # Declared is not "nothing": JSON mode is within what the small model declares.
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=WEATHER, response_format={"type": "json_object"}
    )
    assert raw.headers["x-gateway-model"] == "mock/mock-small"


def test_explain_shows_why_a_tools_request_skips_the_small_model(gw):
    answer = httpx.post(gw.url + "/v1/route/explain", json={"model": "auto", "messages": WEATHER, "tools": TOOLS})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["needs"] == ["tools"]
    assert doc["try_order"] == [{"backend": "mock", "model": "mock/mock-large"}]
    verdicts = {c["model"]: [f for f in c["filters"] if f["filter"] == "capabilities"] for c in doc["candidates"]}
    assert verdicts == {
        "mock/mock-large": [{"filter": "capabilities", "passed": True, "reason": "declares tools"}],
        "mock/mock-small": [{"filter": "capabilities", "passed": False, "reason": "does not declare tools"}],
    }


def test_stream_without_include_usage_carries_no_usage(gw, openai_client):
    client = openai_client(gw)
    plain = client.chat.completions.create(**ask()).choices[0].message.content
    chunks = list(client.chat.completions.create(**ask(stream=True)))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_stream_with_include_usage_ends_with_the_usage_chunk(gw, openai_client):
    chunks = list(openai_client(gw).chat.completions.create(**ask(stream=True, stream_options={"include_usage": True})))
    *answer, last = chunks
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert all(c.usage is None for c in answer)
    words = [c.choices[0].delta.content for c in answer if c.choices[0].delta.content]
    assert len(words) == COMPLETION_TOKENS  # one content chunk per generated token


def test_tokens_per_second_paces_the_stream_token_by_token(start_gateway, openai_client):
    """At 20 tokens/s the 30-word answer is generated over about 1.5 seconds, a word at a time.

    Shown by order, not by duration: a call made once the first word has arrived is
    answered before the last word arrives. Generated at once, the whole answer would be
    there before that call could even be sent.
    """
    gw = start_gateway(paced(20))
    streaming, other = openai_client(gw), openai_client(gw)
    arrivals: list[str] = []  # each word as it arrives, and ANSWERED when the other call is answered
    first_word = threading.Event()
    chunks: list = []

    def read_stream() -> None:
        try:
            for chunk in streaming.chat.completions.create(**ask(stream=True, stream_options={"include_usage": True})):
                chunks.append(chunk)
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(chunk.choices[0].delta.content)
                    first_word.set()
        finally:
            first_word.set()

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert first_word.wait(30)
    assert {m.id for m in other.models.list()} >= {"auto", "mock/mock-small"}
    arrivals.append(ANSWERED)
    reader.join(60)
    assert not reader.is_alive()

    words = [a for a in arrivals if a is not ANSWERED]
    assert len(words) == COMPLETION_TOKENS and "".join(words).split()[:3] == ["This", "is", "a"]
    assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS
    later = arrivals[arrivals.index(ANSWERED) + 1 :]
    assert later, "the whole answer had arrived before another call could be answered: it was not paced"


ANSWERED = "<the other call was answered>"
