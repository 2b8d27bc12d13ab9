"""OpenAI Responses <-> chat completions at the ingress, against the recorded samples.

Outputs are parsed with the `openai` SDK's own types (strictly), streams are compared event
by event with the reference's event sequence and replayed through the SDK's own stream
accumulator.
"""

from __future__ import annotations

import copy
import time

import orjson
import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.protocol.errors import GatewayError
from gateway.protocol.responses import encode_event, responses_to_chat
from gateway.protocol.responses_answer import chat_to_response, conversation_items
from gateway.protocol.responses_input import check_tool_outputs
from gateway.protocol.responses_stream import ResponseStream
from gateway.protocol.responses_view import responses_fields
from tests.protocol import samples as S
from tests.protocol.sdk import strict
from tests.support.cpu import cpu_seconds

# -- request ----------------------------------------------------------------------------------


def test_string_input_is_one_user_message():
    assert responses_to_chat(S.RESPONSES_REQUEST_STRING) == {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "Tell me a three sentence bedtime story about a unicorn."}],
    }


def test_item_request_translates_field_by_field():
    body = S.RESPONSES_REQUEST_ITEMS
    assert responses_to_chat(copy.deepcopy(body)) == {
        "model": "gpt-5",
        "messages": [
            {"role": "system", "content": "You are a coding agent. Use the tools to answer."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what's in this image?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": body["input"][0]["content"][1]["image_url"], "detail": "auto"},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg==", "detail": "low"},
                    },
                ],
            },
            {"role": "assistant", "content": "A boardwalk."},
            {"role": "user", "content": "What is the weather like in Paris today?"},
            # the reasoning item's summary is the call's reasoning (sent only to backends that
            # take it back); the function call keeps its call_id as the tool call id
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_12345xyz",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'},
                    }
                ],
                "reasoning_content": "Need the weather tool.",
            },
            {"role": "tool", "tool_call_id": "call_12345xyz", "content": "15 degrees"},
        ],
        "temperature": 0.2,
        "top_p": 1.0,
        "parallel_tool_calls": False,
        "user": "user-1234",
        "max_tokens": 2048,
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "calendar_event",
                "schema": body["text"]["format"]["schema"],
                "strict": True,
            },
        },
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get current temperature for a given location.",
                    "parameters": body["tools"][0]["parameters"],
                    "strict": True,
                },
            }
        ],
        "tool_choice": "auto",
    }


