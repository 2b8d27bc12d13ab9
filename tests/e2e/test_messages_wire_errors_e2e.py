"""/v1/messages errors as Anthropic's API words and marks them, met by the real `anthropic`
SDK through the real gateway process: a context overflow reads `prompt is too long: N tokens
> M maximum` (what Claude Code compacts on), whether routing or the upstream refused it,
while chat completions keep OpenAI's words for the same overflow."""

from __future__ import annotations

import anthropic
import openai
import pytest

from gateway.protocol.messages import messages_to_chat
from gateway.protocol.tokens import estimate_prompt_tokens
from tests.e2e.test_messages_e2e import COMPAT_KEY, CONFIG, ENV, HELLO, KEY

# Well past qwen/qwen3-small's 2,000-token context, well within every other model's.
LONG = [{"role": "user", "content": "Summarise the repository. " * 600}]
# vLLM's refusal of a prompt too long for its context (--max-model-len 32768).
VLLM_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 32768 tokens. However, you requested 33000 tokens "
        "(32000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
}


@pytest.fixture
def gw(start_gateway, claude, upstream):
    config = CONFIG.format(anthropic_url=claude.base_url, key=KEY, openai_url=upstream.base_url, compat_key=COMPAT_KEY)
    return start_gateway(config, env=ENV)


@pytest.fixture
def client(gw):
    made = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)
    yield made
    made.close()


def test_a_prompt_too_long_for_every_candidate_is_worded_as_anthropic_words_it(gw, client, openai_client, upstream):
    body = {"model": "small", "max_tokens": 5000, "messages": LONG}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**body)
    prompt = estimate_prompt_tokens(messages_to_chat(body))
    # The most the 2,000-token context leaves a prompt once routing's 1,024-token reserve is set aside.
    expected = f"prompt is too long: {prompt} tokens > {2000 - 1024} maximum. "
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(expected), error["message"]
    assert "does not fit the context window of any candidate for `small`" in error["message"]
    assert upstream.received == []  # refused by routing
    # Chat completions: OpenAI's words and code, as before.
    with pytest.raises(openai.BadRequestError) as chat:
        openai_client(gw).chat.completions.create(model="small", messages=LONG)
    assert chat.value.code == "context_length_exceeded"
    assert chat.value.body["message"].startswith("The request does not fit the context window of any candidate")


def test_an_upstreams_own_context_overflow_is_worded_as_anthropic_words_it(gw, client, openai_client, upstream):
    upstream.reset(status=400, error_body=VLLM_OVERFLOW)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="open", max_tokens=1000, messages=LONG)
    message = caught.value.body["error"]["message"]
    # The figures the upstream gave: the prompt, and its context less the completion asked.
    assert message == "prompt is too long: 32000 tokens > 31768 maximum. " + VLLM_OVERFLOW["error"]["message"]
    # Without figures, the words alone.
    upstream.reset(status=400, error_body={"error": {"message": "This model's maximum context length is exceeded."}})
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="open", max_tokens=1000, messages=LONG)
    assert (
        caught.value.body["error"]["message"] == "prompt is too long: This model's maximum context length is exceeded."
    )
    # Chat completions: the upstream's words, as before.
    upstream.reset(status=400, error_body=VLLM_OVERFLOW)
    with pytest.raises(openai.BadRequestError) as chat:
        openai_client(gw).chat.completions.create(model="open", messages=LONG)
    assert chat.value.code == "context_length_exceeded"
    assert chat.value.body["message"] == VLLM_OVERFLOW["error"]["message"]


def test_every_answer_names_its_request_as_anthropic_does(gw, client, upstream):
    """Anthropic's `request-id` header on every answer, and `request_id` in its error bodies:
    what the SDK reads into `message._request_id` and `APIStatusError.request_id`."""
    message = client.messages.create(model="open", max_tokens=64, messages=HELLO)
    assert message._request_id
    raw = client.messages.with_raw_response.create(model="open", max_tokens=64, messages=HELLO)
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    with client.messages.stream(model="open", max_tokens=64, messages=HELLO) as stream:
        assert stream.response.headers["request-id"] == stream.response.headers["x-request-id"]
        stream.until_done()
    counted = client.messages.count_tokens(model="open", messages=HELLO)
    assert counted._request_id
    refusals = [
        (anthropic.NotFoundError, {"model": "no/such-model"}),  # routing
        (anthropic.BadRequestError, {"model": "open", "messages": "not a list"}),  # parsing
    ]
    for kind, change in refusals:
        with pytest.raises(kind) as caught:
            client.messages.create(**{"model": "open", "max_tokens": 64, "messages": HELLO, **change})
        assert caught.value.request_id == caught.value.response.headers["x-request-id"]
        assert caught.value.body["request_id"] == caught.value.request_id
    upstream.reset(status=500)  # the upstream failed: an error after routing
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="open", max_tokens=64, messages=HELLO)
    assert caught.value.body["request_id"] == caught.value.request_id == caught.value.response.headers["x-request-id"]
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model="no/such-model", messages=HELLO)
    assert caught.value.body["request_id"] == caught.value.request_id == caught.value.response.headers["x-request-id"]


