"""OpenAI <-> Anthropic Messages translation of requests and whole answers, without HTTP."""

from __future__ import annotations

import pytest

from gateway.backends.anthropic_translate import (
    UnsupportedRequest,
    to_chat_completion,
    to_messages_request,
)


def translate(messages=None, **fields):
    return to_messages_request(
        {"model": "claude-x", "messages": messages or [{"role": "user", "content": "hi"}], **fields}
    )


# -- request -------------------------------------------------------------------------------


def test_minimal_request_gets_the_default_max_tokens():
    assert translate() == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 4096,
    }


def test_the_models_output_limit_is_default_and_cap():
    limited = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert to_messages_request(limited, max_output_tokens=8192)["max_tokens"] == 8192
    assert to_messages_request({**limited, "max_tokens": 100}, max_output_tokens=8192)["max_tokens"] == 100
    assert to_messages_request({**limited, "max_tokens": 100_000}, max_output_tokens=8192)["max_tokens"] == 8192


def test_max_completion_tokens_wins_over_max_tokens():
    assert translate(max_tokens=10)["max_tokens"] == 10
    assert translate(max_tokens=10, max_completion_tokens=20)["max_tokens"] == 20
    assert translate(max_tokens=100_000)["max_tokens"] == 100_000  # no known limit: the client's word


def test_sampling_fields_and_stop():
    body = translate(temperature=0.4, top_p=0.9, stop="END", stream=True, stream_options={"include_usage": True})
    assert (body["temperature"], body["top_p"], body["stop_sequences"], body["stream"]) == (0.4, 0.9, ["END"], True)
    assert "stream_options" not in body
    assert translate(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert translate(temperature=1.8)["temperature"] == 1.0  # Anthropic's range ends at 1


def test_openai_only_fields_are_left_out():
    body = translate(
        seed=1,
        logprobs=True,
        top_logprobs=2,
        frequency_penalty=0.5,
        presence_penalty=0.1,
        logit_bias={"1": 2},
        n=1,
        response_format={"type": "text"},
        store=True,
        service_tier="auto",
    )
    assert set(body) == {"model", "messages", "max_tokens"}


def test_user_becomes_metadata_and_native_fields_pass():
    body = translate(user="u-42", top_k=5)
    assert body["metadata"] == {"user_id": "u-42"} and body["top_k"] == 5


def test_n_above_one_is_refused():
    with pytest.raises(UnsupportedRequest) as caught:
        translate(n=2)
    assert caught.value.param == "n"


def test_system_and_developer_messages_are_hoisted_in_order():
    messages = [
        {"role": "system", "content": "A."},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "B."}]},
    ]
    body = translate(messages)
    assert body["system"] == [{"type": "text", "text": "A."}, {"type": "text", "text": "B."}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert translate([{"role": "system", "content": "Only."}, {"role": "user", "content": "x"}])["system"] == "Only."


def test_cache_control_is_kept_on_parts():
    part = {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}}
    body = translate([{"role": "system", "content": [part]}, {"role": "user", "content": [part]}])
    assert body["system"] == [part]
    assert body["messages"][0]["content"] == [part]


def test_images_from_data_urls_and_urls():
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    content = translate([{"role": "user", "content": parts}])["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_pdf_file_becomes_a_document():
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
    content = translate([{"role": "user", "content": [part]}])["messages"][0]["content"]
    assert content == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        }
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
            "messages[0].content[0].image_url.url",
        ),
        ({"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}, "messages[0].content[0]"),
        ({"type": "file", "file": {"file_id": "file-1"}}, "messages[0].content[0]"),
    ],
)
def test_parts_anthropic_cannot_take_are_refused_by_name(part, param):
    with pytest.raises(UnsupportedRequest) as caught:
        translate([{"role": "user", "content": [part]}])
    assert caught.value.param == param


def test_tool_calls_and_results_round_trip():
    messages = [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "t2", "type": "function", "function": {"name": "weather", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "thanks"},
    ]
    turns = translate(messages)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "t2", "name": "weather", "input": {}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "rain"}]},
        {"type": "text", "text": "thanks"},
    ]


def test_tool_results_lead_their_turn_even_after_user_text():
    messages = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "user", "content": "before"},
        {"role": "tool", "tool_call_id": "t1", "content": "result"},
    ]
    turn = translate(messages)["messages"][1]
    assert [b["type"] for b in turn["content"]] == ["tool_result", "text"]


