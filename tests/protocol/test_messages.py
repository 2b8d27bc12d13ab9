"""Anthropic Messages <-> chat completions at the ingress, against the recorded samples.

Outputs are parsed with the `anthropic` SDK's own types (strictly: no field it does not
know), and streams are compared event by event with Anthropic's recorded streams.
"""

from __future__ import annotations

import copy
from typing import Any

import anthropic.types as A
import orjson
import pytest
from anthropic._error_classes import ERROR_CLASSES
from anthropic.lib.streaming._messages import accumulate_event
from pydantic import TypeAdapter

from gateway.api.messages import parse_messages_request
from gateway.backends.anthropic_translate import to_chat_completion, to_messages_request
from gateway.protocol.errors import GatewayError, UpstreamOverloaded
from gateway.protocol.messages import count_tokens, messages_to_chat
from gateway.protocol.messages_answer import anthropic_error, chat_to_message
from gateway.protocol.messages_checks import check_tool_results
from gateway.protocol.messages_stream import MessageStream
from gateway.protocol.messages_turns import ANTHROPIC_ONLY
from gateway.protocol.messages_view import messages_prompt
from gateway.protocol.tokens import estimate_prompt_tokens
from gateway.protocol.translation import encode_event
from tests.protocol import samples as S
from tests.protocol.sdk import strict

# -- request ----------------------------------------------------------------------------------


def test_agent_request_translates_field_by_field():
    chat = messages_to_chat(copy.deepcopy(S.MESSAGES_REQUEST))
    assert chat == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [
            {
                "role": "system",
                "content": "You are an AI assistant tasked with analyzing literary works."
                "\n\nHere is the full text of a complex literary work: ...",
            },
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
                        },
                    },
                    {"type": "text", "text": "What's the weather like in San Francisco?"},
                ],
            },
            {
                "role": "assistant",
                "content": "I'll check the current weather in San Francisco for you.",
                "tool_calls": [
                    {
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location":"San Francisco, CA","unit":"celsius"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
        ],
        "temperature": 1.0,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["\n\nHuman:"],
        "user": "13803d75-b4b5-4c3e-b2a2-6f21399b021b",
        "reasoning_effort": "medium",  # budget_tokens 10000
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": S.MESSAGES_REQUEST["tools"][0]["input_schema"],
                },
            }
        ],
        "tool_choice": "auto",
    }


def test_minimal_request_and_streaming_asks_for_usage():
    assert messages_to_chat(S.MESSAGES_REQUEST_MINIMAL) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, world"}],
    }
    chat = messages_to_chat({**S.MESSAGES_REQUEST_MINIMAL, "stream": True})
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_system_string_and_claude_codes_billing_block():
    chat = messages_to_chat({**S.MESSAGES_REQUEST_MINIMAL, "system": "Be brief."})
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    blocks = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cch=93a1f;"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ]
    chat = messages_to_chat({**S.MESSAGES_REQUEST_MINIMAL, "system": blocks})
    assert chat["messages"][0] == {"role": "system", "content": "You are Claude Code."}


def test_tool_results_lead_the_user_turn_and_their_images_follow():
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            {"role": "user", "content": "look"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "need both", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.png"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "read", "input": {"path": "b.txt"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {"type": "text", "text": "an image"},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                        ],
                    },
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "hello", "is_error": False},
                    {"type": "text", "text": "and now?", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
    }
    assert messages_to_chat(body)["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "read", "arguments": '{"path":"a.png"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "read", "arguments": '{"path":"b.txt"}'}},
            ],
            "reasoning_content": "need both",  # sent only to backends that take it back
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "an image"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "hello"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "text", "text": "and now?"},
            ],
        },
    ]


def test_a_failed_tools_result_says_it_failed_in_its_tool_message():
    """Chat's tool messages have no error flag: without the text saying so, the model reads a
    failing tool's output as its answer."""

    def result(**block):
        return {"type": "tool_result", "tool_use_id": "toolu_1", **block}

    calls = [{"type": "tool_use", "id": f"toolu_{i}", "name": "run", "input": {}} for i in range(1, 6)]
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            {"role": "user", "content": "run them"},
            {"role": "assistant", "content": calls},
            {
                "role": "user",
                "content": [
                    result(content="exit status 1: no such file", is_error=True),
                    result(
                        tool_use_id="toolu_2",
                        content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                        is_error=True,
                    ),
                    result(tool_use_id="toolu_3", is_error=True),  # no content: the failure alone
                    result(tool_use_id="toolu_4", content="fine", is_error=False),
                    result(tool_use_id="toolu_5", content="fine too"),
                ],
            },
        ],
    }
    assert messages_to_chat(body)["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: exit status 1: no such file"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: a\nb"},
        {"role": "tool", "tool_call_id": "toolu_3", "content": "Error"},
        {"role": "tool", "tool_call_id": "toolu_4", "content": "fine"},
        {"role": "tool", "tool_call_id": "toolu_5", "content": "fine too"},
    ]


def _uses(*ids: str, text: str | None = None) -> dict:
    blocks = [{"type": "text", "text": text}] if text else []
    return {
        "role": "assistant",
        "content": blocks + [{"type": "tool_use", "id": i, "name": "f", "input": {}} for i in ids],
    }


def _results(*ids: str, text: str | None = None) -> dict:
    blocks = [{"type": "tool_result", "tool_use_id": i, "content": "x"} for i in ids]
    return {"role": "user", "content": blocks + ([{"type": "text", "text": text}] if text else [])}


_ASK = {"role": "user", "content": "Go."}
_NO_RESULT = "`tool_use` ids were found without `tool_result` blocks immediately after"
_NO_RESULT_END = "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
_NO_USE = "unexpected `tool_use_id` found in `tool_result` blocks"
_NO_USE_END = "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."