def test_openai_shaped_answers_keep_x_request_id_alone(gw, openai_client):
    raw = openai_client(gw).chat.completions.with_raw_response.create(model="open", messages=HELLO)
    assert raw.headers["x-request-id"] and "request-id" not in raw.headers


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'{"id": "msg_1", "role": "assistant"}'], ids=["not-object", "not-message"]
)
def test_a_native_answer_that_is_not_a_message_is_a_502_that_names_a_message(gw, client, claude, body):
    """Passed through natively, a Messages `message` object was expected, not a chat
    completion: the 502 says what the answer should have been."""
    claude.reset(raw_body=body)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude", max_tokens=100, messages=HELLO)
    assert caught.value.status_code == 502
    message = caught.value.body["error"]["message"]
    assert message.startswith("The upstream answered with output that is not a Messages `message` object"), message
    assert "chat completion" not in message


def test_a_translated_answer_that_is_not_one_still_names_a_chat_completion(gw, claude, openai_client):
    """The same backend asked in chat (translated by its adapter): a chat completion was expected."""
    claude.reset(raw_body=b"[1, 2]")
    with pytest.raises(openai.APIStatusError) as chat:
        openai_client(gw).chat.completions.create(model="claude", messages=HELLO)
    assert chat.value.body["code"] == "upstream_malformed_response"
    assert chat.value.body["message"].startswith(
        "The upstream answered with output that is not a valid chat completion"
    )


@pytest.mark.parametrize("stream", [False, True])
def test_every_candidate_overloaded_is_anthropics_529_overloaded_error(
    gw, client, openai_client, claude, upstream, stream
):
    """Anthropic's 529 (passed through) and a chat backend's 503 are both overload: when every
    candidate says so, the Messages client gets Anthropic's 529 `overloaded_error` (the SDK's
    OverloadedError; what Claude Code counts to fall back to another model), not a 502
    `api_error`. Chat completions keep the gateway's 502, as before."""
    claude.reset(status=529, error_type="overloaded_error", error_message="Overloaded")
    upstream.reset(status=503)
    body = {"model": "native-first", "max_tokens": 50, "messages": HELLO}
    with pytest.raises(anthropic.OverloadedError) as caught:
        if stream:
            with client.messages.stream(**body) as s:
                s.until_done()
        else:
            client.messages.create(**body)
    assert caught.value.status_code == 529
    error = caught.value.body["error"]
    assert error["type"] == "overloaded_error"
    assert error["message"].startswith("The upstream failed with status 503 (tried: claude/"), error["message"]
    assert (len(claude.received), len(upstream.received)) == (1, 1)  # each asked once, no retry of the same
    # One candidate alone, passed through: the same.
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model="claude", max_tokens=50, messages=HELLO)
    assert len(claude.received) == 2
    # Chat completions: the gateway's 502, unchanged.
    with pytest.raises(openai.APIStatusError) as chat:
        openai_client(gw).chat.completions.create(model="chat-first", messages=HELLO)
    assert chat.value.status_code == 502 and chat.value.body["code"] == "upstream_error"


def test_overload_beside_another_failure_stays_a_502_api_error(gw, client, claude, upstream):
    """Not every candidate overloaded (one failed with a 500): Anthropic's 500-class `api_error`."""
    claude.reset(status=529, error_type="overloaded_error", error_message="Overloaded")
    upstream.reset(status=500)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="native-first", max_tokens=50, messages=HELLO)
    assert caught.value.status_code == 502 and caught.value.body["error"]["type"] == "api_error"
    upstream.reset(status=503)
    claude.reset(status=500)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="chat-first", max_tokens=50, messages=HELLO)
    assert caught.value.status_code == 502 and caught.value.body["error"]["type"] == "api_error"


def _text(*texts):
    return [{"type": "text", "text": t} for t in texts]


USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}
EMPTY_TEXT = "messages: text content blocks must be non-empty"
BLANK_TEXT = "messages: text content blocks must contain non-whitespace text"
TRAILING = "messages: final assistant content cannot end with trailing whitespace"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"messages": [{"role": "user", "content": _text("Hi.", "")}]}, EMPTY_TEXT),
        ({"messages": [{"role": "user", "content": _text("")}]}, EMPTY_TEXT),
        (
            {
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": [*_text(""), USE]},
                    {"role": "user", "content": [RESULT]},
                ]
            },
            EMPTY_TEXT,
        ),
        ({"messages": [{"role": "user", "content": _text(" ", "\n")}]}, BLANK_TEXT),
        (
            {
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": [*_text("\n\n"), USE]},
                    {"role": "user", "content": [RESULT]},
                ]
            },
            BLANK_TEXT,
        ),
        (
            {"messages": [*HELLO, {"role": "assistant", "content": _text("\n\n")}, *HELLO]},
            BLANK_TEXT,
        ),
        ({"messages": [*HELLO, {"role": "assistant", "content": "Sure: "}]}, TRAILING),
        ({"messages": [*HELLO, {"role": "assistant", "content": _text("Sure", "then\n")}]}, TRAILING),
        ({"service_tier": "priority"}, "service_tier: Input should be 'auto' or 'standard_only'"),
        ({"service_tier": 1}, "service_tier: Input should be 'auto' or 'standard_only'"),
    ],
    ids=[
        "empty-beside-text",
        "empty-alone",
        "empty-beside-tool-use",
        "blank-user",
        "blank-beside-tool-use",
        "blank-assistant",
        "prefill-string",
        "prefill-blocks",
        "tier-unknown",
        "tier-number",
    ],
)
@pytest.mark.parametrize("model", ["native-first", "open"])
def test_text_blocks_and_tiers_anthropic_refuses_are_refused_before_any_backend(
    gw, client, claude, upstream, change, message, model
):
    """Anthropic's 400s, in its words: a chat backend served each of these, a native one (and
    Anthropic itself) refuses them; whichever the route, no backend is asked."""
    body = {"model": model, "max_tokens": 50, "messages": HELLO, **change}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**body)
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": message}
    assert claude.received == [] and upstream.received == []


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": _text(" ", "Hi.")}]},  # blank beside text: accepted
        {"messages": [*HELLO, {"role": "assistant", "content": ""}]},  # an empty prefill
        {"messages": [*HELLO, {"role": "assistant", "content": []}]},
        {"messages": [*HELLO, {"role": "assistant", "content": "Sure:"}]},
        {"messages": [*HELLO, {"role": "assistant", "content": _text("Hi \n", "there")}]},
        {"messages": [*HELLO, {"role": "assistant", "content": _text("ok ")}, *HELLO]},
        {"service_tier": "auto"},
        {"service_tier": "standard_only"},
    ],
    ids=[
        "blank-beside-text",
        "empty-prefill",
        "empty-prefill-list",
        "prefill",
        "prefill-inner-space",
        "history",
        "auto",
        "standard",
    ],
)
def test_what_anthropic_accepts_is_served(gw, client, claude, upstream, change):
    for model, server in (("claude", claude), ("open", upstream)):
        client.messages.create(**{"model": model, "max_tokens": 50, "messages": HELLO, **change})
        assert len(server.received) == 1
        server.received.clear()


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        (
            [*HELLO, {"role": "assistant", "content": [USE, USE]}, {"role": "user", "content": [RESULT]}],
            "messages.1.content.1: `tool_use` ids must be unique",
        ),
        (
            [
                *HELLO,
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": [RESULT, *_text("ok"), RESULT]},
            ],
            "messages.2.content.2: each tool_use must have a single result. "
            "Found multiple `tool_result` blocks with id: toolu_1",
        ),
    ],
    ids=["tool-use-twice", "tool-result-twice"],
)
@pytest.mark.parametrize("model", ["native-first", "open"])
def test_one_tool_id_twice_in_a_turn_is_anthropics_400(gw, client, claude, upstream, turns, message, model):
    """Translated, a chat backend was sent two calls under one id, or two answers to one call;
    Anthropic refuses both, in these words (as quoted from its API in clients' issues)."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=model, max_tokens=50, messages=turns)
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": message}
    assert claude.received == [] and upstream.received == []


def test_results_in_another_order_than_their_calls_are_served(gw, client, claude, upstream):
    second = {**USE, "id": "toolu_2"}
    turns = [
        *HELLO,
        {"role": "assistant", "content": [USE, second]},
        {"role": "user", "content": [{**RESULT, "tool_use_id": "toolu_2"}, RESULT]},
    ]
    for model, server in (("claude", claude), ("open", upstream)):
        client.messages.create(model=model, max_tokens=50, messages=turns)
        assert len(server.received) == 1


@pytest.mark.parametrize("model", ["native-first", "open"])
def test_two_tools_of_one_name_are_anthropics_400(gw, client, claude, upstream, model):
    """Claude Code has sent two tools of one name (an MCP server's beside its own); Anthropic
    refuses them in these words, and a chat backend was sent two functions of one name."""
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=model, max_tokens=50, messages=HELLO, tools=[tool, {**tool, "description": "2"}])
    assert caught.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "tools: Tool names must be unique.",
    }
    assert claude.received == [] and upstream.received == []
    client.messages.create(model=model, max_tokens=50, messages=HELLO, tools=[tool, {**tool, "name": "other"}])
    assert len(claude.received) + len(upstream.received) == 1


@pytest.mark.parametrize("model", ["native-first", "open"])
@pytest.mark.parametrize("value", ["Paris", ["Paris"]], ids=["string", "list"])
def test_a_tool_use_input_that_is_not_an_object_is_anthropics_400(gw, client, claude, upstream, model, value):
    """Anthropic's tool_use `input` is an object: a string went to a chat backend as the call's
    arguments (`"Paris"`, JSON that is no object) and to a native one that refuses it."""
    turns = [*HELLO, {"role": "assistant", "content": [{**USE, "input": value}]}, {"role": "user", "content": [RESULT]}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=model, max_tokens=50, messages=turns)
    assert caught.value.body["error"]["message"] == "messages.1.content.0.input: Input should be a valid dictionary"
    assert claude.received == [] and upstream.received == []