def test_parallel_function_calls_share_one_assistant_turn_after_its_text():
    items = [
        {"role": "user", "content": "two files"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Reading both."}]},
        {"type": "function_call", "call_id": "c1", "name": "read", "arguments": '{"p":"a"}'},
        {"type": "function_call", "call_id": "c2", "name": "read", "arguments": '{"p":"b"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "A"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "B"}]},
    ]
    messages = responses_to_chat({"model": "m", "input": items})["messages"]
    assert messages[1:] == [
        {
            "role": "assistant",
            "content": "Reading both.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "read", "arguments": '{"p":"a"}'}},
                {"id": "c2", "type": "function", "function": {"name": "read", "arguments": '{"p":"b"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "A"},
        {"role": "tool", "tool_call_id": "c2", "content": "B"},
    ]


def test_user_messages_in_a_row_are_one_chat_turn_and_text_parts_one_string():
    """Codex sends its environment context and the prompt as two user messages; DeepSeek's API
    refuses "successive user or assistant messages" and any array content ("invalid type:
    sequence, expected a string"). Texts are joined by lines, as vLLM joins text parts."""
    image = {"type": "input_image", "image_url": "https://example.com/a.png"}
    items = [
        {"role": "developer", "content": [{"type": "input_text", "text": "Be terse."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "<environment_context>"}]},
        {"role": "user", "content": "Fix calc.py"},
        {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "A"},
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "look:"}, image]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Seen."}]},
        {"role": "user", "content": [image]},
    ]
    image_part = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert responses_to_chat({"model": "m", "instructions": "You are Codex.", "input": items})["messages"] == [
        # One system message: Qwen3.5/3.6's template refuses a second ("System message must be
        # at the beginning"); system prompts are joined by a blank line.
        {"role": "system", "content": "You are Codex.\n\nBe terse."},
        {"role": "user", "content": "<environment_context>\nFix calc.py"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "A"},
        {"role": "user", "content": [{"type": "text", "text": "a\nb"}, {"type": "text", "text": "look:"}, image_part]},
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": [image_part]},
    ]
    # An empty message joined to a text is that text (not a list of one part); assistant
    # messages in a row are one turn too, their texts joined by a line.
    more = [
        {"role": "user", "content": []},
        {"role": "user", "content": "xyz"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
        {"role": "assistant", "content": "B"},
    ]
    assert responses_to_chat({"model": "m", "input": more})["messages"] == [
        {"role": "user", "content": "xyz"},
        {"role": "assistant", "content": "A\nB"},
    ]


def test_a_developer_or_system_message_after_the_conversation_began_is_user_text_in_place():
    """Codex sends developer messages mid-conversation (a changed permission, a turn's
    context); as chat system messages in place, Qwen3.5-3.8's templates refused the request
    ("System message must be at the beginning")."""
    items = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": "Fix calc.py"},
        {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "A"},
        {"role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
        {"role": "assistant", "content": "Read it."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Go on."},
    ]
    assert [(m["role"], m["content"]) for m in responses_to_chat({"model": "m", "input": items})["messages"]] == [
        ("system", "Be terse."),
        ("user", "Fix calc.py"),
        ("assistant", None),
        ("tool", "A"),
        ("user", "Sandbox: read-only."),
        ("assistant", "Read it."),
        ("user", "Be brief.\nGo on."),
    ]


def test_developer_role_is_a_system_message_and_streaming_asks_for_usage():
    body = {"model": "m", "input": [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "hi"}]}
    chat = responses_to_chat({**body, "stream": True})
    assert chat["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("effort", "expected"),
    [
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "high"),
        ("max", "high"),
        ("none", None),
        (None, None),
        # An effort newer than this gateway: no effort for a chat backend, not a 400 (OpenAI
        # adds efforts with its models, and Codex sends them at once).
        ("ultra", None),
    ],
)
def test_reasoning_effort(effort, expected):
    chat = responses_to_chat({**S.RESPONSES_REQUEST_STRING, "reasoning": {"effort": effort}})
    assert chat.get("reasoning_effort") == expected


@pytest.mark.parametrize(
    ("change", "param", "code", "message"),
    [
        (
            {"temperature": 2.5},
            "temperature",
            "decimal_above_max_value",
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 instead.",
        ),
        (
            {"temperature": -1},
            "temperature",
            "decimal_below_min_value",
            "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got -1 instead.",
        ),
        ({"temperature": True}, "temperature", "invalid_type", "Invalid type for 'temperature': expected a number."),
        (
            {"top_p": 1.01},
            "top_p",
            "decimal_above_max_value",
            "Invalid 'top_p': decimal above maximum value. Expected a value <= 1, but got 1.01 instead.",
        ),
        (
            {"top_p": -0.1},
            "top_p",
            "decimal_below_min_value",
            "Invalid 'top_p': decimal below minimum value. Expected a value >= 0, but got -0.1 instead.",
        ),
        ({"top_p": "1"}, "top_p", "invalid_type", "Invalid type for 'top_p': expected a number."),
        (
            {"max_output_tokens": 15},
            "max_output_tokens",
            "integer_below_min_value",
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 15 instead.",
        ),
        (
            {"max_output_tokens": 100.0},
            "max_output_tokens",
            "invalid_type",
            "Invalid type for 'max_output_tokens': expected an integer.",
        ),
        (
            {"max_output_tokens": True},
            "max_output_tokens",
            "invalid_type",
            "Invalid type for 'max_output_tokens': expected an integer.",
        ),
        # Hostile testing: a number was accepted and echoed back in the Response.
        ({"user": 5}, "user", "invalid_type", "Invalid type for 'user': expected a string."),
        (
            {"safety_identifier": ["a"]},
            "safety_identifier",
            "invalid_type",
            "Invalid type for 'safety_identifier': expected a string.",
        ),
        # Echoed in every Response, which the SDK reads typed: a 400 as OpenAI's, not an echo
        # that breaks the client's parse (they were taken unread, whatever they held).
        (
            {"top_logprobs": 21},
            "top_logprobs",
            "integer_above_max_value",
            "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20, but got 21 instead.",
        ),
        (
            {"top_logprobs": -1},
            "top_logprobs",
            "integer_below_min_value",
            "Invalid 'top_logprobs': integer below minimum value. Expected a value >= 0, but got -1 instead.",
        ),
        (
            {"top_logprobs": 2.5},
            "top_logprobs",
            "invalid_type",
            "Invalid type for 'top_logprobs': expected an integer.",
        ),
        (
            {"max_tool_calls": "3"},
            "max_tool_calls",
            "invalid_type",
            "Invalid type for 'max_tool_calls': expected an integer.",
        ),
        (
            {"prompt_cache_key": {"k": 1}},
            "prompt_cache_key",
            "invalid_type",
            "Invalid type for 'prompt_cache_key': expected a string.",
        ),
        ({"service_tier": 1}, "service_tier", "invalid_type", "Invalid type for 'service_tier': expected a string."),
        (
            {"reasoning": {"effort": 3}},
            "reasoning.effort",
            "invalid_type",
            "Invalid type for 'reasoning.effort': expected a string.",
        ),
        (
            {"truncation": "middle"},
            "truncation",
            "invalid_value",
            "Invalid value: 'middle'. Supported values are: 'auto' and 'disabled'.",
        ),
        (
            {"truncation": True},
            "truncation",
            "invalid_type",
            "Invalid type for 'truncation': expected one of 'auto' or 'disabled'.",
        ),
        (
            {"include": "reasoning.encrypted_content"},
            "include",
            "invalid_type",
            "Invalid type for 'include': expected an array of strings.",
        ),
        ({"include": [{"a": 1}]}, "include[0]", "invalid_type", "Invalid type for 'include[0]': expected a string."),
        ({"background": "yes"}, "background", "invalid_type", "Invalid type for 'background': expected a boolean."),
        (
            {"background": True},
            "background",
            "unsupported_parameter",
            S.BACKGROUND_REFUSED,
        ),
        (
            {"text": {"format": {"type": "yaml"}}},
            "text.format",
            None,
            "text.format must be text, json_object or json_schema with a name and schema.",
        ),
        (
            {"text": {"format": "json_object"}},
            "text.format",
            None,
            "text.format must be text, json_object or json_schema with a name and schema.",
        ),
        # Echoed in the Response as asked: OpenAI's values only.
        (
            {"text": {"verbosity": "terse"}},
            "text.verbosity",
            "invalid_value",
            "Invalid value: 'terse'. Supported values are: 'low', 'medium', and 'high'.",
        ),
        (
            {"reasoning": {"summary": ["auto"]}},
            "reasoning.summary",
            "invalid_value",
            "Invalid value: '['auto']'. Supported values are: 'auto', 'concise', and 'detailed'.",
        ),
    ],
)
def test_settings_openai_refuses_are_its_400_naming_the_setting(change, param, code, message):
    """Sent on, these were dropped (an unknown effort, truncation, include), passed to a
    native backend as they came, or answered as if valid (`background` in the foreground)."""
    for body in ({**S.RESPONSES_REQUEST_STRING, **change}, {**S.RESPONSES_REQUEST_STRING, **change, "stream": True}):
        with pytest.raises(GatewayError) as caught:
            responses_to_chat(body)
        error = caught.value
        assert (error.status, error.type, error.param, error.code, error.message) == (
            400,
            "invalid_request_error",
            param,
            code,
            message,
        )


def test_settings_at_openais_bounds_are_taken():
    chat = responses_to_chat(
        {
            **S.RESPONSES_REQUEST_STRING,
            "temperature": 2,
            "top_p": 0,
            "max_output_tokens": 16,
            "truncation": "auto",
            # Any string: includables newer than the gateway are the backend's to answer.
            "include": ["reasoning.encrypted_content", "message.output_text.logprobs", "a.future.includable"],
            "background": False,
            "text": {"format": None},
            "top_logprobs": 20,
            "max_tool_calls": 0,
            "prompt_cache_key": "k",
            "service_tier": "flex",
        }
    )
    assert (chat["temperature"], chat["top_p"], chat["max_tokens"]) == (2, 0, 16)
    assert "response_format" not in chat and "truncation" not in chat and "include" not in chat
    # Echoed in the Response only: no chat backend has OpenAI's tiers or built-in tools.
    assert not {"max_tool_calls", "prompt_cache_key", "service_tier"} & set(chat)
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 20)  # the includable asks for them
    chat = responses_to_chat({**S.RESPONSES_REQUEST_STRING, "temperature": 0.0, "top_p": 1.0, "truncation": "disabled"})
    assert (chat["temperature"], chat["top_p"]) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("required", "required"),
        ("none", "none"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice, expected):
    assert responses_to_chat({**S.RESPONSES_REQUEST_ITEMS, "tool_choice": choice})["tool_choice"] == expected


def test_allowed_tools_cut_the_tools_to_those_named_and_choose_by_its_mode():
    """Hostile testing: OpenAI's `allowed_tools` choice was a 400 ("not supported"), even for a
    backend that serves Responses natively (the routing view refused it too)."""
    tools = [
        {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}
        for name in ("read", "write", "search")
    ]
    for mode in ("auto", "required"):
        choice = {"type": "allowed_tools", "mode": mode, "tools": [{"type": "function", "name": "search"}]}
        body = {"model": "m", "input": "hi", "tools": tools, "tool_choice": choice}
        chat = responses_to_chat(body)
        assert chat["tool_choice"] == mode
        assert [tool["function"]["name"] for tool in chat["tools"]] == ["search"]
        assert body["tools"] == tools  # the client's list as it was
        fields = responses_fields(body)  # the routing view's, for a backend serving Responses natively
        assert fields is not None and fields["tool_choice"] == mode
        assert [tool["name"] for tool in fields["tools"]] == ["search"]


@pytest.mark.parametrize(
    ("choice", "param"),
    [
        (
            {"type": "allowed_tools", "mode": "none", "tools": [{"type": "function", "name": "read"}]},
            "tool_choice.mode",
        ),
        ({"type": "allowed_tools", "mode": "auto", "tools": []}, "tool_choice.tools"),
        (
            {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "mcp", "server_label": "x"}]},
            "tool_choice.tools[0]",
        ),
        (
            {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "other"}]},
            "tool_choice.tools",
        ),
    ],
)
def test_a_malformed_allowed_tools_choice_is_a_400_naming_its_field(choice, param):
    tools = [{"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}}]
    with pytest.raises(GatewayError) as caught:
        responses_to_chat({"model": "m", "input": "hi", "tools": tools, "tool_choice": choice})
    assert (caught.value.status, caught.value.param) == (400, param)


def test_previous_items_come_before_the_new_input():
    previous = conversation_items(None, S.RESPONSES_REQUEST_STRING, S.RESPONSE_TEXT)
    chat = responses_to_chat({"model": "m", "instructions": "Now be brief.", "input": "And then?"}, previous)
    assert chat["messages"] == [
        {"role": "system", "content": "Now be brief."},
        {"role": "user", "content": "Tell me a three sentence bedtime story about a unicorn."},
        {"role": "assistant", "content": "Hello! How can I assist you today?"},
        {"role": "user", "content": "And then?"},
    ]


def test_an_error_in_the_new_input_names_its_own_index_after_previous_items():
    previous = conversation_items(None, S.RESPONSES_REQUEST_STRING, S.RESPONSE_TEXT)
    with pytest.raises(GatewayError) as caught:
        responses_to_chat({"model": "m", "input": [{"role": "user", "content": "ok"}, {"role": "robot"}]}, previous)
    assert caught.value.param == "input[1].role"
    assert responses_to_chat({"model": "m"}, previous)["messages"][-1]["role"] == "assistant"  # no new input: continue


def test_conversation_items_chain_input_and_output():
    first = conversation_items(None, S.RESPONSES_REQUEST_STRING, S.RESPONSE_TEXT)
    assert first == [
        {"type": "message", "role": "user", "content": S.RESPONSES_REQUEST_STRING["input"]},
        S.RESPONSE_TEXT["output"][0],
    ]
    second_request = {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}
    second = conversation_items(first, second_request, {"output": [S.RESPONSE_FUNCTION_CALL_ITEM]})
    assert second == first + second_request["input"] + [S.RESPONSE_FUNCTION_CALL_ITEM]


def _call(kind: str, call_id: object) -> dict:
    return {"type": kind, "call_id": call_id, "name": "f", "arguments": "{}", "input": ""}


def test_a_tool_output_must_answer_a_call_made_before_it():
    previous = conversation_items(None, S.RESPONSES_REQUEST_STRING, {"output": [S.RESPONSE_FUNCTION_CALL_ITEM]})
    earlier = S.RESPONSE_FUNCTION_CALL_ITEM["call_id"]
    answered = [
        ([], [_call("function_call", "a"), _call("custom_tool_call", "b"), _call("tool_search_call", "c")]),
        (previous, []),
    ]
    for before, calls in answered:
        ids = [c["call_id"] for c in calls] or [earlier]
        outputs = [{"type": "function_call_output", "call_id": i, "output": "x"} for i in ids]
        check_tool_outputs(before, calls + outputs)  # each answers a call: no error
    check_tool_outputs(
        [], [_call("tool_search_call", "s"), {"type": "tool_search_output", "call_id": "s", "tools": []}]
    )
    refused = [
        ([], [{"type": "function_call_output", "call_id": "z", "output": "x"}], "function call output with call_id z"),
        ([], [{"type": "custom_tool_call_output", "call_id": "z"}], "custom tool call output with call_id z"),
        # A client tool search's output is a chat tool message too (its found tools aside).
        ([], [{"type": "tool_search_output", "call_id": "z", "tools": []}], "tool search output with call_id z"),
        ([], [{"type": "function_call_output", "call_id": earlier}], f"function call output with call_id {earlier}"),
        ([], [{"type": "function_call_output", "call_id": "a"}, _call("function_call", "a")], "output with call_id a"),
    ]
    for before, items, message in refused:
        with pytest.raises(GatewayError) as caught:
            check_tool_outputs(before, items)
        assert (caught.value.status, caught.value.param, caught.value.code) == (400, "input", None)
        assert caught.value.message.startswith("No tool call found for ") and caught.value.message.endswith(
            f"{message}."
        )
    # What the translation names as malformed is left to it, and never a 500 here.
    check_tool_outputs([], [{"type": ["function_call_output"], "call_id": "z"}, {"type": "function_call_output"}])
    check_tool_outputs([], [{"type": "function_call_output", "call_id": ["z"]}])


def test_a_tool_call_must_be_answered_by_an_output():
    """Wherever the call is (last in `input` too, and in the conversation continued): chat
    would get an assistant `tool_calls` message no tool message answers."""
    previous = conversation_items(None, S.RESPONSES_REQUEST_STRING, {"output": [S.RESPONSE_FUNCTION_CALL_ITEM]})
    earlier = S.RESPONSE_FUNCTION_CALL_ITEM["call_id"]
    user = {"role": "user", "content": "And then?"}

    def output(call_id: str) -> dict:
        return {"type": "function_call_output", "call_id": call_id, "output": "x"}

    calls = [_call("function_call", "a"), _call("function_call", "b")]
    for before, items in [
        ([], [*calls, output("a"), output("b"), user]),  # parallel calls, then their outputs
        ([], [calls[0], output("a"), calls[1], output("b")]),  # one after the other, as Codex sends them
        (previous, [output(earlier), user]),
        ([*previous, output(earlier)], [user]),  # answered in the conversation itself
    ]:
        check_tool_outputs(before, items)
    refused = [
        ([], [user, _call("function_call", "a")], "function call a"),  # the last item
        ([], [_call("function_call", "a"), user], "function call a"),
        ([], [*calls, output("b")], "function call a"),
        ([], [*calls, output("a")], "function call b"),
        ([], [_call("custom_tool_call", "c")], "custom tool call c"),
        ([], [_call("tool_search_call", "s")], "tool search call s"),
        (previous, [user], f"function call {earlier}"),  # a response that ended in a call, continued
        (previous, [], f"function call {earlier}"),
    ]
    for before, items, message in refused:
        with pytest.raises(GatewayError) as caught:
            check_tool_outputs(before, items)
        assert (caught.value.status, caught.value.param, caught.value.code) == (400, "input", None)
        assert caught.value.message == f"No tool output found for {message}."
    # An output answering no call is named first, wherever it is.
    with pytest.raises(GatewayError) as caught:
        check_tool_outputs([], [_call("function_call", "a"), output("z")])
    assert caught.value.message == "No tool call found for function call output with call_id z."


@pytest.mark.parametrize(
    "tool", ["web_search", "web_search_preview", "file_search", "computer_use_preview", "code_interpreter"]
)
def test_built_in_tools_get_a_400_naming_the_tool(tool):
    with pytest.raises(GatewayError) as caught:
        responses_to_chat({**S.RESPONSES_REQUEST_STRING, "tools": [{"type": tool}]})
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, "tools[0].type", "unsupported_tool")
    assert f"'{tool}'" in caught.value.message


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": None}, "model"),
        ({"input": None}, "input"),
        ({"input": 5}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
        # Hostile testing: "tool_choice 'function' is not supported", for a missing name.
        ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
        # Hostile testing: a named tool not in `tools` was forwarded (SGLang answers 500).
        ({"tool_choice": {"type": "function", "name": "get_weather"}}, "tool_choice.name"),
        (
            {
                "tools": [{"type": "function", "name": "a", "parameters": {"type": "object"}}],
                "tool_choice": {"type": "custom", "name": "b"},
            },
            "tool_choice.name",
        ),
    ],
)
def test_malformed_requests_get_a_400_naming_the_field(change, param):
    with pytest.raises(GatewayError) as caught:
        responses_to_chat({**S.RESPONSES_REQUEST_STRING, **change})
    assert (caught.value.status, caught.value.param) == (400, param)