def test_tool_uses_and_results_must_pair_up_turn_by_turn():
    """Anthropic's 400s in its words: each tool_use answered in the very next turn, each
    tool_result answering a tool_use of the turn just before."""
    paired = [
        [_ASK, _uses("a", "b", text="Both."), _results("b", "a", text="Done?"), _uses("c"), _results("c")],
        [
            _ASK,
            _uses("a"),
            _results("a"),
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Ok."},
        ],
        [_ASK, _uses("a")],  # a prefill ending in a tool_use: nothing came after it to answer it
        [_ASK, {"role": "assistant", "content": "Hi."}, {"role": "system", "content": "Be terse."}, _ASK],
    ]
    for turns in paired:
        check_tool_results(turns)
    refused = [
        ([_results("a")], "messages.0.content.0", f"{_NO_USE}: a. {_NO_USE_END}"),
        ([_ASK, _uses("a"), _results("a", "z")], "messages.2.content.1", f"{_NO_USE}: z. {_NO_USE_END}"),
        ([_ASK, _uses("a"), _results("y", "a", "z")], "messages.2.content.0", f"{_NO_USE}: y, z. {_NO_USE_END}"),
        # A result answers the turn just before only, not an earlier one.
        ([_ASK, _uses("a"), _results("a"), _uses("b"), _results("a", "b")], "messages.4.content.0", f"{_NO_USE}: a."),
        ([_ASK, _uses("a", "b"), _results("a", text="And b?")], "messages.1", f"{_NO_RESULT}: b. {_NO_RESULT_END}"),
        ([_ASK, _uses("a", "b"), _ASK], "messages.1", f"{_NO_RESULT}: a, b. {_NO_RESULT_END}"),
        ([_ASK, _uses("a"), _uses("b"), _results("b")], "messages.1", f"{_NO_RESULT}: a."),
        # Results split over two user turns: the first is the next message, and lacks one.
        ([_ASK, _uses("a", "b"), _results("a"), _results("b")], "messages.1", f"{_NO_RESULT}: b."),
        ([_ASK, _uses("a"), {"role": "system", "content": "Be terse."}, _results("a")], "messages.1", _NO_RESULT),
        # Both wrong at once: the tool_use's turn comes first.
        ([_ASK, _uses("a"), _results("z")], "messages.1", f"{_NO_RESULT}: a."),
    ]
    for turns, where, words in refused:
        with pytest.raises(GatewayError) as caught:
            check_tool_results(turns)
        assert (caught.value.status, caught.value.param) == (400, where)
        assert caught.value.message.startswith(f"{where}: {words}")
    # What the translation names as malformed is left to it, and never a 500 here.
    for turns in [
        [_ASK, _uses("a"), "junk", _ASK],
        [_ASK, _uses("a"), {"role": "robot"}, _ASK],
        [_ASK, {"role": "assistant", "content": [{"type": "tool_use"}, "junk"]}, _ASK],
        [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": ["a"]}, {"type": 3}]}],
    ]:
        check_tool_results(turns)


def test_unpaired_tool_ids_are_named_up_to_ten_then_counted():
    """Hostile testing: every unpaired id was listed in the 400, so a request of 100,000
    unanswered tool_use blocks got back an error the size of its ids (789 KB for a 6 MB
    body). The first ten are named, each cut as any quoted client text is, then counted."""
    ids = [f"toolu_{i:06d}" for i in range(100_000)]
    for turns, where, words in [
        ([_ASK, _uses(*ids), _ASK], "messages.1", _NO_RESULT),
        ([_ASK, _uses("a"), _results("a", *ids)], "messages.2.content.1", _NO_USE),
    ]:
        with pytest.raises(GatewayError) as caught:
            check_tool_results(turns)
        message = caught.value.message
        assert caught.value.param == where
        named = ", ".join(ids[:10])
        assert message.startswith(f"{where}: {words}: {named} and {len(ids) - 10} more. ")
        assert len(message) < 600
    long_id = "x" * 5000
    with pytest.raises(GatewayError) as caught:
        check_tool_results([_ASK, _uses(long_id), _ASK])
    assert len(caught.value.message) < 600


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
    ],
)
def test_tool_choice(choice, expected):
    chat = messages_to_chat({**S.MESSAGES_REQUEST, "tool_choice": choice})
    assert {k: chat[k] for k in ("tool_choice", "parallel_tool_calls") if k in chat} == expected


@pytest.mark.parametrize(
    ("budget", "effort"),
    [
        (1024, "low"),
        (4095, "low"),
        (4096, "medium"),
        (10000, "medium"),
        (16383, "medium"),
        (16384, "high"),
        (64000, "high"),
    ],
)
def test_thinking_budget_maps_to_reasoning_effort(budget, effort):
    body = {**S.MESSAGES_REQUEST_MINIMAL, "thinking": {"type": "enabled", "budget_tokens": budget}}
    assert messages_to_chat(body)["reasoning_effort"] == effort


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_effort_survives_egress_then_ingress(effort):
    egress = to_messages_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort, "max_tokens": 32000}
    )
    assert messages_to_chat(egress)["reasoning_effort"] == effort


def test_no_effort_without_enabled_thinking_and_output_config_effort_wins():
    # `between_tools`: Claude Sonnet 5.5's lowest setting, which it takes in place of `disabled`;
    # a type newer than this gateway is sent no effort either (a native backend reads it).
    for kind in ("disabled", "adaptive", "between_tools", "a_future_kind"):
        thinking = {"type": kind}
        assert "reasoning_effort" not in messages_to_chat({**S.MESSAGES_REQUEST_MINIMAL, "thinking": thinking})
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "max", "format": {"type": "json_schema", "schema": {"type": "object"}}},
    }
    chat = messages_to_chat(body)
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"max_tokens": None}, "max_tokens", "max_tokens"),
        ({"model": ""}, "model", "model"),
        ({"messages": []}, "messages", "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role", "user"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0", "web_search_20250305"),
        ({"tools": [{"name": "a", "input_schema": {}}, {"description": "no name"}]}, "tools.1.name", "tools.1.name"),
        ({"tools": [{"name": "a", "input_schema": {}}, {"name": 5}]}, "tools.1.name", "Field required"),
        ({"tools": [{"name": "a", "input_schema": {}}, "a tool"]}, "tools.1.name", "Field required"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
                ]
            },
            "messages.0.content.0.source",
            "only available on Anthropic backends",  # the Files API's: a native candidate takes it
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]},
            "messages.0.content.0.source.media_type",
            "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
        ),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice", "auto, any, none"),
        # Hostile testing: a named tool not in `tools` was forwarded (SGLang answers 500).
        ({"tool_choice": {"type": "tool", "name": "get_weather"}}, "tool_choice.name", "'get_weather'"),
        (
            {"tools": [{"name": "a", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "b"}},
            "tool_choice.name",
            "no tool named 'b'",
        ),
        # Hostile testing: a user's text block without its text was "not supported here",
        # kept as Anthropic-only for a native candidate to refuse.
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text", "a string"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages.0.content.0.text",
            "must be a string",
        ),
    ],
)
def test_malformed_requests_get_a_400_naming_the_field(change, param, words):
    with pytest.raises(GatewayError) as caught:
        messages_to_chat({**S.MESSAGES_REQUEST_MINIMAL, **change})
    assert (caught.value.status, caught.value.param) == (400, param)
    assert words in caught.value.message
    if param.endswith(".text"):
        assert caught.value.code != ANTHROPIC_ONLY  # malformed, for any backend: not kept for a native one


