"""SseAccountant: bytes forwarded as received, usage read and stripped, early errors caught."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.relay import SseAccountant, StreamFailedEarly
from gateway.proxy.usage import Usage

BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 3}}


def event(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def delta_event(delta: dict, finish: str | None = None) -> bytes:
    return event({**BASE, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


USAGE_EVENT = event({**BASE, "choices": [], "usage": USAGE})


def openai_stream(words: list[str], keepalive: bool = False) -> tuple[bytes, bytes]:
    """A stream as OpenAI sends it with include_usage; and the same without the usage chunk."""
    head = delta_event({"role": "assistant", "content": ""})
    if keepalive:
        head += b": keep-alive\n\n"
    body = b"".join(delta_event({"content": w}) for w in words) + delta_event({}, "stop")
    return head + body + USAGE_EVENT + b"data: [DONE]\n\n", head + body + b"data: [DONE]\n\n"


def run(accountant: SseAccountant, pieces: list[bytes]) -> bytes:
    return b"".join(accountant.feed(p) for p in pieces) + accountant.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


# Words that look like what the accountant searches for, to tempt its fast path.
WORDS = st.lists(
    st.one_of(
        st.text(max_size=12), st.sampled_from(['"usage"', "usage", '"error"', "data: {", "[DONE]", "\n\n", "\r\n"])
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    words=WORDS,
    cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=40),
    strip=st.booleans(),
    crlf=st.booleans(),
    keepalive=st.booleans(),
)
def test_forwarded_bytes_are_the_input_minus_the_stripped_usage_chunk(words, cuts, strip, crlf, keepalive):
    with_usage, without_usage = openai_stream(words, keepalive)
    sent = with_usage.replace(b"\n", b"\r\n") if crlf else with_usage
    accountant = SseAccountant(strip_usage=strip)
    forwarded = run(accountant, split(sent, cuts))
    # Line endings are normalised to \n (SSE allows both); nothing else changes.
    assert forwarded == (without_usage if strip else with_usage)
    assert accountant.usage == Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=3)
    assert accountant.saw_done
    assert accountant.content_events == len(words) + 2  # role chunk, words, finish chunk


def test_usage_inside_a_content_chunk_is_read_and_kept():
    chunk = event({**BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": USAGE})
    accountant = SseAccountant(strip_usage=True)
    assert accountant.feed(delta_event({"content": "hi"}) + chunk) == delta_event({"content": "hi"}) + chunk
    assert accountant.usage.prompt_tokens == 11


def test_error_before_content_fails_early_with_its_status():
    accountant = SseAccountant(strip_usage=True)
    accountant.feed(delta_event({"role": "assistant", "content": ""}))
    assert not accountant.started
    error = event({"error": {"message": "overloaded", "type": "server_error", "code": 529}})
    with pytest.raises(StreamFailedEarly) as caught:
        accountant.feed(error[:15])
        accountant.feed(error[15:])
    assert str(caught.value) == "overloaded" and caught.value.status == 529


def test_error_with_a_string_code_has_no_status():
    with pytest.raises(StreamFailedEarly) as caught:
        SseAccountant(strip_usage=False).feed(event({"error": {"message": "nope", "code": "server_error"}}))
    assert caught.value.status is None


def test_error_after_content_is_forwarded_to_the_client():
    accountant = SseAccountant(strip_usage=True)
    accountant.feed(delta_event({"content": "partial"}))
    error = event({"error": {"message": "broke", "code": 500}})
    assert accountant.feed(error) == error


@pytest.mark.parametrize(
    ("delta", "finish", "started"),
    [
        ({"role": "assistant", "content": ""}, None, False),
        ({"content": "x"}, None, True),
        ({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}, None, True),
        ({"reasoning_content": "hmm"}, None, True),
        ({"reasoning": "hmm"}, None, True),
        ({}, "stop", True),
    ],
)
def test_what_counts_as_content(delta, finish, started):
    accountant = SseAccountant(strip_usage=False)
    accountant.feed(delta_event(delta, finish))
    assert accountant.started is started
    assert (accountant.first_content_at is not None) is started


def test_comments_and_non_json_pass_through_and_tail_is_flushed():
    accountant = SseAccountant(strip_usage=True)
    data = b": ping\n\nretry: 100\n\ndata: not json\n\n"
    assert accountant.feed(data + b'data: {"unterminated"') == data
    assert accountant.flush() == b'data: {"unterminated"'
    assert accountant.flush() == b""


def test_content_that_looks_like_sse_fields_is_not_counted_as_events():
    accountant = SseAccountant(strip_usage=True)
    accountant.feed(delta_event({"content": "start"}))
    accountant.feed(delta_event({"content": "\n\ndata: {x}\n\ndata: [DONE]"}))
    assert accountant.content_events == 2
    assert not accountant.saw_done