# -- answers ----------------------------------------------------------------------------------


def test_text_completion_becomes_the_recorded_response_shape():
    request = {"model": "gpt-4o-mini-2024-07-18", "input": "hi"}
    completion = copy.deepcopy(S.CHAT_COMPLETION_TEXT)
    completion["choices"][0]["message"]["content"] = "Hello! How can I assist you today?"
    completion["usage"] = {"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19}
    response = chat_to_response(completion, request, S.RESPONSE_TEXT["id"])
    strict(Response, response)
    recorded = S.RESPONSE_TEXT
    assert response["output"] == [{**recorded["output"][0], "id": "msg_" + recorded["id"].removeprefix("resp_")}]
    assert response["usage"] == recorded["usage"]
    for field in ("object", "status", "error", "incomplete_details", "instructions", "max_output_tokens", "model"):
        assert response[field] == recorded[field], field
    for field in (
        "parallel_tool_calls",
        "previous_response_id",
        "store",
        "tool_choice",
        "tools",
        "truncation",
        "metadata",
    ):
        assert response[field] == recorded[field], field
    assert response["text"] == {"format": {"type": "text"}}


def test_tool_calls_become_function_call_items_and_settings_are_echoed():
    response = chat_to_response(S.CHAT_COMPLETION_TOOL_CALLS, S.RESPONSES_REQUEST_ITEMS, "resp_abc")
    strict(Response, response)
    assert response["output"] == [
        {
            "type": "function_call",
            "id": "fc_abc_0",
            "call_id": "call_abc123",
            "name": "get_current_weather",
            "arguments": '{\n"location": "Boston, MA"\n}',
            "status": "completed",
        }
    ]
    request = S.RESPONSES_REQUEST_ITEMS
    assert response["instructions"] == request["instructions"]
    assert response["text"] == request["text"] and response["tools"] == request["tools"]
    assert (response["metadata"], response["max_output_tokens"]) == ({"session": "abc"}, 2048)
    assert (response["parallel_tool_calls"], response["reasoning"]) == (False, {"effort": "low", "summary": None})


def test_reasoning_comes_back_as_a_reasoning_item_first():
    response = chat_to_response(S.CHAT_COMPLETION_REASONING, S.RESPONSES_REQUEST_STRING, "resp_r")
    strict(Response, response)
    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
    assert response["output"][0]["content"] == [
        {"type": "reasoning_text", "text": "9.11 and 9.8: compare the tenths, 1 < 8."}
    ]
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 16


@pytest.mark.parametrize(
    ("finish", "status", "details"),
    [
        ("stop", "completed", None),
        ("tool_calls", "completed", None),
        ("length", "incomplete", {"reason": "max_output_tokens"}),
        ("content_filter", "incomplete", {"reason": "content_filter"}),
    ],
)
def test_status_follows_the_finish_reason(finish, status, details):
    completion = copy.deepcopy(S.CHAT_COMPLETION_TEXT)
    completion["choices"][0]["finish_reason"] = finish
    response = chat_to_response(completion, S.RESPONSES_REQUEST_STRING, "resp_s")
    assert (response["status"], response["incomplete_details"]) == (status, details)
    strict(Response, response)


# -- streams ----------------------------------------------------------------------------------

_EVENTS = TypeAdapter(ResponseStreamEvent)


def _stream(chunks, request=None, response_id="resp_s"):
    translator = ResponseStream(request or S.RESPONSES_REQUEST_STRING, response_id, created_at=1741290958)
    events = [event for chunk in chunks for event in translator.feed(chunk)]
    return events + translator.finish(), translator


def _shape(events):
    """Events without what only a particular upstream decides: ids, the Response payloads,
    and per-part logprobs (the reference's examples show them on some events only)."""
    out = copy.deepcopy(events)
    for event in out:
        event.pop("response", None)
        event.pop("item_id", None)
        item = event.get("item")
        if item:
            item["id"] = ""
            for part in item.get("content") or ():
                part.pop("logprobs", None)
    return out


def test_a_response_says_when_it_completed_and_only_once_it_has():
    """`completed_at` (the openai SDK's `Response.completed_at`): "Unix timestamp (in seconds)
    of when this Response was completed. Only present when the status is `completed`"."""
    chunks = [S.CHAT_STREAM_TEXT[0], S.CHAT_STREAM_TEXT[1], S.CHAT_STREAM_TEXT[4], S.CHAT_STREAM_TEXT[5]]
    before = int(time.time())
    events, _ = _stream(chunks)
    statuses = {e["type"]: e["response"] for e in events if "response" in e}
    assert statuses["response.created"]["completed_at"] is None
    assert statuses["response.in_progress"]["completed_at"] is None
    assert before <= statuses["response.completed"]["completed_at"] <= int(time.time())
    assert Response.model_validate(statuses["response.completed"]).completed_at is not None


def test_text_stream_is_the_references_event_sequence():
    chunks = [
        S.CHAT_STREAM_TEXT[0],
        {**S.CHAT_STREAM_TEXT[1], "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
        {**S.CHAT_STREAM_TEXT[1], "choices": [{"index": 0, "delta": {"content": " there!"}, "finish_reason": None}]},
        S.CHAT_STREAM_TEXT[4],
        {**S.CHAT_STREAM_TEXT[5], "usage": {"prompt_tokens": 37, "completion_tokens": 11, "total_tokens": 48}},
    ]
    events, _ = _stream(chunks)
    assert _shape(events) == _shape(S.RESPONSES_STREAM_TEXT)
    assert events[-1]["response"]["usage"] == S.RESPONSES_STREAM_TEXT[-1]["response"]["usage"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hi there!"


def test_function_call_stream_is_the_references_event_sequence():
    chunks = [
        S.CHAT_STREAM_TOOL_CALLS[0],
        {
            **S.CHAT_STREAM_TOOL_CALLS[1],
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_12345xyz",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        },
        *[
            {
                **S.CHAT_STREAM_TOOL_CALLS[2],
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]},
                        "finish_reason": None,
                    }
                ],
            }
            for a in ('{"location":', '"Paris, France"}')
        ],
        S.CHAT_STREAM_TOOL_CALLS[-1],
        {**S.CHAT_STREAM_TEXT[5], "usage": {"prompt_tokens": 60, "completion_tokens": 18, "total_tokens": 78}},
    ]
    events, _ = _stream(chunks)
    assert _shape(events) == _shape(S.RESPONSES_STREAM_FUNCTION_CALL)
    assert events[-1]["response"]["output"][0]["call_id"] == "call_12345xyz"


