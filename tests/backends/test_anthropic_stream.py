"""Messages API SSE -> OpenAI chunk SSE, event by event and across any chunk boundaries."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backends.anthropic_stream import StreamTranslator
from gateway.backends.errors import MalformedAnswer
from tests.backends.anthropic_samples import anthropic_stream, chunks_of, sse


def test_stream_translation():
    chunks = chunks_of(StreamTranslator(include_usage=True, created=1).feed(anthropic_stream()))
    assert {(c["id"], c["object"], c["model"], c["created"]) for c in chunks} == {
        ("msg_s", "chat.completion.chunk", "claude-x", 1)
    }
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        # The thinking also as OpenRouter's reasoning_details, pieces by index, then its signature.
        {
            "reasoning_content": "Hmm.",
            "reasoning_details": [
                {"type": "reasoning.text", "text": "Hmm.", "index": 0, "format": "anthropic-claude-v1"}
            ],
        },
        {"reasoning_details": [{"type": "reasoning.text", "signature": "abc", "index": 0}]},  # format: first piece only
        {"content": "Héllo"},
        {"content": " there"},
        {"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
        {"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "g", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 10 + ["tool_calls"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 24,
        "completion_tokens": 15,
        "total_tokens": 39,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_stream_without_include_usage_ends_without_usage_chunk():
    chunks = chunks_of(StreamTranslator(include_usage=False).feed(anthropic_stream("end_turn")))
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30), crlf=st.booleans())
def test_stream_translation_does_not_depend_on_chunk_boundaries(cuts, crlf):
    data = anthropic_stream()
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    expected = StreamTranslator(include_usage=True, created=1).feed(anthropic_stream())
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    translator = StreamTranslator(include_usage=True, created=1)
    output = b"".join(translator.feed(piece) for piece in pieces) + translator.finish()
    assert output == expected


def test_error_event_becomes_an_openai_error_event():
    start = sse(
        "message_start", {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 3}}}
    )
    error = sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    out = StreamTranslator(include_usage=True).feed(start + error)
    events = [e for e in out.split(b"\n\n") if e]
    assert orjson.loads(events[-1][6:]) == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": 529}
    }
    assert b"[DONE]" not in out


def test_stream_cut_after_message_delta_still_ends_cleanly():
    data = anthropic_stream("end_turn")
    truncated = data[: data.index(b"event: message_stop")]
    translator = StreamTranslator(include_usage=True)
    out = translator.feed(truncated) + translator.finish()
    assert out.endswith(b"data: [DONE]\n\n") and chunks_of(out)[-1]["usage"]["completion_tokens"] == 15


def test_stream_cut_before_any_finish_is_not_dressed_up_as_complete():
    data = anthropic_stream()
    translator = StreamTranslator(include_usage=True)
    out = translator.feed(data[: data.index(b"event: message_delta")]) + translator.finish()
    assert b"[DONE]" not in out and b'finish_reason":"' not in out


def test_unknown_events_and_junk_are_ignored():
    junk = b': comment\n\nevent: future_event\ndata: {"type":"future_event"}\n\ndata: not json\n\n'
    assert StreamTranslator(include_usage=True).feed(junk) == b""


@pytest.mark.parametrize(
    "event",
    [
        sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": "x"}),
        sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": ["text"]}),
        sse("message_start", {"type": "message_start", "message": {"usage": "x"}}),
    ],
    ids=["delta", "content-block", "usage"],
)
def test_an_event_whose_members_are_not_objects_is_a_malformed_answer(event):
    """The backend's malformed stream (`malformed`: before content the next candidate is
    asked), not a Python exception the fallback loop can only call `protocol`."""
    with pytest.raises(MalformedAnswer):
        StreamTranslator(include_usage=True).feed(event)
    translator = StreamTranslator(include_usage=True)
    translator.feed(event[:-2])  # unterminated: read at the end
    with pytest.raises(MalformedAnswer):
        translator.finish()


def test_reasoning_details_survive_the_openai_sdks_stream_helper_and_come_back_signed():
    """The openai SDK's `chat.completions.stream()` joins a string field repeated across a
    list item's pieces: `format` on every piece came back "anthropic-claude-v1anthropic-...",
    and the signed thinking was not recognised on the next turn."""
    from openai.lib.streaming._deltas import accumulate_delta

    from gateway.backends.anthropic_translate import to_messages_request

    events = [
        {"type": "message_start", "message": {"id": "m", "model": "claude-x", "usage": {}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Need "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "f."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-1"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_stop"},
    ]
    chunks = chunks_of(StreamTranslator(include_usage=False).feed(b"".join(sse(e["type"], e) for e in events)))
    kept: dict = {}
    for chunk in chunks:
        accumulate_delta(kept, chunk["choices"][0]["delta"])
    assert kept["reasoning_details"] == [
        {"type": "reasoning.text", "text": "Need f.", "index": 0, "format": "anthropic-claude-v1", "signature": "sig-1"}
    ]
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call],
        "reasoning_details": kept["reasoning_details"],
    }
    turns = [{"role": "user", "content": "Go."}, message, {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    body = to_messages_request({"model": "claude-x", "messages": turns})
    assert body["messages"][1]["content"][0] == {"type": "thinking", "thinking": "Need f.", "signature": "sig-1"}
    # A client that kept `format` on every piece and joined them: still Claude's.
    joined = [{**kept["reasoning_details"][0], "format": "anthropic-claude-v1" * 3}]
    body = to_messages_request(
        {"model": "claude-x", "messages": [turns[0], {**message, "reasoning_details": joined}, turns[2]]}
    )
    assert body["messages"][1]["content"][0]["signature"] == "sig-1"


def test_a_message_delta_with_null_input_counts_keeps_the_message_start_counts():
    # The SDK types message_delta's input and cache counts `int | None`: a null one says
    # nothing new, it does not zero the prompt message_start counted.
    start = {"id": "msg_n", "model": "claude-x", "usage": {"input_tokens": 20, "cache_read_input_tokens": 4}}
    nulls = {"input_tokens": None, "cache_read_input_tokens": None, "cache_creation_input_tokens": None}
    data = sse("message_start", {"type": "message_start", "message": start}) + sse(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {**nulls, "output_tokens": 3}},
    )
    data += sse("message_stop", {"type": "message_stop"})
    chunks = chunks_of(StreamTranslator(include_usage=True, created=1).feed(data))
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 24,
        "completion_tokens": 3,
        "total_tokens": 27,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
