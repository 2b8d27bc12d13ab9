"""The recorded samples are what the SDKs parse, field for field: none is invented or misspelt."""

from __future__ import annotations

import anthropic.types as A
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import (
    Response,
    ResponseCreateParams,
    ResponseCustomToolCall,
    ResponseFunctionToolCall,
    ResponseStreamEvent,
)

from tests.protocol import samples as S
from tests.protocol.sdk import request, strict


def test_messages_requests_are_typed_by_the_anthropic_sdk():
    request(A.MessageCreateParams, S.MESSAGES_REQUEST, tolerated=("temperature", "top_p", "top_k"))
    request(A.MessageCreateParams, S.MESSAGES_REQUEST_MINIMAL)


@pytest.mark.parametrize("message", [S.MESSAGE_TEXT, S.MESSAGE_TOOL_USE, S.MESSAGE_THINKING])
def test_messages_parse_as_anthropic_messages(message):
    assert strict(A.Message, message).id == message["id"]


@pytest.mark.parametrize("stream", [S.ANTHROPIC_STREAM_TEXT, S.ANTHROPIC_STREAM_TOOL_USE, S.ANTHROPIC_STREAM_THINKING])
def test_anthropic_streams_parse_event_by_event(stream):
    events = [e for e in stream if e["type"] != "ping"]  # ping is not in the SDK's event union
    assert [strict(A.RawMessageStreamEvent, e).type for e in events] == [e["type"] for e in events]
    assert stream[0]["type"] == "message_start" and stream[-1]["type"] == "message_stop"


def test_anthropic_errors_parse():
    assert strict(A.ErrorResponse, S.ANTHROPIC_ERROR).error.type == "not_found_error"
    assert strict(A.ErrorResponse, S.ANTHROPIC_STREAM_ERROR).error.type == "overloaded_error"


@pytest.mark.parametrize("completion", [S.CHAT_COMPLETION_TEXT, S.CHAT_COMPLETION_TOOL_CALLS])
def test_chat_completions_parse(completion):
    strict(ChatCompletion, completion)


def test_vllm_reasoning_completion_carries_only_vllm_extras():
    message = ChatCompletion.model_validate(S.CHAT_COMPLETION_REASONING).choices[0].message
    assert message.model_extra == {"reasoning_content": "9.11 and 9.8: compare the tenths, 1 < 8."}


@pytest.mark.parametrize("stream", [S.CHAT_STREAM_TEXT, S.CHAT_STREAM_TOOL_CALLS])
def test_chat_streams_parse(stream):
    for chunk in stream:
        strict(ChatCompletionChunk, chunk)


def test_responses_requests_are_typed_by_the_openai_sdk():
    request(ResponseCreateParams, S.RESPONSES_REQUEST_STRING)
    request(ResponseCreateParams, S.RESPONSES_REQUEST_ITEMS)


def test_response_objects_parse():
    strict(Response, S.RESPONSE_TEXT)
    strict(ResponseFunctionToolCall, S.RESPONSE_FUNCTION_CALL_ITEM)
    strict(ResponseCustomToolCall, S.CUSTOM_TOOL_CALL_ITEM)


def test_codex_custom_tool_items_are_typed_by_the_openai_sdk():
    body = {
        "model": "gpt-5-codex",
        "input": [S.CUSTOM_TOOL_CALL_ITEM, S.CUSTOM_TOOL_CALL_OUTPUT_ITEM],
        "tools": [S.CODEX_APPLY_PATCH_TOOL],
    }
    request(ResponseCreateParams, body)


@pytest.mark.parametrize("stream", [S.RESPONSES_STREAM_TEXT, S.RESPONSES_STREAM_FUNCTION_CALL, [S.RESPONSES_FAILED]])
def test_responses_streams_parse(stream):
    assert [strict(ResponseStreamEvent, e).type for e in stream] == [e["type"] for e in stream]
    numbers = [e["sequence_number"] for e in stream]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_the_strict_check_fails_on_an_invented_field():
    invented = {**S.MESSAGE_TEXT, "content": [{"type": "text", "text": "x", "colour": "red"}]}
    with pytest.raises(AssertionError, match=r"\$\.content\[0\]\.colour"):
        strict(A.Message, invented)