@pytest.mark.parametrize(
    "chunks",
    [S.CHAT_STREAM_TEXT, S.CHAT_STREAM_TOOL_CALLS, S.CHAT_STREAM_REASONING],
    ids=["text", "tools", "reasoning"],
)
def test_every_event_parses_and_the_sdk_accumulates_the_same_response(chunks):
    events, translator = _stream(chunks)
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for number, event in enumerate(events):
        assert event["sequence_number"] == number
        strict(ResponseStreamEvent, event)
        state.handle_event(_EVENTS.validate_python(event))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final == translator.response
    # The SDK's own accumulator, fed our deltas, arrives at the same output.
    accumulated = state._completed_response.model_dump(mode="json", exclude_none=True)
    assert accumulated["output"] == strict(Response, final).model_dump(mode="json", exclude_none=True)["output"]


def test_streamed_and_whole_answers_agree():
    events, _ = _stream(S.CHAT_STREAM_TOOL_CALLS + [S.CHAT_STREAM_TEXT[-1]], response_id="resp_same")
    whole = {
        "id": "chatcmpl-123",
        "created": 1741290958,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": S.CHAT_STREAM_TEXT[-1]["usage"],
    }
    assert events[-1]["response"] == chat_to_response(whole, S.RESPONSES_REQUEST_STRING, "resp_same")