def test_consecutive_user_messages_merge_and_empty_ones_drop():
    turns = translate(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": ""}]
    )["messages"]
    assert turns == [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
        ({"role": "function", "name": "f", "content": "x"}, "messages[0].role"),
        (
            {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "[1]"}}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{oops"}}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_malformed_messages_are_refused_by_name(message, param):
    with pytest.raises(UnsupportedRequest) as caught:
        translate([message])
    assert caught.value.param == param


def test_tools_and_tool_choice():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "does f",
                "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
            },
        },
        {"type": "function", "function": {"name": "g"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    ]
    body = translate(tools=tools, tool_choice={"type": "function", "function": {"name": "f"}})
    assert body["tools"] == [
        {
            "name": "f",
            "description": "does f",
            "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
        },
        {"name": "g", "input_schema": {"type": "object", "properties": {}}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "f"}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_variants(choice, parallel, expected):
    fields = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    assert translate(**fields).get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped():
    assert "tool_choice" not in translate(tool_choice="auto")


def test_reasoning_effort_becomes_a_thinking_budget_within_max_tokens():
    body = translate(reasoning_effort="medium", temperature=0.3, max_tokens=10000)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "temperature" not in body  # extended thinking refuses temperature changes
    assert translate(reasoning_effort="high", max_tokens=3000)["thinking"]["budget_tokens"] == 2999
    assert "thinking" not in translate(reasoning_effort="high", max_tokens=1000)  # below Anthropic's minimum budget
    assert translate(reasoning={"max_tokens": 2048})["thinking"]["budget_tokens"] == 2048
    explicit = {"type": "enabled", "budget_tokens": 5000}
    assert translate(thinking=explicit, reasoning_effort="low")["thinking"] == explicit


CALLED = {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
RESULT = {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"}


def test_a_tool_loops_turn_without_its_thinking_block_goes_without_thinking():
    # Anthropic wants it to start with the signed block its answer began with.
    called = {"role": "assistant", "content": "Checking.", "tool_calls": [CALLED]}
    body = translate(
        [{"role": "user", "content": "Weather?"}, called, RESULT], reasoning_effort="medium", temperature=0.3
    )
    assert "thinking" not in body and body["temperature"] == 0.3
    answered = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "Rome?"},
    ]
    body = translate(answered, reasoning_effort="medium", max_tokens=10000)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}


def test_reasoning_details_sent_back_are_the_signed_thinking_the_turn_began_with():
    fmt = "anthropic-claude-v1"
    details = [  # as a client keeps them from a stream: pieces by index, the signature last
        {"type": "reasoning.text", "text": "Need ", "format": fmt, "index": 0},
        {"type": "reasoning.text", "text": "weather.", "format": fmt, "index": 0},
        {"type": "reasoning.text", "signature": "sig-1", "format": fmt, "index": 0},
        {"type": "reasoning.encrypted", "data": "opaque", "format": fmt, "index": 1},
        {"type": "reasoning.text", "text": "never signed", "format": fmt, "index": 2},  # Anthropic would refuse it
        {"type": "reasoning.summary", "summary": "A summary.", "format": fmt, "index": 3},
        {"type": "reasoning.encrypted", "data": "gAAAA", "format": "openai-responses-v1", "index": 4},
        "not an item",
    ]
    called = {"role": "assistant", "content": "Checking.", "tool_calls": [CALLED], "reasoning_details": details}
    body = translate(
        [{"role": "user", "content": "Weather?"}, called, RESULT], reasoning_effort="medium", max_tokens=10000
    )
    assert body["messages"][1]["content"][:3] == [
        {"type": "thinking", "thinking": "Need weather.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Checking."},
    ]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}  # the turn starts with its block
    # Whole items without an index (a non-streamed answer's, kept as is) stand alone.
    whole = [
        {"type": "reasoning.text", "text": "t", "signature": "s"},
        {"type": "reasoning.text", "text": "u", "signature": "v"},
    ]
    called = {"role": "assistant", "content": None, "tool_calls": [CALLED], "reasoning_details": whole}
    content = translate([{"role": "user", "content": "Weather?"}, called, RESULT])["messages"][1]["content"]
    assert content[:2] == [
        {"type": "thinking", "thinking": "t", "signature": "s"},
        {"type": "thinking", "thinking": "u", "signature": "v"},
    ]


# -- answers -------------------------------------------------------------------------------

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
        {"type": "text", "text": "Checking "},
        {"type": "text", "text": "now."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 5, "output_tokens": 7},
}


def test_message_becomes_a_chat_completion():
    completion = to_chat_completion(MESSAGE, created=1700000000)
    assert completion == {
        "id": "msg_1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking now.",
                    "refusal": None,
                    "reasoning_content": "Let me think.",
                    "reasoning_details": [
                        {
                            "type": "reasoning.text",
                            "text": "Let me think.",
                            "format": "anthropic-claude-v1",
                            "index": 0,
                            "signature": "sig",
                        }
                    ],
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 45,
            "completion_tokens": 7,
            "total_tokens": 52,
            "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 5},
        },
    }


def test_tool_only_answer_has_null_content():
    message = {**MESSAGE, "content": [MESSAGE["content"][3]]}
    assert to_chat_completion(message)["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_finish_reasons(stop_reason, finish):
    assert to_chat_completion({**MESSAGE, "stop_reason": stop_reason})["choices"][0]["finish_reason"] == finish


def test_error_body_becomes_an_openai_error():
    body = to_chat_completion({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert body == {"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": 529}}


def test_redacted_thinking_comes_back_as_an_encrypted_reasoning_detail():
    message = {**MESSAGE, "content": [{"type": "redacted_thinking", "data": "opaque"}, *MESSAGE["content"]]}
    reply = to_chat_completion(message)["choices"][0]["message"]
    assert reply["reasoning_content"] == "Let me think."
    assert reply["reasoning_details"] == [
        {"type": "reasoning.encrypted", "data": "opaque", "format": "anthropic-claude-v1", "index": 0},
        {
            "type": "reasoning.text",
            "text": "Let me think.",
            "format": "anthropic-claude-v1",
            "index": 1,
            "signature": "sig",
        },
    ]
