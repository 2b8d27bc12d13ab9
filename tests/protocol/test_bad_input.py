"""Whatever a client or a backend sends, the translations answer in the API's own shape: a
malformed request is a 400 naming the field, a malformed backend answer a 502, and a
malformed chunk ends a stream with the API's error event. No other exception escapes.

Each sample is taken apart: every field in turn is replaced by each value of the wrong kind.
"""

from __future__ import annotations

import anthropic.types as A
import pytest
from openai.types.responses import ResponseStreamEvent

from gateway.protocol.errors import GatewayError
from gateway.protocol.messages import messages_to_chat
from gateway.protocol.messages_answer import chat_to_message, untranslatable
from gateway.protocol.messages_stream import MessageStream
from gateway.protocol.responses import responses_to_chat
from gateway.protocol.responses_answer import chat_to_response
from gateway.protocol.responses_stream import ResponseStream
from tests.protocol import samples as S
from tests.protocol.breakage import variants as _variants
from tests.protocol.sdk import strict

MESSAGES_REQUESTS = [
    S.MESSAGES_REQUEST,
    {
        **S.MESSAGES_REQUEST_MINIMAL,
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {}}},
    },
    {**S.MESSAGES_REQUEST_MINIMAL, "system": "s", "tool_choice": {"type": "tool", "name": "t"}},
    {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [
                            {"type": "text", "text": "x"},
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                        ],
                    },
                ],
            }
        ],
    },
]
RESPONSES_REQUESTS = [
    S.RESPONSES_REQUEST_ITEMS,
    {
        "model": "m",
        "input": [S.CUSTOM_TOOL_CALL_ITEM, S.CUSTOM_TOOL_CALL_OUTPUT_ITEM],
        "tools": [S.CODEX_APPLY_PATCH_TOOL],
    },
]


@pytest.mark.parametrize(
    ("translate", "samples"),
    [(messages_to_chat, MESSAGES_REQUESTS), (responses_to_chat, RESPONSES_REQUESTS)],
    ids=["messages", "responses"],
)
def test_malformed_requests_are_400s(translate, samples):
    outcomes = {"translated": 0, "refused": 0}
    for sample in samples:
        for path, wrong, broken in _variants(sample):
            try:
                translate(broken)
            except GatewayError as error:
                assert (error.status, error.type) == (400, "invalid_request_error"), (path, wrong)
                assert error.param, (path, wrong)
                outcomes["refused"] += 1
            else:
                outcomes["translated"] += 1
    assert outcomes["refused"] > 0 and outcomes["translated"] > 0  # the loop saw both kinds of case


ANSWERS = [S.CHAT_COMPLETION_TEXT, S.CHAT_COMPLETION_TOOL_CALLS, S.CHAT_COMPLETION_REASONING]


@pytest.mark.parametrize(
    "translate",
    [
        lambda completion: chat_to_message(completion, "m"),
        lambda completion: chat_to_response(completion, S.RESPONSES_REQUEST_ITEMS, "resp_x"),
    ],
    ids=["message", "response"],
)
def test_malformed_backend_answers_are_502s(translate):
    refused = 0
    for sample in ANSWERS:
        for path, wrong, broken in _variants(sample):
            try:
                translate(broken)
            except GatewayError as error:
                assert error.status == 502, (path, wrong)
                assert "not a valid chat completion" in error.message or "arguments" in error.message
                refused += 1
    with pytest.raises(GatewayError, match="not a valid chat completion"):
        translate(["not", "an", "object"])
    assert refused > 0


@pytest.mark.parametrize(
    "translate, check",
    [
        (lambda completion: chat_to_message(completion, "m"), lambda c: untranslatable(c, object_arguments=True)),
        (lambda completion: chat_to_response(completion, S.RESPONSES_REQUEST_ITEMS, "resp_x"), untranslatable),
    ],
    ids=["message", "response"],
)
def test_every_answer_a_translation_refuses_is_caught_before_it_is_accepted(translate, check):
    """The fallback loop checks a translated call's answer with `untranslatable`
    (`TranslatedChatFormat`) before accepting it; an answer that passed and then failed its
    translation was a 502 the key was billed for, with no other candidate asked."""
    refused = 0
    for sample in ANSWERS:
        for path, wrong, broken in _variants(sample):
            if not isinstance(broken, dict) or not isinstance(broken.get("choices"), list):
                continue  # not a chat completion at all: the loop's chat check refuses it
            try:
                translate(broken)
            except GatewayError:
                assert check(broken) is not None, (path, wrong)
                refused += 1
    assert refused > 0


CHUNKS = [S.CHAT_STREAM_TEXT[1], S.CHAT_STREAM_TOOL_CALLS[1], S.CHAT_STREAM_REASONING[1], S.CHAT_STREAM_TEXT[-1]]


def test_a_malformed_chunk_ends_a_messages_stream_with_an_error_event():
    ended = 0
    for sample in CHUNKS:
        for path, wrong, broken in _variants(sample):
            translator = MessageStream("m")
            events = translator.feed(S.CHAT_STREAM_TEXT[0]) + translator.feed(broken) + translator.finish()
            if events[-1]["type"] == "error":
                assert events[-1]["error"]["type"] == "api_error", (path, wrong)
                assert "Error" not in events[-1]["error"]["message"], (path, wrong)  # no Python exception
                assert translator.malformed, (path, wrong)  # the relay accounts it as the upstream's
                strict(A.ErrorResponse, events[-1])
                assert translator.feed(S.CHAT_STREAM_TEXT[1]) == []
                ended += 1
            else:
                assert events[-1]["type"] == "message_stop", (path, wrong)
    assert ended > 0


def test_a_malformed_chunk_ends_a_responses_stream_with_response_failed():
    ended = 0
    for sample in CHUNKS:
        for path, wrong, broken in _variants(sample):
            translator = ResponseStream({"model": "m"}, "resp_x", created_at=1)
            events = translator.feed(S.CHAT_STREAM_TEXT[0]) + translator.feed(broken) + translator.finish()
            assert [e["sequence_number"] for e in events] == list(range(len(events))), (path, wrong)
            if events[-1]["type"] == "response.failed":
                assert events[-1]["response"]["error"]["code"] == "server_error"
                assert "Error" not in events[-1]["response"]["error"]["message"], (path, wrong)
                assert translator.malformed, (path, wrong)
                strict(ResponseStreamEvent, events[-1])
                ended += 1
            else:
                assert events[-1]["type"] == "response.completed", (path, wrong)
    assert ended > 0