def test_length_cut_ends_with_response_incomplete():
    chunks = copy.deepcopy(S.CHAT_STREAM_TEXT)
    chunks[-2]["choices"][0]["finish_reason"] = "length"
    events, _ = _stream(chunks)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    strict(ResponseStreamEvent, events[-1])


def test_error_chunk_ends_the_stream_with_response_failed():
    translator = ResponseStream(S.RESPONSES_REQUEST_STRING, "resp_f", created_at=1)
    events = translator.feed(S.CHAT_STREAM_TEXT[0]) + translator.feed(S.CHAT_STREAM_TEXT[1])
    failed = translator.feed({"error": {"message": "upstream fell over", "type": "upstream_error", "code": 502}})
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert len(failed) == 1 and failed[0]["type"] == "response.failed" and failed[0]["sequence_number"] == 5
    assert failed[0]["response"]["status"] == "failed"
    assert failed[0]["response"]["error"] == {"code": "server_error", "message": "upstream fell over"}
    strict(ResponseStreamEvent, failed[0])
    assert translator.feed(S.CHAT_STREAM_TEXT[2]) == [] and translator.finish() == []


def test_failure_before_any_chunk_still_announces_the_response():
    translator = ResponseStream(S.RESPONSES_REQUEST_STRING, "resp_f", created_at=1)
    events = translator.fail(GatewayError(429, "slow down"))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_stream_without_usage_chunk_completes_on_finish():
    events, _ = _stream(S.CHAT_STREAM_TEXT[:-1])
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["usage"] is None
    strict(ResponseStreamEvent, events[-1])


# -- custom (freeform) tools, as Codex sends apply_patch ----------------------------------------

CODEX_REQUEST = {"model": "gpt-5-codex", "input": "add hello.txt", "tools": [S.CODEX_APPLY_PATCH_TOOL]}
PATCH = S.CUSTOM_TOOL_CALL_ITEM["input"]


def test_custom_tool_becomes_a_function_taking_its_input_as_a_string():
    (tool,) = responses_to_chat(CODEX_REQUEST)["tools"]
    fmt = S.CODEX_APPLY_PATCH_TOOL["format"]
    assert tool == {
        "type": "function",
        "function": {
            "name": "apply_patch",
            "description": S.CODEX_APPLY_PATCH_TOOL["description"]
            + f"\n\nThe input must follow this lark grammar:\n{fmt['definition']}".rstrip(),
            "parameters": {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
                "required": ["input"],
            },
        },
    }
    choice = responses_to_chat({**CODEX_REQUEST, "tool_choice": {"type": "custom", "name": "apply_patch"}})
    assert choice["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}


def test_custom_tool_call_and_output_items_become_a_tool_turn():
    body = {**CODEX_REQUEST, "input": [S.CUSTOM_TOOL_CALL_ITEM, S.CUSTOM_TOOL_CALL_OUTPUT_ITEM]}
    assert responses_to_chat(body)["messages"] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_aGiFQkRWSWAIsMQ19fKqxUgb",
                    "type": "function",
                    "function": {"name": "apply_patch", "arguments": orjson.dumps({"input": PATCH}).decode()},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_aGiFQkRWSWAIsMQ19fKqxUgb",
            "content": S.CUSTOM_TOOL_CALL_OUTPUT_ITEM["output"],
        },
    ]


def _patch_completion(arguments):
    completion = copy.deepcopy(S.CHAT_COMPLETION_TOOL_CALLS)
    call = completion["choices"][0]["message"]["tool_calls"][0]
    call.update(id="call_aGiFQkRWSWAIsMQ19fKqxUgb", function={"name": "apply_patch", "arguments": arguments})
    return completion


@pytest.mark.parametrize("arguments", [orjson.dumps({"input": PATCH}).decode(), PATCH], ids=["wrapped", "bare"])
def test_calls_to_a_custom_tool_come_back_as_custom_tool_call_items(arguments):
    response = chat_to_response(_patch_completion(arguments), CODEX_REQUEST, "resp_6890e975")
    strict(Response, response)
    assert response["output"] == [
        {
            "type": "custom_tool_call",
            "id": "ctc_6890e975_0",
            "call_id": "call_aGiFQkRWSWAIsMQ19fKqxUgb",
            "name": "apply_patch",
            "input": PATCH,
        }
    ]


def test_custom_tool_call_streams_its_input_whole_when_the_call_is_done():
    arguments = orjson.dumps({"input": PATCH}).decode()
    head = {
        "index": 0,
        "id": "call_aGiFQkRWSWAIsMQ19fKqxUgb",
        "type": "function",
        "function": {"name": "apply_patch", "arguments": ""},
    }
    chunks = [
        S.CHAT_STREAM_TOOL_CALLS[0],
        {
            **S.CHAT_STREAM_TOOL_CALLS[1],
            "choices": [{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}],
        },
        *[
            {
                **S.CHAT_STREAM_TOOL_CALLS[2],
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": part}}]},
                        "finish_reason": None,
                    }
                ],
            }
            for part in (arguments[:10], arguments[10:])
        ],
        S.CHAT_STREAM_TOOL_CALLS[-1],
    ]
    events, translator = _stream(chunks, request=CODEX_REQUEST, response_id="resp_6890e975")
    item = {
        "type": "custom_tool_call",
        "id": "ctc_6890e975_0",
        "call_id": "call_aGiFQkRWSWAIsMQ19fKqxUgb",
        "name": "apply_patch",
    }
    assert [{k: v for k, v in e.items() if k != "response"} for e in events[2:-1]] == [
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": {**item, "input": ""}},
        {
            "type": "response.custom_tool_call_input.delta",
            "sequence_number": 3,
            "item_id": "ctc_6890e975_0",
            "output_index": 0,
            "delta": PATCH,
        },
        {
            "type": "response.custom_tool_call_input.done",
            "sequence_number": 4,
            "item_id": "ctc_6890e975_0",
            "output_index": 0,
            "input": PATCH,
        },
        {
            "type": "response.output_item.done",
            "sequence_number": 5,
            "output_index": 0,
            "item": {**item, "input": PATCH},
        },
    ]
    for event in events:
        strict(ResponseStreamEvent, event)
    assert events[-1]["response"] == chat_to_response(_patch_completion(arguments), CODEX_REQUEST, "resp_6890e975") | {
        "created_at": 1741290958,
        "usage": None,
    }


