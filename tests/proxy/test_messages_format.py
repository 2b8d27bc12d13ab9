"""Reading Anthropic Messages answers passed through natively (`gateway.proxy.messages_format`),
against recorded streams and bodies from Anthropic's references (`tests/protocol/samples.py`)."""

from __future__ import annotations

import orjson
import pytest

from gateway.config.schema import ModelOffer
from gateway.config.snapshot import Offer
from gateway.protocol.redact import Redactor
from gateway.proxy.messages_format import MESSAGES, MessagesAccountant, usage_from_anthropic
from gateway.proxy.outcome import Attempt
from gateway.proxy.relay import MAX_MALFORMED_RUN, ErrorEventMidway, MalformedAnswer, StreamFailedEarly
from gateway.proxy.usage import Usage
from tests.protocol import samples as S

OFFER = Offer("anthropic/claude-sonnet-4.5", "claude", "claude-sonnet-4-5", ModelOffer())
SECRET = "sk-ant-secret-0123456789abcdef"


def wire(events: list[dict]) -> bytes:
    """A stream as Anthropic sends it: each event named on its `event:` line."""
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def relay(data: bytes, step: int = 7, accountant: MessagesAccountant | None = None) -> tuple[bytes, MessagesAccountant]:
    accountant = accountant or MessagesAccountant()
    out = [accountant.feed(data[i : i + step]) for i in range(0, len(data), step)]
    return b"".join(out) + accountant.flush(), accountant


@pytest.mark.parametrize(
    ("sample", "usage"),
    [
        (S.ANTHROPIC_STREAM_TEXT, Usage(11, 6)),
        (S.ANTHROPIC_STREAM_TOOL_USE, Usage(377, 65)),
        (S.ANTHROPIC_STREAM_THINKING, Usage(30, 40)),
    ],
)
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_a_recorded_stream_passes_through_unchanged_with_its_usage_read(sample, usage, step):
    data = wire(sample)
    out, accountant = relay(data, step)
    assert out == data
    assert accountant.usage == usage and accountant.saw_done and accountant.started
    blocks = sum(e["type"] in ("content_block_start", "content_block_delta") for e in sample)
    assert accountant.content_events == blocks and accountant.malformed_events == 0
    assert accountant.first_content_at is not None and not accountant.done_held


def test_usage_counts_cache_reads_and_writes_in_the_prompt():
    start = {**S.ANTHROPIC_STREAM_TEXT[0]}
    start["message"] = {
        **start["message"],
        "usage": {
            "input_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
            "output_tokens": 1,
        },
    }
    _, accountant = relay(wire([start, *S.ANTHROPIC_STREAM_TEXT[1:]]))
    assert accountant.usage == Usage(125, 6, cached_tokens=100, cache_write_tokens=20)
    # A message_delta carrying the input counts too (newer API versions) replaces them.
    later = usage_from_anthropic({"input_tokens": 7, "output_tokens": 9}, accountant.usage)
    assert later == Usage(127, 9, cached_tokens=100, cache_write_tokens=20)