_TYPE = "thinking.type: Input should be a valid string."
_SYSTEM = "system: must be a string or an array of text blocks."
_BUDGET_FLOOR = "thinking.budget_tokens: Input should be greater than or equal to 1024."


@pytest.mark.parametrize(
    ("change", "message", "param"),
    [
        # Anthropic's range is 0..1 where chat's goes to 2: 1.5 was served by a chat backend.
        ({"temperature": 1.5}, "temperature: range: 0..1", "temperature"),
        ({"temperature": -0.5}, "temperature: range: 0..1", "temperature"),
        ({"top_p": 1.01}, "top_p: range: 0..1", "top_p"),
        ({"top_p": -1}, "top_p: range: 0..1", "top_p"),
        ({"top_k": -1}, "top_k: Input should be greater than or equal to 0.", "top_k"),
        ({"thinking": "enabled"}, "thinking: must be an object.", "thinking"),
        ({"thinking": {}}, "thinking.type: Field required.", "thinking.type"),
        ({"thinking": {"type": 1, "budget_tokens": 2048}}, _TYPE, "thinking.type"),
        (
            {"output_config": {"effort": 5}},
            "output_config.effort: Input should be a valid string.",
            "output_config.effort",
        ),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens: Field required (an integer).", None),
        (
            {"thinking": {"type": "enabled", "budget_tokens": "2048"}},
            "thinking.budget_tokens: Input should be a valid integer.",
            None,
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": True}},
            "thinking.budget_tokens: Input should be a valid integer.",
            None,
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 1023}}, _BUDGET_FLOOR, None),
        # Checked where output_config's effort is what chat gets, too.
        (
            {"thinking": {"type": "enabled", "budget_tokens": 512}, "output_config": {"effort": "low"}},
            _BUDGET_FLOOR,
            None,
        ),
        ({"metadata": "user-1"}, "metadata: must be an object.", "metadata"),
        ({"metadata": {"user_id": 42}}, "metadata.user_id: Input should be a valid string.", "metadata.user_id"),
        ({"tools": [{"name": "a"}]}, "tools.0.input_schema: Field required.", "tools.0.input_schema"),
        (
            {"tools": [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": "{}"}]},
            "tools.1.input_schema: Input should be a valid dictionary.",
            "tools.1.input_schema",
        ),
        ({"tool_choice": "auto"}, "tool_choice: must be auto, any, none or a named tool.", "tool_choice"),
        ({"stop_sequences": ""}, "stop_sequences: must be an array of strings.", "stop_sequences"),
        ({"stop_sequences": {}}, "stop_sequences: must be an array of strings.", "stop_sequences"),
        ({"system": 5}, _SYSTEM, "system"),
        ({"system": {"type": "text", "text": "Be brief."}}, _SYSTEM, "system"),
    ],
)
def test_fields_anthropic_refuses_are_its_400_whichever_way_the_body_is_read(change, message, param):
    """Translated, each was served by a chat backend (or refused in its own words); routed on
    the view, passed through as it is. Both reads give the 400 before any backend is asked."""
    body = {**S.MESSAGES_REQUEST_MINIMAL, **change}
    param = param or "thinking.budget_tokens"

    def routed(body: dict) -> None:  # what the ingress reads before routing decides
        parse_messages_request(orjson.dumps(body), {}).chat.prompt_tokens()

    for read in (messages_to_chat, routed):
        with pytest.raises(GatewayError) as caught:
            read(copy.deepcopy(body))
        assert (caught.value.status, caught.value.message, caught.value.param) == (400, message, param)
        assert caught.value.code is None  # malformed for every backend: not kept for a native one
        assert anthropic_error(caught.value) == (
            400,
            {"type": "error", "error": {"type": "invalid_request_error", "message": message}},
        )


def test_the_bounds_themselves_are_accepted():
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "max_tokens": 1024,  # a budget at max_tokens: interleaved thinking (a beta header) allows it
        "temperature": 0,
        "top_p": 1.0,
        "top_k": 0,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": None},
        "stop_sequences": [],
        "tools": [{"name": "a", "input_schema": {}}],
    }
    chat = messages_to_chat(body)
    assert {k: chat.get(k) for k in ("temperature", "top_p", "top_k", "reasoning_effort", "stop", "user")} == {
        "temperature": 0,
        "top_p": 1.0,
        "top_k": 0,
        "reasoning_effort": "low",
        "stop": None,
        "user": None,
    }
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    for thinking in ({"type": "disabled"}, {"type": "adaptive", "display": "omitted"}):
        assert "reasoning_effort" not in messages_to_chat({**body, "thinking": thinking, "temperature": 1})


_EMPTY = "all messages must have non-empty content except for the optional final assistant message"


@pytest.mark.parametrize(
    ("turns", "where"),
    [
        ([{"role": "user", "content": []}], "messages.0"),
        ([{"role": "user", "content": ""}], "messages.0"),
        ([_ASK, {"role": "assistant", "content": []}, _ASK], "messages.1"),
        ([_ASK, {"role": "assistant", "content": "Hi."}, {"role": "user", "content": []}], "messages.2"),
        ([_ASK, {"role": "user", "content": ""}, {"role": "assistant", "content": "Hi."}], "messages.1"),
    ],
)
def test_a_turn_with_empty_content_is_anthropics_400_but_a_last_assistant_turn(turns, where):
    """Translated, an empty user turn became no chat message: the backend answered another
    conversation (or refused an empty message in its own words)."""
    body = {**S.MESSAGES_REQUEST_MINIMAL, "messages": turns}
    with pytest.raises(GatewayError) as caught:
        _routed(body)
    error = caught.value
    assert (error.status, error.message, error.param) == (400, f"{where}: {_EMPTY}", f"{where}.content")
    with pytest.raises(GatewayError):
        check_tool_results(turns)  # count_tokens' check too