CODEX_NAMESPACE = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Sub-agents.",
    "tools": [
        {"type": "function", "name": "close_agent", "parameters": {"type": "object", "properties": {}}},
        {"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {}}},
    ],
}


def test_namespace_tools_are_flattened_into_their_functions():
    """Codex sends its sub-agent functions inside a `namespace` tool on every request."""
    function = {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}}
    chat = responses_to_chat({**S.RESPONSES_REQUEST_STRING, "tools": [function, CODEX_NAMESPACE]})
    assert [t["function"]["name"] for t in chat["tools"]] == ["shell", "close_agent", "spawn_agent"]


def test_a_bad_tool_inside_a_namespace_is_named_by_its_place():
    namespace = {**CODEX_NAMESPACE, "tools": [{"type": "web_search"}]}
    with pytest.raises(GatewayError) as caught:
        responses_to_chat({**S.RESPONSES_REQUEST_STRING, "tools": [namespace]})
    assert caught.value.param == "tools[0].tools[0].type"


def test_calls_to_a_namespaced_function_carry_the_namespace_whole_and_streamed():
    request = {**S.RESPONSES_REQUEST_STRING, "tools": [CODEX_NAMESPACE]}
    call = {"id": "call_1", "type": "function", "function": {"name": "close_agent", "arguments": "{}"}}
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                               "finish_reason": "tool_calls"}], "usage": None}  # fmt: skip
    item = chat_to_response(completion, request, "resp_1")["output"][0]
    assert (item["type"], item["name"], item["namespace"]) == ("function_call", "close_agent", "multi_agent_v1")
    stream = ResponseStream(request, "resp_2")
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **call}]}, "finish_reason": "tool_calls"}]}
    events = stream.feed(chunk) + stream.finish()
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert done[0]["item"]["namespace"] == "multi_agent_v1"


# Codex with `[agents]` on: a tool search its client runs (Responses reference: `tool_search`
# tool with `execution: "client"`, `tool_search_call` / `tool_search_output` items).
TOOL_SEARCH_TOOL = {
    "type": "tool_search",
    "execution": "client",
    "description": "# Tool discovery\nSearch for more tools.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["query"],
    },
}


def test_a_client_tool_search_is_offered_as_a_function_and_a_hosted_one_is_a_400():
    chat = responses_to_chat({**S.RESPONSES_REQUEST_STRING, "tools": [TOOL_SEARCH_TOOL]})
    function = chat["tools"][0]["function"]
    assert (function["name"], function["parameters"]) == ("tool_search", TOOL_SEARCH_TOOL["parameters"])
    with pytest.raises(GatewayError) as caught:
        responses_to_chat({**S.RESPONSES_REQUEST_STRING, "tools": [{**TOOL_SEARCH_TOOL, "execution": "server"}]})
    assert caught.value.code == "unsupported_tool" and "'tool_search'" in caught.value.message


def test_a_tool_search_call_comes_back_as_its_own_item_whole_and_streamed():
    request = {**S.RESPONSES_REQUEST_STRING, "tools": [TOOL_SEARCH_TOOL]}
    call = {"id": "call_s", "type": "function", "function": {"name": "tool_search", "arguments": '{"query":"git"}'}}
    completion = {"created": 1, "choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                  "tool_calls": [call]}, "finish_reason": "tool_calls"}], "usage": None}  # fmt: skip
    response = chat_to_response(completion, request, "resp_1")
    strict(Response, response)
    item = response["output"][0]
    assert (item["type"], item["call_id"], item["arguments"], item["execution"]) == (
        "tool_search_call",
        "call_s",
        {"query": "git"},
        "client",
    )
    pieces = ['{"que', 'ry":"git"}']
    chunks = [
        S.CHAT_STREAM_TOOL_CALLS[0],
        {
            **S.CHAT_STREAM_TOOL_CALLS[1],
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, **call, "function": {"name": "tool_search", "arguments": ""}}]
                    },
                    "finish_reason": None,
                }
            ],
        },
        *(
            {
                **S.CHAT_STREAM_TOOL_CALLS[2],
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]},
                        "finish_reason": None,
                    }
                ],
            }
            for p in pieces
        ),
        S.CHAT_STREAM_TOOL_CALLS[-1],
    ]
    events, _ = _stream(chunks, request)
    for event in events:
        strict(ResponseStreamEvent, event)
    assert "response.function_call_arguments.delta" not in [e["type"] for e in events]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert done[0]["item"]["type"] == "tool_search_call" and done[0]["item"]["arguments"] == {"query": "git"}


def test_a_tool_search_turn_becomes_a_tool_turn_and_its_tools_become_callable():
    found = {"type": "function", "name": "git_log", "description": "Shows history.", "parameters": {"type": "object"}}
    body = {
        **S.RESPONSES_REQUEST_STRING,
        "tools": [TOOL_SEARCH_TOOL],
        "input": [
            {"type": "message", "role": "user", "content": "What changed?"},
            {"type": "tool_search_call", "call_id": "call_s", "arguments": {"query": "git"}, "execution": "client"},
            {"type": "tool_search_output", "call_id": "call_s", "execution": "client", "tools": [found]},
        ],
    }
    chat = responses_to_chat(body)
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_s", "type": "function", "function": {"name": "tool_search", "arguments": '{"query":"git"}'}}]},
        {"role": "tool", "tool_call_id": "call_s", "content": "Tools now available: git_log."},
    ]  # fmt: skip
    assert [t["function"]["name"] for t in chat["tools"]] == ["tool_search", "git_log"]


