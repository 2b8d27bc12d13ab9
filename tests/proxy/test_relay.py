"""SseAccountant: bytes forwarded as received, usage read and stripped, early errors caught."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol.redact import Redactor
from gateway.protocol.sse import data_of
from gateway.proxy.outcome import Attempt
from gateway.proxy.relay import (
    END_GRACE_S,
    MAX_MALFORMED_RUN,
    ErrorEventMidway,
    EventsAfterDone,
    MalformedAnswer,
    SseAccountant,
    StreamFailedEarly,
    transient_error,
)
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
    """What the client gets, as the relay hands it on: up to the answer's end ([DONE], after
    which the relay ends the stream), else all of it and the flushed tail."""
    out = []
    for piece in pieces:
        try:
            out.append(accountant.feed(piece))
        except EventsAfterDone:
            return b"".join(out)
    return b"".join(out) + accountant.flush()


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


def test_error_after_content_is_forwarded_to_the_client_in_openai_shape():
    accountant = SseAccountant(strip_usage=True)
    accountant.feed(delta_event({"content": "partial"}))
    error = event({"error": {"message": "broke", "code": 500, "extra": "dropped"}})
    assert accountant.feed(error) == event(
        {"error": {"message": "broke", "type": "upstream_error", "param": None, "code": 500}}
    )


KEY = "sk-live-0123456789abcdefghijklmnopqrstuv"


def test_an_error_event_after_content_is_redacted():
    """Issue 11.9: a mid-stream error event quoting the key reached the client whole."""
    accountant = SseAccountant(strip_usage=True, redactor=Redactor([KEY]))
    accountant.feed(delta_event({"content": "partial"}))
    error = event(
        {"error": {"message": f"auth header was Bearer {KEY}; token={KEY[3:]}", "type": "server_error", "code": "x"}}
    )
    forwarded = accountant.feed(error)
    assert forwarded == event(
        {
            "error": {
                "message": "auth header was Bearer [redacted]; token=[redacted]",
                "type": "server_error",
                "param": None,
                "code": "x",
            }
        }
    )
    assert b"0123456789ab" not in forwarded


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


def test_comments_and_fields_pass_through_and_a_well_formed_tail_is_terminated():
    accountant = SseAccountant(strip_usage=True)
    data = b": ping\n\nretry: 100\n\nevent: x\nid: 1\n\n"
    assert accountant.feed(data + delta_event({"content": "a"}) + b"data: [DONE]\n") == data + delta_event(
        {"content": "a"}
    )
    assert accountant.flush() == b"data: [DONE]\n\n"
    assert accountant.saw_done
    assert accountant.flush() == b""


def test_content_that_looks_like_sse_fields_is_not_counted_as_events():
    accountant = SseAccountant(strip_usage=True)
    accountant.feed(delta_event({"content": "start"}))
    accountant.feed(delta_event({"content": "\n\ndata: {x}\n\ndata: [DONE]"}))
    assert accountant.content_events == 2
    assert not accountant.saw_done


# -- issue 11.8: the usage chunk of an upstream that sends it with an empty choice --------
LITELLM_USAGE_EVENT = event({**BASE, "choices": [{"index": 0, "delta": {}}], "usage": USAGE})


def test_a_usage_chunk_with_an_empty_choice_is_stripped_when_the_client_did_not_ask():
    accountant = SseAccountant(strip_usage=True)
    head = delta_event({"content": "hi"}) + delta_event({}, "stop")
    assert accountant.feed(head + LITELLM_USAGE_EVENT + b"data: [DONE]\n\n") == head + b"data: [DONE]\n\n"
    assert accountant.usage == Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=3)


def test_a_usage_chunk_with_an_empty_choice_is_kept_and_read_when_the_client_asked():
    accountant = SseAccountant(strip_usage=False, hold_done=True)
    head = delta_event({"content": "hi"}) + delta_event({}, "stop")
    assert accountant.feed(head + LITELLM_USAGE_EVENT + b"data: [DONE]\n\n") == (
        head + LITELLM_USAGE_EVENT + b"data: [DONE]\n\n"
    )
    assert accountant.usage.total_tokens == 18 and not accountant.done_held


@pytest.mark.parametrize(
    "choice",
    [
        {"index": 0, "delta": {"content": "last words"}},
        {"index": 0, "delta": {}, "finish_reason": "stop"},
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}},
    ],
)
def test_a_usage_chunk_that_carries_content_is_kept_even_when_usage_is_not_wanted(choice):
    accountant = SseAccountant(strip_usage=True)
    chunk = event({**BASE, "choices": [choice], "usage": USAGE})
    assert accountant.feed(delta_event({"content": "hi"}) + chunk) == delta_event({"content": "hi"}) + chunk


def test_the_opening_role_chunk_carrying_usage_is_kept_when_usage_is_not_wanted():
    """Hostile testing: with vLLM's `continuous_usage_stats` every chunk carries usage, the
    opening role chunk too; a client that had not asked for usage lost that chunk (its
    message's `role`), stripped as if it were the usage chunk. It starts no content."""
    accountant = SseAccountant(strip_usage=True)
    opening = event({**BASE, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": USAGE})
    assert accountant.feed(opening) == opening and not accountant.started
    assert accountant.feed(delta_event({"content": "hi"})) == delta_event({"content": "hi"}) and accountant.started


# -- issue 11.6: malformed upstream output ----------------------------------------------
@pytest.mark.parametrize(
    "garbage",
    [
        b"data: {not json\n\n",
        b"data: [1, 2]\n\n",
        b"this is not sse\n\n",
        b'data: {"choices": [{"delta": {"content": "cut\n\n',
        b"<html>502 Bad Gateway</html>\n\n",
    ],
)
def test_malformed_output_before_content_fails_the_attempt(garbage):
    accountant = SseAccountant(strip_usage=True)
    assert accountant.feed(delta_event({"role": "assistant", "content": ""})) == delta_event(
        {"role": "assistant", "content": ""}
    )
    with pytest.raises(MalformedAnswer) as caught:
        accountant.feed(garbage + delta_event({"content": "late"}))
    assert caught.value.reason == "malformed" and caught.value.retryable
    assert not accountant.started


def test_a_garbage_only_stream_ending_in_done_fails_the_attempt():
    with pytest.raises(MalformedAnswer):
        SseAccountant(strip_usage=False).feed(b"data: garbage\n\ndata: more garbage\n\ndata: [DONE]\n\n")


@pytest.mark.parametrize(
    "garbage",
    [
        b"data: {not json\n\n",
        b'data: {"cut": "of\n\n',
        b"data: not even braces\n\n",
        b"stray text\n\n",
        b"data: 42\n\n",
        b"data: {}\nstray\n\n",
    ],
)
@pytest.mark.parametrize("together", [True, False])
def test_a_malformed_event_after_content_is_dropped_and_counted(garbage, together):
    """Each event reaching the client is a well-formed one; the dropped one is counted on the
    answering attempt (where the metrics observer reads it)."""
    accountant = SseAccountant(strip_usage=True)
    attempt = Attempt("a", "m")
    first = delta_event({"content": "one"})
    assert accountant.feed(first) == first
    accountant.report_to(attempt)
    rest = delta_event({"content": "two"}) + delta_event({}, "stop") + b"data: [DONE]\n\n"
    if together:
        forwarded = accountant.feed(garbage + rest)
    else:
        forwarded = accountant.feed(garbage) + accountant.feed(rest)
    assert forwarded == rest
    assert accountant.malformed_events == 1 and attempt.malformed_events == 1
    assert accountant.flush() == b""


@pytest.mark.parametrize("strip", [True, False])
def test_after_the_first_content_each_event_gets_the_same_check_however_the_stream_is_cut(strip):
    """A short answer often arrives as one chunk, starting before its first content: past
    that content its events get the structural check, as when they arrive one by one (a
    `data: {...}` line passes unparsed; usage and errors are still read)."""
    unparsable = b"data: {this is not json}\n\n"  # well-formed SSE: only a parse would refuse it
    events = [
        delta_event({"role": "assistant", "content": ""}),
        delta_event({"content": "Hello"}),
        unparsable,
        delta_event({"content": " there"}),
        delta_event({}, "stop"),
        USAGE_EVENT,
        b"data: [DONE]\n\n",
    ]
    results = []
    for pieces in ([b"".join(events)], events):
        accountant = SseAccountant(strip_usage=strip)
        forwarded = run(accountant, pieces)
        results.append((forwarded, accountant.content_events, accountant.malformed_events, accountant.usage))
    assert results[0] == results[1]
    forwarded, content_events, malformed, usage = results[0]
    assert forwarded == b"".join(e for e in events if not (strip and e is USAGE_EVENT))
    assert (content_events, malformed) == (5, 0)  # role, two words and the unparsed line, finish
    assert usage == Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=3)


def test_malformed_events_in_a_row_after_content_break_the_stream():
    accountant = SseAccountant(strip_usage=True)
    first = delta_event({"content": "one"})
    garbage = b"data: {garbage\n\n"
    # One short of the limit, then a good event: the run starts again.
    assert accountant.feed(first + garbage * (MAX_MALFORMED_RUN - 1) + first) == first + first
    # The limit reached: what came before it in the same chunk is still delivered...
    assert accountant.feed(first + garbage * MAX_MALFORMED_RUN + first) == first
    assert accountant.malformed_events == 2 * MAX_MALFORMED_RUN - 1
    # ...and the stream ends at the next read, whatever comes.
    with pytest.raises(MalformedAnswer) as caught:
        accountant.feed(first)
    assert caught.value.reason == "malformed"
    with pytest.raises(MalformedAnswer):
        accountant.flush()


def test_a_malformed_tail_is_dropped_and_counted():
    accountant = SseAccountant(strip_usage=True)
    accountant.feed(delta_event({"content": "one"}))
    assert accountant.feed(b'data: {"choices": [{"delta": {"content": "cut') == b""
    assert accountant.flush() == b""
    assert accountant.malformed_events == 1


@settings(max_examples=200, deadline=None)
@given(
    words=WORDS,
    junk=st.lists(st.binary(max_size=30), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=40),
)
def test_only_well_formed_events_reach_the_client_after_content(words, junk, cuts):
    """Whatever junk an upstream mixes in after content (fewer than the limit in a row),
    the client gets the upstream's well-formed events, each one complete, in order."""
    _, good = openai_stream(words)
    head, body = good.split(b"\n\n", 1)
    head += b"\n\n"
    accountant = SseAccountant(strip_usage=True)
    assert accountant.feed(head + delta_event({"content": "first"})) == head + delta_event({"content": "first"})
    # Junk as whole events: a junk piece that is itself well-formed SSE is allowed through.
    junk_events = [j.replace(b"\r", b"").replace(b"\n", b" ") + b"\n\n" for j in junk]
    forwarded = run(accountant, split(b"".join(junk_events) + body, cuts))
    empty = [j for j in junk_events if j == b"\n\n"]  # no event at all: nothing to forward or drop
    wellformed = [j for j in junk_events if j != b"\n\n" and _well_formed(j[:-2])]
    done = next((i for i, j in enumerate(wellformed) if data_of(j[:-2]) == b"[DONE]"), None)
    if done is not None:  # a [DONE] among the junk ends the answer there: nothing after it reaches the client
        assert forwarded == b"".join(wellformed[: done + 1])
        return
    assert forwarded == b"".join(wellformed) + body
    assert accountant.malformed_events == len(junk_events) - len(wellformed) - len(empty)


def _well_formed(event: bytes) -> bool:
    """The test's own reading of a well-formed event: SSE fields only, and data that is a
    JSON object or [DONE]."""
    lines = event.split(b"\n")
    if not all(line.startswith((b":", b"data:", b"event:", b"id:", b"retry:")) for line in lines):
        return False
    data = [line[5:].lstrip() for line in lines if line.startswith(b"data:")]
    if not data:
        return True
    payload = b"\n".join(data)
    if payload == b"[DONE]":
        return True
    try:
        return isinstance(orjson.loads(payload), dict)
    except orjson.JSONDecodeError:
        return False


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 4, 5])
def test_extra_blank_lines_between_events_are_not_malformed(cut):
    """A run of blank lines dispatches nothing in SSE: neither before nor after content
    is it a malformed event, wherever the chunks are cut."""
    accountant = SseAccountant(strip_usage=True)
    role, first, last = delta_event({"role": "assistant"}), delta_event({"content": "a"}), delta_event({}, "stop")
    data = b"\n\n" + role + b"\n" + first + b"\n\n\n" + last + b"\n" + b"data: [DONE]\n\n"
    forwarded = accountant.feed(data[: len(role) + cut]) + accountant.feed(data[len(role) + cut :])
    assert forwarded + accountant.flush() == role + first + last + b"data: [DONE]\n\n"
    assert accountant.malformed_events == 0 and accountant.saw_done