def test_an_empty_last_assistant_turn_is_a_prefill_and_stands():
    for last in ("", []):
        turns = [_ASK, {"role": "assistant", "content": last}]
        check_tool_results(turns)
        _routed({**S.MESSAGES_REQUEST_MINIMAL, "messages": turns})


def _routed(body: dict[str, Any]) -> None:
    """The body parsed and its prompt read, as routing reads it first (`routing.pipeline.plan`):
    the view's pass, or the check and the translation when there is no view."""
    parse_messages_request(orjson.dumps(body), {}).chat.prompt_tokens()


def test_documents_become_file_or_text_parts():
    pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}
    blocks = [
        {"type": "document", "source": pdf, "title": "spec.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
        {"type": "text", "text": "Summarise both."},
    ]
    chat = messages_to_chat({**S.MESSAGES_REQUEST_MINIMAL, "messages": [{"role": "user", "content": blocks}]})
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "spec.pdf"}},
                {"type": "text", "text": "plain words"},
                {"type": "text", "text": "Summarise both."},
            ],
        }
    ]
    for source in ({"type": "url", "url": "https://example.com/a.pdf"}, "JVBERi0x"):
        body = {
            **S.MESSAGES_REQUEST_MINIMAL,
            "messages": [{"role": "user", "content": [{"type": "document", "source": source}]}],
        }
        with pytest.raises(GatewayError) as caught:
            messages_to_chat(body)
        assert (caught.value.status, caught.value.param) == (400, "messages.0.content.0.source")


def test_a_custom_content_document_becomes_its_text():
    """Hostile testing: a document of `source.type: content` (text chunks a RAG app passes
    for citations) was Anthropic-only, refused on every chat backend."""
    chunks = [{"type": "text", "text": "First chunk."}, {"type": "text", "text": "Second chunk."}]
    blocks = [
        {
            "type": "document",
            "source": {"type": "content", "content": chunks},
            "title": "notes",
            "citations": {"enabled": True},
        },
        {"type": "document", "source": {"type": "content", "content": "One string."}},
        {"type": "text", "text": "Summarise."},
    ]
    chat = messages_to_chat({**S.MESSAGES_REQUEST_MINIMAL, "messages": [{"role": "user", "content": blocks}]})
    # Text parts alone: one string, as chat's plainest content.
    assert chat["messages"][0]["content"] == "First chunk.\nSecond chunk.\nOne string.\nSummarise."
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    with_image = {"type": "document", "source": {"type": "content", "content": [chunks[0], image]}}
    body = {**S.MESSAGES_REQUEST_MINIMAL, "messages": [{"role": "user", "content": [with_image]}]}
    with pytest.raises(GatewayError) as caught:  # images inside a document: a native candidate's
        messages_to_chat(body)
    assert (caught.value.param, caught.value.code) == ("messages.0.content.0.source", ANTHROPIC_ONLY)


def test_count_tokens_uses_the_routers_estimate():
    counted = count_tokens({"model": "m", "messages": [{"role": "user", "content": "x" * 300}]})
    assert counted == {"input_tokens": 3 + 4 + 100}


# -- answers ----------------------------------------------------------------------------------


def test_text_completion_becomes_a_message():
    message = chat_to_message(S.CHAT_COMPLETION_TEXT, "claude-sonnet-4-5")
    assert message == {
        "id": "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": S.CHAT_COMPLETION_TEXT["choices"][0]["message"]["content"]}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 1117,
            "output_tokens": 46,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
    strict(A.Message, message)