def test_the_translated_stream_encodes_the_echoed_tools_and_instructions_once_with_the_same_bytes(monkeypatch):
    import gateway.protocol.responses_answer as responses_module
    import gateway.protocol.responses_stream as stream_module
    import gateway.protocol.translation as translation_module

    request = copy.deepcopy(S.RESPONSES_REQUEST_ITEMS)
    stream = ResponseStream(request, "resp_e", created_at=1)
    events = [e for chunk in S.CHAT_STREAM_TOOL_CALLS for e in stream.feed(copy.deepcopy(chunk))] + stream.finish()
    whole = [e for e in events if "response" in e]
    assert [e["type"] for e in whole] == ["response.created", "response.in_progress", "response.completed"]
    expected = [encode_event(e) for e in events]

    dumped: list[object] = []

    class Counting:
        Fragment = orjson.Fragment

        @staticmethod
        def dumps(value: object) -> bytes:
            dumped.append(value)
            return orjson.dumps(value)

    monkeypatch.setattr(stream_module, "orjson", Counting)
    monkeypatch.setattr(translation_module, "orjson", Counting)
    monkeypatch.setattr(responses_module, "orjson", Counting)  # encoded_echo's
    assert [stream.encode(e) for e in events] == expected  # the same bytes on the wire
    assert [v is request["tools"] for v in dumped].count(True) == 1  # the tools, once for the three
    assert [v == request["instructions"] for v in dumped].count(True) == 1
    carried = [v["response"]["tools"] for v in dumped if isinstance(v, dict) and "response" in v]
    assert len(carried) == 3 and all(isinstance(t, orjson.Fragment) for t in carried)  # never re-encoded
    assert all(e["response"]["tools"] is request["tools"] for e in whole)  # the events themselves untouched


def test_function_tools_translate_as_the_general_path_spells_them():
    """`chat_tools` spells a named function tool itself (the fast path): the same dicts, in
    the same key order, as `chat_tool` gives, and the general path's 400 for a nameless one."""
    from gateway.protocol.responses_tools import chat_tool, chat_tools

    functions = [
        {"type": "function", "name": "a", "description": "d", "parameters": {"type": "object"}, "strict": True},
        {"strict": False, "parameters": {}, "name": "b", "type": "function", "defer_loading": True},
        {"type": "function", "name": "c", "description": None, "strict": None},
        {"type": "function", "name": "d"},
    ]
    tools = [*functions, CODEX_NAMESPACE, {"type": "custom", "name": "apply_patch"}]
    got = chat_tools(tools)
    expected = [chat_tool(t, "x") for t in functions] + [chat_tool(t, "x") for t in CODEX_NAMESPACE["tools"]]
    assert got[:-1] == expected
    assert [list(t["function"]) for t in got[:-1]] == [list(t["function"]) for t in expected]
    assert got[-1]["function"]["name"] == "apply_patch"
    for nameless in ({"type": "function", "name": ""}, {"type": "function", "name": 5}, {"type": "function"}):
        with pytest.raises(GatewayError) as caught:
            chat_tools([functions[0], nameless])
        assert caught.value.param == "tools[1].name"


@pytest.mark.parametrize("chunks", [S.CHAT_STREAM_PARALLEL_CALLS, S.CHAT_STREAM_INTERLEAVED_CALLS])
def test_parallel_tool_calls_keep_every_argument_in_either_order(chunks):
    """Hostile testing: calls whose heads came before their arguments lost the first call's
    arguments (its item was done when the second began, and its later fragments dropped)."""
    events, translator = _stream(chunks)
    for event in events:
        _EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    done = events[-1]["response"]["output"]
    assert [(item["call_id"], orjson.loads(item["arguments"])) for item in done] == S.PARALLEL_CALLS
    assert [i["id"] for i in done] == [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    if chunks is S.CHAT_STREAM_PARALLEL_CALLS:  # one after the other: relayed as they come
        assert deltas == ['{"location":', '"Paris"}', '{"location":', '"Rome"}']
    else:  # the first call live, the second held and written whole once the first is done
        assert deltas == ['{"location":', '"Paris"}', '{"location":"Rome"}']
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    finished = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == finished == [0, 1]


def test_every_output_item_of_a_translated_stream_has_its_own_id():
    """Hostile testing: text, a tool call, then more text gave two message items of one id
    (reasoning between messages, two reasoning items of one id): `item_id` on the deltas
    could not tell them apart."""
    head = {"id": "chatcmpl-ids", "object": "chat.completion.chunk", "created": 1741290958, "model": "m"}

    def chunk(delta, finish=None):
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    chunks = [
        chunk({"role": "assistant", "reasoning_content": "Think."}),
        chunk({"content": "Checking."}),
        chunk({"tool_calls": [call]}),
        chunk({"reasoning_content": "Again."}),
        chunk({"content": "Done."}, "stop"),
        {**head, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}},
    ]
    events, translator = _stream(chunks, response_id="resp_ids")
    for event in events:
        _EVENTS.validate_python(event)
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call", "reasoning", "message"]
    ids = [item["id"] for item in output]
    assert len(set(ids)) == len(ids), ids
    assert ids[0] == "rs_ids" and ids[1] == "msg_ids"  # the first of each kind keeps the usual id
    added = [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["item"]["id"] for e in events if e["type"] == "response.output_item.done"]
    assert added == done == ids
    for event in events:  # each delta names the item it writes to, and that item is the open one
        if "item_id" in event:
            assert event["item_id"] == ids[event["output_index"]]


def _unindexed(chunks):
    """The chunks with every tool call's `index` left out, as some servers send them."""
    out = copy.deepcopy(chunks)
    for chunk in out:
        for choice in chunk.get("choices") or ():
            for call in (choice.get("delta") or {}).get("tool_calls") or ():
                call.pop("index", None)
    return out


def test_tool_calls_without_an_index_are_told_apart_by_their_ids():
    """Hostile testing: two calls without `index` became one function_call with the two
    argument objects end to end (invalid JSON for the client's tool), and the Response said completed."""
    events, _ = _stream(_unindexed(S.CHAT_STREAM_PARALLEL_CALLS))
    for event in events:
        _EVENTS.validate_python(event)
    done = events[-1]["response"]["output"]
    assert [(item["call_id"], orjson.loads(item["arguments"])) for item in done] == S.PARALLEL_CALLS
    assert len({item["id"] for item in done}) == 2


# -- many items in a row --------------------------------------------------------------------------


# Items that join the message before them, and how many make the smaller request: texts are
# copied fast, so only many of them show a square.
_SHORT_ITEMS = {
    "texts": ([{"role": "user", "content": "a"}], 100_000),
    "images": ([{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}], 15_000),
    "reasoned calls": (
        [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t" * 50}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        ],
        10_000,
    ),
}


@pytest.mark.parametrize("kind", list(_SHORT_ITEMS))
def test_many_items_joined_in_one_message_translate_in_linear_time(kind):
    """Hostile testing: each item joined to the message before it (user messages in a row,
    reasoning before parallel calls) copied all the text or parts joined so far, so an 8 MB
    body of such items held the event loop 6 s (texts) to 16 s (images). Four times the
    items must cost about four times the time, not sixteen."""
    items, n = _SHORT_ITEMS[kind]
    small, large = ({"model": "m", "input": items * count} for count in (n, 4 * n))
    (message,) = responses_to_chat(large)["messages"]
    if kind == "texts":
        assert message == {"role": "user", "content": "\n".join(["a"] * 4 * n)}
    elif kind == "images":
        assert message["content"] == [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}] * 4 * n
    else:
        assert message["reasoning_content"] == "\n\n".join(["t" * 50] * 4 * n)
        assert len(message["tool_calls"]) == 4 * n and message["content"] is None
    ratio = cpu_seconds(lambda: responses_to_chat(large)) / cpu_seconds(lambda: responses_to_chat(small))
    assert ratio < 10, f"{ratio:.1f} times the time for 4 times the items"