def test_a_message_delta_with_null_input_counts_keeps_the_message_start_counts():
    # The SDK types message_delta's input_tokens and cache counts `int | None`: a null
    # says nothing new, it does not zero the prompt message_start counted.
    start = usage_from_anthropic({"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 1})
    later = usage_from_anthropic(
        {
            "input_tokens": None,
            "cache_read_input_tokens": None,
            "cache_creation_input_tokens": None,
            "output_tokens": 9,
        },
        start,
    )
    assert later == Usage(105, 9, cached_tokens=100, cache_write_tokens=0)


def test_an_error_before_content_fails_the_attempt_with_its_status():
    data = wire([S.ANTHROPIC_STREAM_TEXT[0], S.ANTHROPIC_STREAM_ERROR])
    with pytest.raises(StreamFailedEarly) as caught:
        relay(data)
    assert caught.value.status == 529 and "Overloaded" in str(caught.value)


def test_an_error_after_content_is_relayed_with_its_text_redacted():
    error = {"type": "error", "error": {"type": "api_error", "message": f"boom with {SECRET}"}}
    data = wire([*S.ANTHROPIC_STREAM_TEXT[:4], error])
    out, accountant = relay(data, 4096, MessagesAccountant(Redactor([SECRET])))
    assert SECRET.encode() not in out
    last = out.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\ndata: ")
    assert orjson.loads(last.split(b"data: ", 1)[1])["error"]["type"] == "api_error"


@pytest.mark.parametrize("kind", ["overloaded_error", "api_error"])
def test_a_passing_error_after_content_is_held_back_when_the_stream_can_be_continued(kind):
    error = {"type": "error", "error": {"type": kind, "message": f"boom with {SECRET}"}}
    accountant = MessagesAccountant(Redactor([SECRET]))
    accountant.hold_errors = True
    head = wire(S.ANTHROPIC_STREAM_TEXT[:4])
    assert accountant.feed(head) == head
    with pytest.raises(ErrorEventMidway) as held:
        accountant.feed(wire([error]))
    relayed = orjson.loads(held.value.event.split(b"data: ", 1)[1])
    assert held.value.event.startswith(b"event: error\n") and held.value.event.endswith(b"\n\n")
    assert relayed == {"type": "error", "error": {"type": kind, "message": "boom with [redacted]"}}
    assert not accountant.failed_midway and accountant.end_after_break(b"", True) is None


def test_an_invalid_request_error_after_content_is_relayed_even_when_holding():
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    accountant = MessagesAccountant()
    accountant.hold_errors = True
    out, _ = relay(wire([*S.ANTHROPIC_STREAM_TEXT[:4], error]), 4096, accountant)
    assert out.strip().split(b"\n\n")[-1].startswith(b"event: error\ndata: ") and accountant.failed_midway


def test_malformed_output_before_content_is_a_malformed_answer():
    with pytest.raises(MalformedAnswer):
        relay(wire(S.ANTHROPIC_STREAM_TEXT[:1]) + b"<html>502 Bad Gateway</html>\n\n")


def test_malformed_events_after_content_are_dropped_and_counted_until_too_many():
    head = wire(S.ANTHROPIC_STREAM_TEXT[:4])
    junk = b"event: content_block_delta\ndata: {not json\n\n"
    out, accountant = relay(head + junk + wire(S.ANTHROPIC_STREAM_TEXT[4:]), 4096)
    assert out == head + wire(S.ANTHROPIC_STREAM_TEXT[4:]) and accountant.malformed_events == 1
    attempt = Attempt("claude", "m")
    accountant = MessagesAccountant()
    accountant.feed(head)
    accountant.report_to(attempt)
    with pytest.raises(MalformedAnswer):
        for _ in range(MAX_MALFORMED_RUN + 1):
            accountant.feed(junk)
    assert attempt.malformed_events == MAX_MALFORMED_RUN


def test_a_message_body_is_checked_and_its_usage_read():
    assert MESSAGES.check_body(OFFER, orjson.dumps(S.MESSAGE_TEXT)) == Usage(2095, 503)


def test_an_error_object_in_a_2xx_body_fails_the_attempt():
    with pytest.raises(StreamFailedEarly) as caught:
        MESSAGES.check_body(OFFER, orjson.dumps(S.ANTHROPIC_ERROR))
    assert caught.value.status == 404


@pytest.mark.parametrize("body", [orjson.dumps(S.CHAT_COMPLETION_TEXT), b"[]", b"<html>"])
def test_a_body_that_is_not_a_message_is_malformed(body):
    with pytest.raises(MalformedAnswer):
        MESSAGES.check_body(OFFER, body)


@pytest.mark.parametrize("sample", [S.ANTHROPIC_STREAM_TEXT, S.ANTHROPIC_STREAM_TOOL_USE, S.ANTHROPIC_STREAM_THINKING])
def test_event_by_event_and_batched_chunks_read_the_same(sample):
    """Chunks of whole events after the first content take the counting fast path: the same
    bytes out, the same usage and end as when every event is parsed."""
    one_by_one = MessagesAccountant()
    out = b"".join(one_by_one.feed(wire([e])) for e in sample)
    batched = MessagesAccountant()
    head, rest = wire(sample[:2]), wire(sample[2:])
    cut = rest.rfind(b"event: message_delta")
    out_batched = batched.feed(head) + batched.feed(rest[:cut]) + batched.feed(rest[cut:]) + batched.flush()
    assert out == out_batched == wire(sample)
    assert one_by_one.usage == batched.usage and one_by_one.saw_done and batched.saw_done
    assert one_by_one.content_events == batched.content_events > 0


def test_a_malformed_event_inside_a_batch_after_content_is_still_dropped():
    head = wire(S.ANTHROPIC_STREAM_TEXT[:4])
    junk = b"event: content_block_delta\ndata: not json\n\n"
    accountant = MessagesAccountant()
    accountant.feed(head)
    body = wire(S.ANTHROPIC_STREAM_TEXT[4:5])
    assert accountant.feed(body + junk + body) == body + body
    assert accountant.malformed_events == 1


def test_events_spelled_otherwise_are_read_as_the_usual_spelling():
    """The usual `event: NAME\\ndata: {...}` is read without splitting it into lines; the
    same events with their data first, an `id:` line, a comment or no space after `data:`
    are read the same, and a line that is no SSE field is still malformed."""
    usual = wire(S.ANTHROPIC_STREAM_TEXT)
    out, accountant = relay(usual, 4096)
    assert out == usual

    def respelled(event: dict) -> bytes:
        data = orjson.dumps(event)
        return b"data:" + data + b"\n: keep\nid: 7\nevent: " + event["type"].encode() + b"\n\n"

    other = b"".join(respelled(e) for e in S.ANTHROPIC_STREAM_TEXT)
    out_other, other_accountant = relay(other, 4096)
    assert out_other == other
    assert other_accountant.usage == accountant.usage == Usage(11, 6)
    assert other_accountant.content_events == accountant.content_events > 0
    assert other_accountant.saw_done and other_accountant.started and other_accountant.malformed_events == 0

    stray = b'event: message_start\ndata: {"type":"message_start","message":{}}\nnot a field\n\n'
    with pytest.raises(MalformedAnswer):
        relay(stray, 4096)