def test_tool_calls_become_tool_use_blocks_with_parsed_input():
    message = chat_to_message(S.CHAT_COMPLETION_TOOL_CALLS, "m")
    assert message["content"] == [
        {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather", "input": {"location": "Boston, MA"}}
    ]
    assert message["stop_reason"] == "tool_use"
    strict(A.Message, message)


def test_reasoning_becomes_a_thinking_block_and_cache_reads_leave_input_tokens():
    message = chat_to_message(S.CHAT_COMPLETION_REASONING, "m")
    assert message["content"] == [
        {"type": "thinking", "thinking": "9.11 and 9.8: compare the tenths, 1 < 8.", "signature": ""},
        {"type": "text", "text": "9.8 is greater than 9.11."},
    ]
    assert message["usage"] == {
        "input_tokens": 4,
        "output_tokens": 30,
        "cache_read_input_tokens": 16,
        "cache_creation_input_tokens": 0,
    }
    strict(A.Message, message)


@pytest.mark.parametrize(
    ("finish", "vllm_stop", "expected"),
    [
        ("stop", None, ("end_turn", None)),
        ("stop", "\n\nHuman:", ("stop_sequence", "\n\nHuman:")),
        ("stop", 151645, ("end_turn", None)),  # vLLM names a stop token id: not a stop sequence
        ("length", None, ("max_tokens", None)),
        ("tool_calls", None, ("tool_use", None)),
        ("content_filter", None, ("refusal", None)),
        (None, None, ("end_turn", None)),  # a backend that names no reason
    ],
)
def test_stop_reasons(finish, vllm_stop, expected):
    completion = copy.deepcopy(S.CHAT_COMPLETION_TEXT)
    completion["choices"][0].update(finish_reason=finish, stop_reason=vllm_stop)
    message = chat_to_message(completion, "m", stop_sequences=["\n\nHuman:"])
    assert (message["stop_reason"], message["stop_sequence"]) == expected


def test_tool_call_finished_with_stop_is_still_tool_use():
    completion = copy.deepcopy(S.CHAT_COMPLETION_TOOL_CALLS)
    completion["choices"][0]["finish_reason"] = "stop"
    assert chat_to_message(completion, "m")["stop_reason"] == "tool_use"


def test_tool_arguments_that_are_not_an_object_are_a_502():
    completion = copy.deepcopy(S.CHAT_COMPLETION_TOOL_CALLS)
    completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"location": "Bos'
    with pytest.raises(GatewayError) as caught:
        chat_to_message(completion, "m")
    assert caught.value.status == 502 and "get_current_weather" in caught.value.message


def test_round_trip_through_egress_keeps_ids_text_and_stop_reason():
    # Anthropic's Message -> chat completion (the egress adapter) -> Message (this module).
    for original in (S.MESSAGE_TEXT, S.MESSAGE_TOOL_USE):
        back = chat_to_message(to_chat_completion(original), original["model"])
        assert back["id"] == original["id"]
        assert back["content"] == original["content"]
        assert (back["stop_reason"], back["stop_sequence"]) == (original["stop_reason"], original["stop_sequence"])
        assert (back["usage"]["input_tokens"], back["usage"]["output_tokens"]) == (
            original["usage"]["input_tokens"],
            original["usage"]["output_tokens"],
        )


def test_request_round_trip_keeps_tool_ids_and_turns():
    # Messages request -> chat (here) -> Messages request (egress): the conversation is intact.
    chat = messages_to_chat(copy.deepcopy(S.MESSAGES_REQUEST))
    again = to_messages_request(chat)
    assert again["messages"][1:] == S.MESSAGES_REQUEST["messages"][1:]
    assert again["tools"] == S.MESSAGES_REQUEST["tools"]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "sent", "kind", "sdk_class"),
    [
        (400, 400, "invalid_request_error", "BadRequestError"),
        (401, 401, "authentication_error", "AuthenticationError"),
        (403, 403, "permission_error", "PermissionDeniedError"),
        (404, 404, "not_found_error", "NotFoundError"),
        (413, 413, "request_too_large", "ContentTooLargeError"),
        (429, 429, "rate_limit_error", "RateLimitError"),
        (500, 500, "api_error", None),
        (502, 502, "api_error", None),
        (503, 529, "overloaded_error", "OverloadedError"),
        (504, 504, "timeout_error", "GatewayTimeoutError"),
    ],
)
def test_gateway_errors_in_anthropics_shape(status, sent, kind, sdk_class):
    out_status, body = anthropic_error(GatewayError(status, "why it failed"))
    assert (out_status, body) == (sent, {"type": "error", "error": {"type": kind, "message": "why it failed"}})
    if kind != "request_too_large":  # Anthropic's errors page lists it for 413; the SDK's union of types lacks it
        strict(A.ErrorResponse, body)
    if sdk_class:  # the SDK picks its exception class by status (InternalServerError for other 5xx)
        assert ERROR_CLASSES[(sent, None)].__name__ == sdk_class


def test_every_candidate_overloaded_is_anthropics_529_and_openais_502():
    overloaded = UpstreamOverloaded("The upstream failed with status 529 (tried: a/b (http_529)).")
    status, body = anthropic_error(overloaded)
    assert (status, body["error"]["type"]) == (529, "overloaded_error")
    assert ERROR_CLASSES[(529, None)].__name__ == "OverloadedError"
    plain = GatewayError(502, overloaded.message, code="upstream_error")
    assert (overloaded.status, overloaded.body()) == (502, plain.body())  # OpenAI's clients: the usual 502


# -- streams ----------------------------------------------------------------------------------


def _stream(chunks, **kwargs):
    translator = MessageStream("claude-sonnet-4-5", **kwargs)
    events = [event for chunk in chunks for event in translator.feed(chunk)]
    return events + translator.finish()


def _without_ids(events):
    """Events with what only the upstream decides (ids, model, token counts) blanked."""
    out = copy.deepcopy(events)
    for event in out:
        if event["type"] == "message_start":
            event["message"].update(id="", model="", usage={})
        if event["type"] == "message_delta":
            event["usage"] = {}
        if event["type"] == "content_block_start" and event["content_block"]["type"] == "tool_use":
            event["content_block"]["id"] = ""
    return out


def test_text_stream_is_anthropics_recorded_sequence():
    events = _stream(S.CHAT_STREAM_TEXT, input_tokens=11)
    assert _without_ids(events) == _without_ids(S.ANTHROPIC_STREAM_TEXT)
    assert events[0]["message"]["usage"] == {
        "input_tokens": 11,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }
    assert events[-2]["usage"] == {
        "input_tokens": 11,
        "output_tokens": 6,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def test_tool_call_stream_event_by_event():
    events = _stream(S.CHAT_STREAM_TOOL_CALLS + [{**S.CHAT_STREAM_TEXT[-1]}])
    fragments = ['{"', "location", '":"', "Paris", ", France", '"}']
    assert events[1:] == [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "tool_use",
                "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                "name": "get_weather",
                "input": {},
            },
        },
        {"type": "ping"},
        *[
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": f}}
            for f in fragments
        ],
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {
                "input_tokens": 11,
                "output_tokens": 6,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        },
        {"type": "message_stop"},
    ]


def test_text_then_tool_calls_follow_the_recorded_tool_stream():
    # Anthropic's recorded tool stream: a text block, then a tool_use block, in that order.
    chunks = [S.CHAT_STREAM_TEXT[0], *S.CHAT_STREAM_TEXT[1:4], *S.CHAT_STREAM_TOOL_CALLS[1:]]
    kinds = [(e["type"], e.get("content_block", e.get("delta", {})).get("type")) for e in _stream(chunks)]
    recorded = [
        (e["type"], e.get("content_block", e.get("delta", {})).get("type"))
        for e in S.ANTHROPIC_STREAM_TOOL_USE
        if e.get("delta", {}).get("partial_json") != ""  # we send no empty fragment
    ]

    # The recording has 2 text deltas and 4 argument fragments; ours 3 and 6.
    def squeeze(seq):
        out = []
        for item in seq:
            if not out or item != out[-1] or item[0] != "content_block_delta":
                out.append(item)
        return out

    assert squeeze(kinds) == squeeze(recorded)