def _alternating_stream(n: int) -> ResponseStream:
    """A stream whose upstream alternates reasoning and text `n` times: 2n output items."""
    stream = ResponseStream({"model": "m"}, "resp_x", 0)
    for _ in range(n):
        stream.feed({"choices": [{"index": 0, "delta": {"reasoning_content": "r"}}]})
        stream.feed({"choices": [{"index": 0, "delta": {"content": "c"}}]})
    stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return stream


def test_a_stream_of_many_output_items_is_translated_in_linear_time():
    """Hostile testing: each reasoning or message item opened counted the items of its kind
    so far (for its id's number), so an upstream alternating reasoning and text 20,000 times
    held the event loop 25 s. Four times the items must cost about four times the time."""
    output = _alternating_stream(1_000).output
    assert [item["id"] for item in output[:4]] == ["rs_x", "msg_x", "rs_x_2", "msg_x_2"]
    assert (len(output), output[-1]["id"], len({item["id"] for item in output})) == (2_000, "msg_x_1000", 2_000)
    ratio = cpu_seconds(lambda: _alternating_stream(20_000), 3) / cpu_seconds(lambda: _alternating_stream(5_000), 3)
    assert ratio < 10, f"{ratio:.1f} times the time for 4 times the items"


def test_images_tool_outputs_hold_follow_the_tool_messages_as_the_users():
    """Codex's `view_image` answers with an `input_image` part in its function_call_output: it
    was dropped (the tool message got the empty text), so the model never saw the image. Now
    the image follows the run of tool messages (which must follow their calls together) as a
    user message, as the Messages translation does with a tool_result's images; a user
    message right after joins it."""
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    calls = [
        {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": '{"path":"a.png"}'},
        {"type": "function_call", "call_id": "c2", "name": "read", "arguments": '{"path":"b"}'},
    ]
    outputs = [
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "a.png:"}, image]},
        {"type": "function_call_output", "call_id": "c2", "output": "B"},
    ]
    shown = {"type": "image_url", "image_url": {"url": image["image_url"]}}
    chat = responses_to_chat({"model": "m", "input": [{"role": "user", "content": "Look."}, *calls, *outputs]})
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "a.png:"},
        {"role": "tool", "tool_call_id": "c2", "content": "B"},
        {"role": "user", "content": [shown]},
    ]
    asked = {"role": "user", "content": "What is in it?"}
    chat = responses_to_chat({"model": "m", "input": [{"role": "user", "content": "Look."}, *calls, *outputs, asked]})
    assert chat["messages"][-1] == {"role": "user", "content": [shown, {"type": "text", "text": "What is in it?"}]}


# A chat choice's logprobs for "Hi" then " there!" (vLLM's shape; `bytes` may be null).
_CHAT_LOGPROBS = [
    {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.25,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                    {"token": "Hey", "logprob": -1.5},
                ],
            }
        ]
    },
    {"content": [{"token": " there!", "logprob": -0.5, "bytes": None, "top_logprobs": []}, {"token": 7}]},
]
_HI = {
    "token": "Hi",
    "bytes": [72, 105],
    "logprob": -0.25,
    "top_logprobs": [
        {"token": "Hi", "bytes": [72, 105], "logprob": -0.25},
        {"token": "Hey", "bytes": [72, 101, 121], "logprob": -1.5},
    ],
}
_THERE = {"token": " there!", "bytes": list(b" there!"), "logprob": -0.5, "top_logprobs": []}


def test_logprobs_asked_by_include_are_asked_of_the_chat_backend():
    """`include: ["message.output_text.logprobs"]` (with `top_logprobs` alternatives) was
    dropped: the text came back with empty logprobs whatever the client asked."""
    asked = {**S.RESPONSES_REQUEST_STRING, "include": ["message.output_text.logprobs"], "top_logprobs": 2}
    chat = responses_to_chat(asked)
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 2)
    assert responses_fields(asked)["logprobs"] is True  # routing's view asks the same
    plain = responses_to_chat({**S.RESPONSES_REQUEST_STRING, "include": ["message.output_text.logprobs"]})
    assert plain["logprobs"] is True and "top_logprobs" not in plain
    assert not {"logprobs", "top_logprobs"} & set(responses_to_chat({**S.RESPONSES_REQUEST_STRING, "top_logprobs": 2}))


def test_a_chat_answers_logprobs_are_its_output_texts():
    completion = copy.deepcopy(S.CHAT_COMPLETION_TEXT)
    completion["choices"][0]["logprobs"] = {"content": _CHAT_LOGPROBS[0]["content"] + _CHAT_LOGPROBS[1]["content"]}
    response = chat_to_response(completion, S.RESPONSES_REQUEST_STRING, "resp_l")
    assert response["output"][-1]["content"][0]["logprobs"] == [_HI, _THERE]  # the malformed entry left out
    strict(Response, response)


def test_a_chat_streams_logprobs_are_its_text_events():
    chunks = [
        S.CHAT_STREAM_TEXT[0],
        *(
            {
                **S.CHAT_STREAM_TEXT[1],
                "choices": [{"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": None}],
            }
            for text, lp in zip(["Hi", " there!"], _CHAT_LOGPROBS, strict=True)
        ),
        S.CHAT_STREAM_TEXT[4],
        {**S.CHAT_STREAM_TEXT[5], "usage": {"prompt_tokens": 37, "completion_tokens": 11, "total_tokens": 48}},
    ]
    events, _ = _stream(chunks)
    for event in events:
        strict(ResponseStreamEvent, event)
    deltas = [e["logprobs"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == [
        [
            {
                "token": "Hi",
                "logprob": -0.25,
                "top_logprobs": [{"token": "Hi", "logprob": -0.25}, {"token": "Hey", "logprob": -1.5}],
            }
        ],
        [{"token": " there!", "logprob": -0.5, "top_logprobs": []}],
    ]
    (done,) = [e for e in events if e["type"] == "response.output_text.done"]
    assert done["logprobs"] == deltas[0] + deltas[1]
    (part,) = [e["part"] for e in events if e["type"] == "response.content_part.done"]
    assert part["logprobs"] == [_HI, _THERE] == events[-1]["response"]["output"][0]["content"][0]["logprobs"]


def test_listed_input_images_say_their_detail_as_the_sdk_requires():
    """An image sent without `detail` (its default is auto) was listed without one, which the
    SDK's `ResponseInputImage` requires: a pydantic warning on every page it read. Listed
    with `auto`; the stored item stays as sent."""
    from openai.types.responses import ResponseItem

    from gateway.protocol.responses_answer import listed_input_items

    image = {"type": "input_image", "image_url": "https://example.com/cat.png"}
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"}, image]},
        {"type": "function_call_output", "call_id": "call_1", "output": [image]},
        {"role": "user", "content": [{**image, "detail": "low"}]},
    ]
    listed = listed_input_items(items, "resp_abc")
    assert listed[0]["content"][1] == {**image, "detail": "auto"}
    assert listed[1]["output"] == [{**image, "detail": "auto"}]
    assert listed[2]["content"][0]["detail"] == "low"
    assert items[0]["content"][1] == image  # the stored item is not changed
    for item in listed:
        strict(ResponseItem, item)  # a required `detail` missing fails validation