@pytest.mark.parametrize("spacing", [b'"usage" : ', b'"usage"\t:', b'"usage":  '])
@pytest.mark.parametrize("together", [True, False])
def test_usage_is_read_and_stripped_however_its_member_is_spaced(spacing, together):
    # JSON allows whitespace around the colon; an upstream that writes it so must still be
    # billed by its own count, and its usage chunk kept from a client that did not ask.
    first = delta_event({"role": "assistant", "content": "Hi"})
    spaced = orjson.dumps({**BASE, "choices": [], "usage": USAGE}).replace(b'"usage":', spacing)
    usage_event = b"data: " + spaced + b"\n\n"
    pieces = [first + usage_event + b"data: [DONE]\n\n"] if together else [first, usage_event, b"data: [DONE]\n\n"]
    accountant = SseAccountant(strip_usage=True)
    assert run(accountant, pieces) == first + b"data: [DONE]\n\n"
    assert accountant.usage == Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=3)


@pytest.mark.parametrize("strip_usage", [False, True])
def test_an_error_member_that_is_null_is_no_error(strip_usage):
    """A usage chunk with `"error": null` (some servers send every member) is a usage chunk:
    its usage read, relayed or stripped as any, and the stream not failed (review found the
    member's presence alone taken for an error event, failing the call and its backend)."""
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    content = {**head, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
    usage = {**head, "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}
    events = [content, {**usage, "error": None}]
    accountant = SseAccountant(strip_usage=strip_usage)
    out = b"".join(accountant.feed(b"data: " + orjson.dumps(e) + b"\n\n") for e in events)
    out += accountant.feed(b"data: [DONE]\n\n")
    assert accountant.usage == Usage(4, 2) and not accountant.failed_midway
    relayed = [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")]
    assert relayed == ([content] if strip_usage else events)


def _choices_event(finishes: list[str | None]) -> bytes:
    choices = [{"index": i, "delta": {"content": "x"}, "finish_reason": f} for i, f in enumerate(finishes)]
    return event({**BASE, "choices": choices})


@pytest.mark.parametrize("strip", [True, False])
def test_whether_a_broken_stream_had_ended_its_answer(strip):
    """What a break leaves: ended when the usage-only chunk was read (stripped or not, so n>1
    too), or one choice's finish is among the last events handed on, or [DONE] came; else not."""
    # n=2: both choices finish, then the usage chunk (stripped when the client asked none,
    # else held for the answer's end, which the break is).
    ended = SseAccountant(strip_usage=strip, hold_done=not strip)
    relayed = ended.feed(_choices_event([None, None]) + _choices_event(["stop", "stop"]) + USAGE_EVENT)
    usage = b"" if strip else USAGE_EVENT
    assert ended.end_after_break(relayed, single_choice=False) == usage + b"data: [DONE]\n\n"
    # One choice finished, no usage chunk: ended; a client that asked for usage gets the estimate.
    one = SseAccountant(strip_usage=False, hold_done=True)
    relayed = one.feed(delta_event({"content": "a"}) + delta_event({}, "stop") + b": keep-alive\n\n")
    assert one.end_after_break(relayed, single_choice=True) == b"" and one.done_held
    asked_none = SseAccountant(strip_usage=True)
    relayed = asked_none.feed(delta_event({"content": "a"}) + delta_event({}, "stop"))
    assert asked_none.end_after_break(relayed, single_choice=True) == b"data: [DONE]\n\n"
    # Cut short: a finish of one of two choices, or no finish at all.
    two = SseAccountant(strip_usage=strip)
    relayed = two.feed(_choices_event([None, None]) + _choices_event(["stop", None]))
    assert two.end_after_break(relayed, single_choice=False) is None
    cut = SseAccountant(strip_usage=strip)
    assert cut.end_after_break(cut.feed(delta_event({"content": "a"})), single_choice=True) is None


# -- an upstream's error event after content, when the stream could be continued -------------

OVERLOADED = {"message": f"overloaded, key {KEY}", "type": "server_error", "code": 503}
OVERLOADED_RELAYED = {"message": "overloaded, key [redacted]", "type": "server_error", "param": None, "code": 503}


def _holding() -> SseAccountant:
    accountant = SseAccountant(strip_usage=True, redactor=Redactor([KEY]))
    accountant.hold_errors = True  # as the relay sets it when a rescue exists
    accountant.feed(delta_event({"role": "assistant", "content": ""}) + delta_event({"content": "partial"}))
    return accountant


def test_a_passing_error_event_after_content_is_held_back_and_breaks_the_stream():
    accountant = _holding()
    # The events before it go on; the error and what follows it do not.
    assert accountant.feed(delta_event({"content": " more"}) + event({"error": OVERLOADED}) + b"data: [DONE]\n\n") == (
        delta_event({"content": " more"})
    )
    with pytest.raises(ErrorEventMidway) as held:
        accountant.flush()
    assert held.value.event == event({"error": OVERLOADED_RELAYED})  # what the client gets if not continued
    assert held.value.reason == "upstream_error" and held.value.backend_fault
    assert KEY not in held.value.message  # logged: redacted too
    assert not accountant.failed_midway and not accountant.saw_done


def test_a_held_error_alone_in_a_chunk_breaks_the_stream_at_once():
    accountant = _holding()
    with pytest.raises(ErrorEventMidway):
        accountant.feed(event({"error": OVERLOADED}))


def test_openrouters_mid_stream_error_beside_a_choice_is_an_error_event():
    """OpenRouter's shape: the error beside a choice finished "error" (it was relayed as a
    content chunk, its text unredacted, and the stream counted as a success)."""
    chunk = event({**BASE, "error": {"code": "server_error", "message": f"lost {KEY}"},
                   "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})  # fmt: skip
    held = _holding()
    with pytest.raises(ErrorEventMidway):
        held.feed(chunk)
    relayed = SseAccountant(strip_usage=True, redactor=Redactor([KEY]))
    relayed.feed(delta_event({"content": "partial"}))
    assert relayed.feed(chunk) == event(
        {"error": {"message": "lost [redacted]", "type": "upstream_error", "param": None, "code": "server_error"}}
    )
    assert relayed.failed_midway
    with pytest.raises(StreamFailedEarly):
        SseAccountant(strip_usage=True).feed(chunk)  # before content: the next candidate is tried


@pytest.mark.parametrize(
    "error",
    [
        {"message": "bad tool schema", "type": "invalid_request_error", "code": 400},
        {"message": "flagged", "type": "invalid_request_error", "code": "content_policy_violation"},
        {"message": "no type at all"},
    ],
)
def test_an_error_event_that_is_not_a_passing_failure_is_relayed_even_when_holding(error):
    accountant = _holding()
    out = accountant.feed(event({"error": error}))
    assert orjson.loads(out[6:])["error"]["message"] == error["message"]
    assert accountant.failed_midway


@pytest.mark.parametrize(
    ("status", "kinds", "passing"),
    [
        (503, (), True),
        (529, ("overloaded_error",), True),
        (429, (), True),
        (408, (), True),
        (400, ("server_error",), False),  # the status decides when there is one
        (None, ("overloaded_error",), True),
        (None, ("api_error",), True),
        (None, (None, "server_error"), True),
        (None, ("rate_limit_exceeded",), True),
        (None, ("invalid_request_error",), False),
        (None, ("content_policy_violation",), False),
        (None, ("billing_error",), False),
        (None, (), False),
        (True, (), False),  # a bool is no status
    ],
)
def test_which_error_events_are_passing_failures(status, kinds, passing):
    assert transient_error(status, *kinds) is passing


def test_nothing_after_done_is_handed_on_but_an_empty_read_is_no_event():
    """After [DONE] the answer is over: a further event ends the relay (`EventsAfterDone`),
    while an empty read or a stray blank line is no event at all (hypothesis found the
    relay's own property tests raising on the empty read a cut at the end gives)."""
    accountant = SseAccountant(strip_usage=False)
    assert (
        accountant.feed(delta_event({"content": "hi"}) + b"data: [DONE]\n\n")
        == delta_event({"content": "hi"}) + b"data: [DONE]\n\n"
    )
    assert accountant.feed(b"") == b"" and accountant.feed(b"\n") == b""
    with pytest.raises(EventsAfterDone):
        accountant.feed(b": keep-alive\n\n")
    assert accountant.flush() == b"" and accountant.saw_done


# -- an upstream that sends its usage chunk more than once -------------------------------------

FIRST_COUNT = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


@pytest.mark.parametrize(
    "first",
    [
        USAGE_EVENT,  # the same chunk, repeated
        event({**BASE, "choices": [], "usage": FIRST_COUNT}),  # an earlier count, then the final one
        event({**BASE, "choices": [{"index": 0, "delta": {}}], "usage": FIRST_COUNT}),  # LiteLLM's empty choice
    ],
    ids=["repeated", "recounted", "empty-choice"],
)
@pytest.mark.parametrize("together", [True, False], ids=["one-read", "read-by-read"])
def test_a_usage_chunk_sent_twice_reaches_the_client_once_with_the_counts_billed(first, together):
    """OpenAI sends one usage chunk, before `[DONE]`; clients that add up what they read (the
    usage of every chunk) counted an upstream's repeated one twice. The client gets one, the
    last (the counts the ledger bills), just before `[DONE]`."""
    head = delta_event({"role": "assistant", "content": ""}) + delta_event({"content": "hi"})
    answer = [head, delta_event({}, "stop"), first, USAGE_EVENT, b"data: [DONE]\n\n"]
    accountant = SseAccountant(strip_usage=False, hold_done=True)
    out = run(accountant, [b"".join(answer)] if together else answer)
    assert out == head + delta_event({}, "stop") + USAGE_EVENT + b"data: [DONE]\n\n"
    assert accountant.usage == Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=3)
    assert not accountant.done_held
    # Not asked for: none reaches the client, and the last counts are still the ones read.
    stripping = SseAccountant(strip_usage=True)
    assert run(stripping, answer) == head + delta_event({}, "stop") + b"data: [DONE]\n\n"
    assert stripping.usage == accountant.usage


def test_a_usage_chunk_held_for_the_end_completes_a_stream_that_broke_after_it():
    """The usage chunk goes out at the answer's end: a stream that broke after it (before its
    `[DONE]`) still ends with it, then the `[DONE]` the gateway sends."""
    accountant = SseAccountant(strip_usage=False, hold_done=True)
    relayed = accountant.feed(delta_event({"content": "hi"}) + delta_event({}, "stop") + USAGE_EVENT + USAGE_EVENT)
    assert relayed == delta_event({"content": "hi"}) + delta_event({}, "stop")
    assert accountant.end_after_break(relayed, single_choice=True) == USAGE_EVENT + b"data: [DONE]\n\n"
    assert accountant.end_after_break(relayed, single_choice=True) == b"data: [DONE]\n\n"  # once


class _Upstream:
    """What the accountant reads of the answer it is fed: whether its body ended, and the
    idle limit it is given."""

    exhausted = False

    def __init__(self) -> None:
        self.idle_limits: list[float] = []

    def stream_started(self, idle_s: float) -> None:
        self.idle_limits.append(idle_s)


@pytest.mark.parametrize("together", [True, False], ids=["one-read", "read-by-read"])
def test_an_error_event_after_content_ends_the_answer_as_done_does(together):
    """The relayed error event is the stream's end: what the upstream sends after it (its
    `[DONE]`, more content) is dropped, and it has `END_GRACE_S` to end its body, so one that
    holds it open does not hold the client for its idle limit."""
    accountant = SseAccountant(strip_usage=False, hold_done=True)
    upstream = _Upstream()
    accountant.upstream = upstream  # type: ignore[assignment]
    error = event({"error": {"message": "bad tool schema", "type": "invalid_request_error", "code": 400}})
    after = [delta_event({"content": "AFTER"}), b"data: [DONE]\n\n"]
    pieces = [delta_event({"content": "hi"}), error, *after]
    out = run(accountant, [b"".join(pieces)] if together else pieces)
    relayed = {"message": "bad tool schema", "type": "invalid_request_error", "param": None, "code": 400}
    assert out == delta_event({"content": "hi"}) + event({"error": relayed})
    assert accountant.failed_midway and accountant.saw_done and not accountant.done_held
    assert upstream.idle_limits == [END_GRACE_S]
    assert accountant.end_after_break(out, single_choice=True) == b""  # nothing added after it