def test_reasoning_stream_opens_a_thinking_block_then_text():
    events = _stream(S.CHAT_STREAM_REASONING)
    recorded = [e for e in S.ANTHROPIC_STREAM_THINKING if e.get("delta", {}).get("type") != "signature_delta"]
    ours = [e for e in events if e["type"] != "ping"]
    assert [e["type"] for e in ours] == [e["type"] for e in recorded]
    assert ours[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert [e["delta"] for e in ours if e["type"] == "content_block_delta"] == [
        {"type": "thinking_delta", "thinking": "Let me solve this step by step:"},
        {"type": "thinking_delta", "thinking": " 27 * 453 = 12,231"},
        {"type": "text_delta", "text": "27 * 453 = 12,231"},
    ]
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


@pytest.mark.parametrize("chunks", [S.CHAT_STREAM_TEXT, S.CHAT_STREAM_TOOL_CALLS, S.CHAT_STREAM_REASONING])
def test_sdk_accumulates_our_stream_into_a_valid_message(chunks):
    events = _stream(chunks)
    snapshot, buffers = None, {}
    parse = TypeAdapter(A.RawMessageStreamEvent)
    for event in events:
        if event["type"] == "ping":
            continue
        strict(A.RawMessageStreamEvent, event)
        snapshot = accumulate_event(event=parse.validate_python(event), current_snapshot=snapshot, json_bufs=buffers)
    final = snapshot.to_dict()
    assert final["content"] and final["stop_reason"] in ("end_turn", "tool_use")
    if chunks is S.CHAT_STREAM_TOOL_CALLS:
        assert final["content"][0]["input"] == {"location": "Paris, France"}


def test_stop_sequence_in_a_stream():
    chunks = copy.deepcopy(S.CHAT_STREAM_TEXT)
    chunks[-2]["choices"][0]["stop_reason"] = "\n\nHuman:"
    events = _stream(chunks, stop_sequences=["\n\nHuman:"])
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "\n\nHuman:"}


def test_stream_without_usage_chunk_closes_on_finish_and_only_once():
    translator = MessageStream("m")
    events = [e for c in S.CHAT_STREAM_TEXT[:-1] for e in translator.feed(c)]
    assert events[-1] == {"type": "content_block_stop", "index": 0}  # waiting for the usage chunk
    closing = translator.finish()
    assert closing == [
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            # no usage chunk: the router's estimate, bytes/3 of "Hello there!" (12 bytes)
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 4,
            },
        },
        {"type": "message_stop"},
    ]
    assert translator.finish() == [] and translator.feed(S.CHAT_STREAM_TEXT[-1]) == []


# The counts an Anthropic stream's usage carries, in message_start and (cumulative) in
# message_delta: anthropic-sdk-python's recorded tool_use_response.txt (its message_start,
# `ANTHROPIC_STREAM_TOOL_USE`) and Anthropic's later recordings, whose message_delta has the
# same four. `service_tier` is Anthropic's own (a chat backend has no such tier to report).
ANTHROPIC_COUNTS = {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"}


@pytest.mark.parametrize("usage_chunk", [True, False])
def test_translated_usage_carries_every_count_anthropics_do(usage_chunk):
    """A walkthrough found message_start's usage with input and output tokens only, and the
    closing message_delta the same when the backend sent no usage chunk: a client adding
    up `input_tokens + cache_creation_input_tokens + cache_read_input_tokens` from
    message_start (as Anthropic's usage says the prompt is counted) read a missing field."""
    assert set(S.ANTHROPIC_STREAM_TOOL_USE[0]["message"]["usage"]) - {"service_tier"} == ANTHROPIC_COUNTS
    chunks = S.CHAT_STREAM_TEXT if usage_chunk else S.CHAT_STREAM_TEXT[:-1]
    events = _stream(chunks, input_tokens=11)
    start, delta = events[0], events[-2]
    assert (start["type"], delta["type"]) == ("message_start", "message_delta")
    assert set(start["message"]["usage"]) == set(delta["usage"]) == ANTHROPIC_COUNTS
    assert start["message"]["usage"]["cache_read_input_tokens"] == 0  # not known before the usage chunk
    # The SDK's accumulated message has every count from message_start on.
    parse = TypeAdapter(A.RawMessageStreamEvent)
    snapshot = accumulate_event(event=parse.validate_python(start), current_snapshot=None, json_bufs={})
    assert snapshot.usage.cache_read_input_tokens == snapshot.usage.cache_creation_input_tokens == 0
    # The non-streamed Message's usage: the same four.
    assert set(chat_to_message(S.CHAT_COMPLETION_TEXT, "m")["usage"]) == ANTHROPIC_COUNTS


def test_error_mid_stream_is_an_anthropic_error_event_and_ends_the_stream():
    translator = MessageStream("m")
    events = translator.feed(S.CHAT_STREAM_TEXT[1])
    error = translator.feed({"error": {"message": "no capacity", "type": "service_unavailable", "code": 503}})
    assert error == [{"type": "error", "error": {"type": "overloaded_error", "message": "no capacity"}}]
    strict(A.ErrorResponse, error[0])
    assert translator.finish() == [] and [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
    ]


def test_empty_stream_still_makes_a_whole_message():
    assert [e["type"] for e in _stream([])] == ["message_start", "message_delta", "message_stop"]


def test_events_are_encoded_with_their_event_name():
    assert encode_event({"type": "message_stop"}) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def test_a_system_turn_after_the_first_is_user_text_in_place():
    """Anthropic's mid-conversation system messages: Claude Code sends one on every request
    (its environment after the first user turn; to Haiku a token count after each tool
    result). As chat system messages in place, Qwen3.5-3.8's templates refused every request
    ("System message must be at the beginning"); the text stays where it was, as user text."""
    note = {"role": "system", "content": [{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Two."}]}
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hi"}, note, {"role": "user", "content": "Go on."}],
    }
    chat = messages_to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi\nRule one.\n\nTwo.\nGo on."},
    ]
    # After a tool result: the tool message, then the note as the user's; between assistant
    # turns or last, a user message of its own.
    call = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}
    body["messages"] = [
        {"role": "user", "content": "Read it."},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [result]},
        {"role": "system", "content": "<total_tokens>9000 tokens left</total_tokens>"},
        {"role": "assistant", "content": "Done."},
        {"role": "system", "content": "Be brief."},
    ]
    assert [(m["role"], m.get("content")) for m in messages_to_chat(body)["messages"]] == [
        ("system", "You are terse."),
        ("user", "Read it."),
        ("assistant", None),
        ("tool", "ok"),
        ("user", "<total_tokens>9000 tokens left</total_tokens>"),
        ("assistant", "Done."),
        ("user", "Be brief."),
    ]
    with pytest.raises(GatewayError) as caught:
        messages_to_chat(
            {**body, "messages": [body["messages"][0], {"role": "system", "content": [{"type": "image"}]}]}
        )
    assert caught.value.param == "messages.1.content.0"


def test_consecutive_turns_of_a_role_become_one_chat_turn_as_anthropic_combines_them():
    """Anthropic combines consecutive user or assistant turns into one turn; sent as two chat
    messages of a role, backends whose chat templates want alternating roles refuse them, and
    the tool call would leave the text it was written with."""
    call = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            {"role": "user", "content": "Read a."},
            {"role": "user", "content": [{"type": "text", "text": "Then b."}, image]},
            {"role": "assistant", "content": "Reading a. "},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"}]},
            {"role": "user", "content": "And b?"},
            {"role": "system", "content": "Be terse."},  # a system turn: user text in its place
            {"role": "user", "content": "Now."},
            {"role": "assistant", "content": "One."},
            {"role": "assistant", "content": [{"type": "text", "text": "Two."}]},
        ],
    }
    assert messages_to_chat(body)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Read a."},
                {"type": "text", "text": "Then b."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Reading a. ",
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "read", "arguments": '{"path":"a"}'}}
            ],
            "reasoning_content": "t",
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "A"},
        {"role": "user", "content": "And b?\nBe terse.\nNow."},
        {"role": "assistant", "content": "One.Two."},  # texts joined as one turn's are
    ]
    # Each turn is paired before the runs are combined: field reports (BrowserOS, jcode#276) show
    # Anthropic refusing results split across two user turns.
    check_tool_results(body["messages"])


def test_a_user_turn_of_text_blocks_is_one_string_joined_by_lines():
    """Claude Code's turns are several text blocks (a <system-reminder>, then the prompt). As
    chat content parts DeepSeek's API refuses them ("invalid type: sequence, expected a
    string"); vLLM joins text parts with a newline, so joined they read the same there."""
    reminder = {"type": "text", "text": "<system-reminder>Be careful.</system-reminder>"}
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            {
                "role": "user",
                "content": [reminder, {"type": "text", "text": "Fix it.", "cache_control": {"type": "x"}}],
            },
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
        ],
    }
    chat = messages_to_chat(body)
    assert chat["messages"] == [
        {"role": "user", "content": "<system-reminder>Be careful.</system-reminder>\nFix it."},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "a\nb"},
    ]
    assert messages_prompt(body) is not None
    assert messages_prompt(body).tokens == estimate_prompt_tokens(chat)


def test_an_empty_text_block_adds_no_line():
    """Joined as they came, an empty block gave the string a stray line ("a\n\nb", or a
    trailing newline) the client never wrote. vLLM's own Anthropic endpoint leaves empty
    blocks out. (The ingress refuses such a body before it is translated, as Anthropic does;
    the translation drops the blocks all the same.)"""
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": t} for t in ("Fix it.", "", "Now.")]},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": ""}]},
        ],
    }
    chat = messages_to_chat(body)
    assert chat["messages"] == [
        {"role": "user", "content": "Fix it.\nNow."},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "a\nb"},
    ]
    # Anthropic refuses an empty block (`check_tool_results`): routing never reads such a
    # body, and the view leaves it to the check.
    assert messages_prompt(body) is None
    # A turn of empty blocks stays a turn (the roles still alternate), saying nothing.
    body["messages"][2:] = [{"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": ""}]}]
    chat = messages_to_chat(body)
    assert chat["messages"][2] == {"role": "user", "content": ""}
    assert messages_prompt(body) is None


@pytest.mark.parametrize(
    ("turns", "param"),
    [
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": 3}]}],
            "messages.1.content.0.text",
        ),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": 3}], "messages.1.content"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "assistant", "content": [{"type": "text", "text": 3}]},
            ],
            "messages.2.content.0.text",
        ),
        (
            [{"role": "assistant", "content": "b"}, {"role": "assistant", "content": ["x"]}],
            "messages.1.content.0",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "tool_result"}]}],
            "messages.1.content.0.tool_use_id",
        ),
        (
            [
                {"role": "assistant", "content": "b"},
                {"role": "assistant", "content": [{"type": "text", "text": ""}, {"type": "tool_use", "id": "t"}]},
            ],
            "messages.1.content.1",
        ),
    ],
)
def test_a_malformed_turn_in_a_run_is_named_by_its_own_index(turns, param):
    with pytest.raises(GatewayError) as caught:
        messages_to_chat({**S.MESSAGES_REQUEST_MINIMAL, "messages": turns})
    assert (caught.value.status, caught.value.param) == (400, param)
    assert caught.value.message.startswith(param + ":")


@pytest.mark.parametrize("sample", [S.CHAT_STREAM_TEXT, S.CHAT_STREAM_REASONING, S.CHAT_STREAM_TOOL_CALLS])
def test_the_text_delta_shortcut_writes_exactly_what_the_general_path_does(sample):
    base = S.CHAT_STREAM_TEXT[1]
    extra = [
        {**base, "choices": [{**base["choices"][0], "delta": {"role": "assistant", "content": " again"}}]},
        {**base, "choices": [{**base["choices"][0], "delta": {"content": '\u00e9\n"q"'}}]},
    ]
    chunks = [*sample[:-2], *extra, *sample[-2:]] if sample is S.CHAT_STREAM_TEXT else sample
    general, shortcut = MessageStream("m"), MessageStream("m")
    expected = b"".join(encode_event(e) for c in chunks for e in general.feed(copy.deepcopy(c)))
    expected += b"".join(encode_event(e) for e in general.finish())
    out, taken = [], 0
    for chunk in chunks:
        fast = shortcut.text_delta(chunk)
        taken += fast is not None
        out.append(fast if fast is not None else b"".join(encode_event(e) for e in shortcut.feed(chunk)))
    out.append(b"".join(encode_event(e) for e in shortcut.finish()))
    assert b"".join(out) == expected
    assert taken == (4 if sample is S.CHAT_STREAM_TEXT else 0)


@pytest.mark.parametrize("chunks", [S.CHAT_STREAM_PARALLEL_CALLS, S.CHAT_STREAM_INTERLEAVED_CALLS])
def test_parallel_tool_calls_keep_every_argument_in_either_order(chunks):
    """Hostile testing: calls whose heads came before their arguments lost the first call's
    arguments (its block was closed when the second began, and its later fragments dropped)."""
    events = _stream(chunks)
    snapshot, buffers = None, {}
    parse = TypeAdapter(A.RawMessageStreamEvent)
    for event in events:
        if event["type"] != "ping":
            strict(A.RawMessageStreamEvent, event)
            snapshot = accumulate_event(
                event=parse.validate_python(event), current_snapshot=snapshot, json_bufs=buffers
            )
    final = snapshot.to_dict()
    assert [(b["id"], b["input"]) for b in final["content"]] == S.PARALLEL_CALLS
    assert final["stop_reason"] == "tool_use"
    starts = [e["index"] for e in events if e["type"] == "content_block_start"]
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert starts == stops == [0, 1]  # one block at a time, as Anthropic streams them
    fragments = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    if chunks is S.CHAT_STREAM_PARALLEL_CALLS:  # one after the other: relayed as they come
        assert fragments == ['{"location":', '"Paris"}', '{"location":', '"Rome"}']
    else:  # the first call live, the second held and written whole once the first is done
        assert fragments == ['{"location":', '"Paris"}', '{"location":"Rome"}']


def _one_call(arguments: list[str]) -> list[dict]:
    head = {"id": "chatcmpl-bad", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    opened = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [opened]}}]}]
    for piece in arguments:
        call = {"index": 0, "function": {"arguments": piece}}
        chunks.append({**head, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return chunks


@pytest.mark.parametrize("arguments", [["not json"], ["```json\n", '{"a": 1}', "\n```"], ["[1, 2]"]])
def test_tool_arguments_that_are_not_an_object_end_the_stream_with_an_error_event(arguments):
    """Hostile testing: streamed, such arguments went out as input_json_delta and the SDK,
    which parses them as they come, died with a plain ValueError (not an APIError); the same
    answer non-streamed is a 502. They are held, and the stream ends with an error event."""
    events = _stream(_one_call(arguments))
    kinds = [e["type"] for e in events]
    assert kinds == ["message_start", "content_block_start", "ping", "error"]
    assert events[-1]["error"]["type"] == "api_error" and "not a JSON object" in events[-1]["error"]["message"]
    snapshot, buffers = None, {}
    parse = TypeAdapter(A.RawMessageStreamEvent)
    for event in events[:-1]:
        if event["type"] != "ping":
            snapshot = accumulate_event(
                event=parse.validate_python(event), current_snapshot=snapshot, json_bufs=buffers
            )


def test_tool_arguments_after_whitespace_are_sent_whole_once_they_are_an_object():
    events = _stream(_one_call(["  ", '{"a":', " 1}"]))
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == [{"type": "input_json_delta", "partial_json": '  {"a": 1}'}]
    assert events[-1] == {"type": "message_stop"}


def test_tool_calls_without_an_index_are_told_apart_by_their_ids():
    """Hostile testing: two calls without `index` were merged into one block, whose
    arguments then failed as not one JSON object (an error event mid-block)."""
    from tests.protocol.test_responses import _unindexed

    events = _stream(_unindexed(S.CHAT_STREAM_PARALLEL_CALLS))
    assert "error" not in [e["type"] for e in events]
    snapshot, buffers = None, {}
    parse = TypeAdapter(A.RawMessageStreamEvent)
    for event in events:
        if event["type"] != "ping":
            snapshot = accumulate_event(
                event=parse.validate_python(event), current_snapshot=snapshot, json_bufs=buffers
            )
    assert [(b["id"], b["input"]) for b in snapshot.to_dict()["content"]] == S.PARALLEL_CALLS


def test_interleaved_thinking_goes_back_a_paragraph_apart_and_redacted_thinking_not_at_all():
    call = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}
    turn = [
        {"type": "thinking", "thinking": "First this.", "signature": "s1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Reading."},
        {"type": "thinking", "thinking": "Then that.", "signature": "s2"},
        call,
    ]
    body = {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [{"role": "user", "content": "Go."}, {"role": "assistant", "content": turn}],
    }
    assert messages_to_chat(body)["messages"][-1]["reasoning_content"] == "First this.\n\nThen that."


def test_tool_calls_a_backend_gave_no_id_get_distinct_ids_in_anthropics_alphabet():
    """A null or empty call id came out as the tool_use's id: an id the client could not send back."""
    chunk = {"id": "chatcmpl-7f.2:x", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    calls = [
        {"index": n, "id": given, "type": "function", "function": {"name": "read", "arguments": "{}"}}
        for n, given in enumerate((None, ""))
    ]
    streamed = _stream([chunk, {**chunk, "choices": [{"index": 0, "delta": {"tool_calls": calls}}]}])
    opened = [e["content_block"]["id"] for e in streamed if e["type"] == "content_block_start"]
    completion = {"id": "chatcmpl-7f.2:x", "choices": [{"message": {"role": "assistant", "tool_calls": calls}}]}
    message = chat_to_message(completion, "m")
    assert opened == [b["id"] for b in message["content"]] == ["toolu_7f2x_0", "toolu_7f2x_1"]


def test_whitespace_no_text_block_is_open_for_goes_before_the_text_that_follows_or_nowhere():
    """A text block of whitespace alone is one Anthropic refuses when the client sends it back."""

    def texts(deltas):
        chunks = [{"id": "c", "choices": [{"index": 0, "delta": delta}]} for delta in deltas]
        events = _stream([*chunks, {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}])
        opened = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
        return opened, [e["delta"].get("text") for e in events if e["type"] == "content_block_delta"]

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert texts([{"content": "\n\n"}, {"tool_calls": [call]}]) == (["tool_use"], [None])
    assert texts([{"content": "\n\n", "tool_calls": [call]}]) == (["tool_use"], [None])
    assert texts([{"content": "\n"}, {"content": " "}, {"content": "Hi"}, {"content": " "}]) == (
        ["text"],
        ["\n Hi", " "],
    )
    assert texts([{"content": "  "}]) == ([], [])
