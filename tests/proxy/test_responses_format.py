"""Reading native Responses answers: the fake upstream's wire format is what the `openai` SDK
parses, and the accountant passes it through byte for byte while finding content, usage,
the final Response and failures before content (which the fallback loop turns into a try
of the next candidate)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import openai
import orjson
import pytest

from gateway.protocol.redact import Redactor
from gateway.proxy.relay import MAX_MALFORMED_RUN, ErrorEventMidway, MalformedAnswer, StreamFailedEarly
from gateway.proxy.responses_format import (
    RESPONSES,
    ClientEcho,
    ResponsesAccountant,
    check_response_body,
    usage_of_response,
)
from gateway.proxy.usage import Usage
from tests.support.fake_responses import FakeResponses

OFFER = SimpleNamespace(backend="vllm-a")
KEY = "sk-upstream-secret-0123456789"


@pytest.fixture(scope="module")
def fake():
    server = FakeResponses().start()
    yield server
    server.stop()


@pytest.fixture
def sdk(fake):
    fake.reset()
    with openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0) as client:
        yield client


def _raw(fake: FakeResponses, stream: bool = True, **body) -> bytes:
    payload = {"model": "m", "input": "hi", "store": False, "stream": stream, **body}
    headers = {"authorization": f"Bearer {fake.api_key}"}
    return httpx.post(fake.base_url + "/responses", json=payload, headers=headers, timeout=10).content


# -- the fake speaks what the SDK parses ------------------------------------------------------


def test_the_sdk_parses_the_fakes_answer(sdk, fake):
    fake.behaviour.cached_tokens = 3
    response = sdk.responses.create(model="m", input="hi", store=False)
    assert response.output_text == "Hello from the fake Responses upstream."
    assert response.status == "completed"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (17, 5)
    assert response.usage.input_tokens_details.cached_tokens == 3


def test_the_sdk_parses_the_fakes_stream_in_openais_order(sdk):
    with sdk.responses.stream(model="m", input="hi", store=False) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds.count("response.output_text.delta") == 6  # one per word
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == "Hello from the fake Responses upstream."


def test_the_sdk_parses_the_fakes_function_call_stream(sdk, fake):
    fake.behaviour.function_call = {"call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    with sdk.responses.stream(model="m", input="weather?", store=False) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.count("response.function_call_arguments.delta") == 2
    assert "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert (call.type, call.call_id, call.name, call.arguments) == (
        "function_call",
        "call_1",
        "get_weather",
        '{"city":"Paris"}',
    )


def test_the_fake_rejects_what_a_pass_through_must_not_send(fake):
    fake.reset()
    headers = {"authorization": f"Bearer {fake.api_key}"}
    for body in (
        {"model": "m", "input": "hi"},
        {"model": "m", "input": "hi", "store": False, "previous_response_id": "r"},
    ):
        assert httpx.post(fake.base_url + "/responses", json=body, headers=headers).status_code == 400


# -- the accountant ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_a_stream_passes_through_unchanged_whatever_the_chunking(fake, size):
    fake.reset(cached_tokens=4, reasoning_tokens=2)
    raw = _raw(fake)
    accountant = ResponsesAccountant()
    out = b"".join(accountant.feed(raw[i : i + size]) for i in range(0, len(raw), size)) + accountant.flush()
    assert out == raw
    assert accountant.started and accountant.saw_done and not accountant.done_held
    assert accountant.usage == Usage(17, 5, 4, 2)
    assert accountant.response is not None and accountant.response["status"] == "completed"
    assert accountant.response["output"][0]["content"][0]["text"] == "Hello from the fake Responses upstream."
    assert accountant.content_events == raw.count(b"\n\n") - 4  # from the first delta on
    assert accountant.malformed_events == 0


def test_content_starts_at_the_first_delta_not_before(fake):
    fake.reset()
    events = [e + b"\n\n" for e in _raw(fake).split(b"\n\n") if e]
    accountant = ResponsesAccountant()
    for event in events[:4]:  # created, in_progress, output_item.added, content_part.added
        accountant.feed(event)
    assert not accountant.started and accountant.first_content_at is None
    accountant.feed(events[4])  # the first output_text.delta
    assert accountant.started and accountant.first_content_at is not None


def test_a_function_call_is_content(fake):
    fake.reset(function_call={"call_id": "c", "name": "f", "arguments": '{"a":1}'})
    accountant = ResponsesAccountant()
    for event in _raw(fake).split(b"\n\n")[:3]:  # created, in_progress, output_item.added
        accountant.feed(event + b"\n\n")
    assert not accountant.started
    accountant.feed(_raw(fake).split(b"\n\n")[3] + b"\n\n")  # the first arguments delta
    assert accountant.started


@pytest.mark.parametrize("how", ["failed", "error"])
def test_a_failure_before_content_fails_the_attempt(fake, how):
    fake.reset(fail_before_content=how, error_message="overloaded, try later")
    with pytest.raises(StreamFailedEarly, match="overloaded, try later"):
        ResponsesAccountant().feed(_raw(fake))


def test_malformed_output_before_content_fails_the_attempt():
    accountant = ResponsesAccountant()
    with pytest.raises(MalformedAnswer):
        accountant.feed(b"event: response.created\ndata: {not json\n\n")
    with pytest.raises(MalformedAnswer):
        ResponsesAccountant().feed(b"<html>bad gateway</html>\n\n")
    with pytest.raises(MalformedAnswer):
        ResponsesAccountant().feed(b'data: {"no_type": 1}\n\n')


def _delta(text: str) -> bytes:
    event = {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "m", "output_index": 0,
             "content_index": 0, "delta": text, "logprobs": []}  # fmt: skip
    return b"event: response.output_text.delta\ndata: " + orjson.dumps(event) + b"\n\n"


def test_malformed_events_after_content_are_dropped_counted_and_break_the_stream_in_a_run():
    accountant = ResponsesAccountant()
    assert accountant.feed(_delta("a")) == _delta("a")
    assert accountant.feed(b"data: {oops\n\n") == b""
    assert accountant.feed(_delta("b")) == _delta("b")
    assert accountant.malformed_events == 1
    for _ in range(MAX_MALFORMED_RUN):
        accountant.feed(b"garbage\n\n")
    with pytest.raises(MalformedAnswer):
        accountant.feed(_delta("c"))
    assert accountant.malformed_events == 1 + MAX_MALFORMED_RUN


def test_a_chunk_is_handed_on_less_what_it_drops_and_its_extra_blank_lines():
    """A chunk of several events comes back as it came when every event is kept as it is;
    less a malformed event, and with runs of blank lines made one, when not."""
    accountant = ResponsesAccountant()
    assert accountant.feed(_delta("a")) == _delta("a")
    both = _delta("b") + _delta("c")
    assert accountant.feed(both) == both
    assert accountant.feed(_delta("d") + b"\n\n" + _delta("e")) == _delta("d") + _delta("e")
    assert accountant.feed(_delta("f") + b"data: {oops\n\n" + _delta("g")) == _delta("f") + _delta("g")
    assert accountant.malformed_events == 1 and accountant.content_events == 7
    # Read event by event (the first content is in the chunk): the same.
    assert ResponsesAccountant().feed(both) == both
    assert ResponsesAccountant().feed(_delta("d") + b"\n\n\n" + _delta("e")) == _delta("d") + _delta("e")
    assert ResponsesAccountant().feed(b"\n" + _delta("d")) == _delta("d")


def test_an_error_after_content_is_relayed_redacted():
    accountant = ResponsesAccountant(Redactor([KEY]))
    accountant.feed(_delta("a"))
    error = {"type": "error", "sequence_number": 4, "code": "server_error", "message": f"bad key {KEY}", "param": None}
    out = accountant.feed(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
    assert KEY.encode() not in out
    relayed = orjson.loads(out.split(b"data: ", 1)[1])
    assert relayed["type"] == "error" and relayed["code"] == "server_error" and "bad key" in relayed["message"]


@pytest.mark.parametrize("how", ["error", "response.failed"])
def test_a_server_error_after_content_is_held_back_when_the_stream_can_be_continued(how):
    accountant = ResponsesAccountant(Redactor([KEY]))
    accountant.hold_errors = True
    accountant.feed(_delta("a"))
    error = {"code": "server_error", "message": f"bad key {KEY}"}
    usage = {"input_tokens": 5, "output_tokens": 1}
    if how == "error":
        failure = {"type": "error", "sequence_number": 4, **error, "param": None}
    else:
        response = {
            "id": "resp_1",
            "object": "response",
            "status": "failed",
            "error": error,
            "output": [],
            "usage": usage,
        }
        failure = {"type": "response.failed", "sequence_number": 4, "response": response}
    with pytest.raises(ErrorEventMidway) as held:
        accountant.feed(b"event: " + how.encode() + b"\ndata: " + orjson.dumps(failure) + b"\n\n")
    assert held.value.event.startswith(b"event: " + how.encode() + b"\ndata: ") and KEY.encode() not in held.value.event
    # Not the stream's end, nor the Response the edge stores (the continuation's is).
    assert not accountant.saw_done and accountant.response is None and not accountant.failed_midway
    assert accountant.end_after_break(b"", True) is None


def test_a_held_back_failure_says_what_the_client_asked_too():
    """Review: a held `response.failed` (released when the stream cannot be continued) was
    written without the client's echo: its Response said the backend's `store: false`."""
    accountant = ResponsesAccountant(echo=ClientEcho(True, "resp_prev"))
    accountant.hold_errors = True
    accountant.feed(_delta("a"))
    response = {"id": "resp_1", "object": "response", "status": "failed", "store": False}
    response |= {"previous_response_id": None, "error": {"code": "server_error", "message": "x"}, "output": []}
    failure = {"type": "response.failed", "sequence_number": 4, "response": response}
    with pytest.raises(ErrorEventMidway) as held:
        accountant.feed(b"event: response.failed\ndata: " + orjson.dumps(failure) + b"\n\n")
    relayed = orjson.loads(held.value.event.split(b"data: ", 1)[1])
    assert relayed["response"]["store"] is True and relayed["response"]["previous_response_id"] == "resp_prev"


def test_an_error_that_is_not_a_passing_failure_is_relayed_even_when_holding():
    accountant = ResponsesAccountant()
    accountant.hold_errors = True
    accountant.feed(_delta("a"))
    error = {"type": "error", "sequence_number": 4, "code": "invalid_prompt", "message": "no", "param": None}
    out = accountant.feed(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
    assert orjson.loads(out.split(b"data: ", 1)[1])["code"] == "invalid_prompt" and accountant.failed_midway


def test_an_unterminated_last_event_is_flushed(fake):
    fake.reset()
    raw = _raw(fake)
    accountant = ResponsesAccountant()
    out = accountant.feed(raw[:-2]) + accountant.flush()
    assert out == raw and accountant.saw_done and accountant.usage == Usage(17, 5)


def test_only_events_that_can_carry_content_usage_or_errors_are_parsed(fake, monkeypatch):
    """response.created and response.in_progress echo the whole Response (the dearest parse
    of a stream) and carry nothing the gateway reads: forwarded by their shape, unparsed."""
    fake.reset()
    raw = _raw(fake)
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[0].startswith(b"event: response.created\n") and events[1].startswith(b"event: response.in_progress")
    parsed: list[bytes] = []
    real_loads = orjson.loads

    def counting_loads(data):
        parsed.append(bytes(data))
        return real_loads(data)

    monkeypatch.setattr(orjson, "loads", counting_loads)
    accountant = ResponsesAccountant()
    assert accountant.feed(raw) + accountant.flush() == raw
    assert accountant.saw_done and accountant.usage == Usage(17, 5)
    assert not any(b'"response.created"' in p or b'"response.in_progress"' in p for p in parsed)
    assert len(parsed) == len(events) - 2  # one at a time, until content, and the terminal event's end
    assert not any(b'"output"' in p for p in parsed)  # no Response parsed: usage read from the end
    terminal = real_loads(events[-1].split(b"data: ", 1)[1])
    assert accountant.response == terminal["response"]  # parsed when asked for (to be stored)
    assert len(parsed) == len(events) - 1


def _completed(response: dict) -> bytes:
    return b"event: response.completed\ndata: " + orjson.dumps({"type": "response.completed", "response": response})


@pytest.mark.parametrize(
    ("response", "usage"),
    [
        # usage null, a tool's schema has a property `usage`: not the Response's, not read
        ({"id": "r", "tools": [{"parameters": {"properties": {"usage": {"type": "object"}}}}], "usage": None}, None),
        ({"id": "r", "usage": None, "metadata": {"usage": {"input_tokens": 9}}}, None),
        ({"id": "r", "usage": {"input_tokens": 4, "output_tokens": 2}, "user": None, "metadata": {}}, Usage(4, 2)),
        ({"usage": {"input_tokens": 4, "output_tokens": 2}}, Usage(4, 2)),
    ],
)
def test_a_terminal_events_usage_is_the_responses_own(response, usage):
    accountant = ResponsesAccountant()
    accountant.feed(_delta("a"))
    event = _completed(response)
    assert accountant.feed(event + b"\n\n") == event + b"\n\n"
    assert accountant.usage == usage and accountant.saw_done
    assert accountant.response == response


def test_events_in_other_shapes_are_read_line_by_line():
    """Multi-line data, an `id:` field, no `event:` line: still read (and checked) whole."""
    delta = {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "output_index": 0,
             "content_index": 0, "delta": "hi", "logprobs": []}  # fmt: skip
    text = orjson.dumps(delta)
    split = text.index(b",")
    event = b"id: 1\nevent: response.output_text.delta\ndata: " + text[:split] + b"\ndata: " + text[split:] + b"\n\n"
    accountant = ResponsesAccountant()
    assert accountant.feed(event) == event and accountant.started
    bare = ResponsesAccountant()
    assert bare.feed(b"data: " + text + b"\n\n") == b"data: " + text + b"\n\n" and bare.started
    with pytest.raises(MalformedAnswer):
        ResponsesAccountant().feed(b"event: response.created\ndata: " + text + b"\nbogus line\n\n")
    with pytest.raises(MalformedAnswer):  # an announcement's shape, cut short
        ResponsesAccountant().feed(b'event: response.created\ndata: {"type":"response.created","response":{\n\n')


# -- non-streamed bodies ----------------------------------------------------------------------


def test_a_response_body_is_checked_and_its_usage_read(fake):
    fake.reset(cached_tokens=9)
    answer, usage = check_response_body(OFFER, _raw(fake, stream=False))
    assert answer["object"] == "response" and usage == Usage(17, 5, 9)


def test_a_response_body_is_parsed_once_for_the_edge(fake):
    """`read_body` hands the edge the Response its check parsed (stored without a second parse)."""
    fake.reset(cached_tokens=9)
    body = _raw(fake, stream=False)
    usage, answer = RESPONSES.read_body(OFFER, body)
    assert answer == orjson.loads(body) and usage == Usage(17, 5, 9) == RESPONSES.check_body(OFFER, body)


def test_a_failed_response_body_fails_the_attempt(fake):
    fake.reset(fail_before_content="failed", error_message="model crashed")
    with pytest.raises(StreamFailedEarly, match="model crashed"):
        check_response_body(OFFER, _raw(fake, stream=False))


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"object": "chat.completion", "choices": []}', b'{"object": "response"}']
)
def test_a_body_that_is_not_a_response_is_malformed(body):
    with pytest.raises(MalformedAnswer, match="vllm-a"):
        check_response_body(OFFER, body)


def test_usage_of_a_response_bounds_the_details():
    usage = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 4},
             "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 2}}  # fmt: skip
    assert usage_of_response(usage) == Usage(10, 3, 10, 2, cache_write_tokens=0)
    assert usage_of_response(None) is None
    assert usage_of_response({"input_tokens": True, "output_tokens": -1}) is None  # no count: estimated


# -- a Response the gateway does not keep: usage read from its end --------------------------


def _bodies() -> dict[str, bytes]:
    from tests.protocol import samples as S

    agent = dict(S.RESPONSE_TEXT, tools=[{"type": "function", "name": "f", "parameters": {"properties": {}}}] * 20)
    return {"recorded": orjson.dumps(S.RESPONSE_TEXT), "with tools echoed": orjson.dumps(agent)}


@pytest.mark.parametrize("name", ["recorded", "with tools echoed"])
def test_an_unkept_response_has_its_usage_read_without_parsing_it(name):
    from gateway.proxy.responses_format import RESPONSES_UNKEPT, unparsed_usage

    body = _bodies()[name]
    whole, usage = check_response_body(OFFER, body)
    assert unparsed_usage(body) == usage and usage is not None and usage.prompt_tokens > 0
    assert RESPONSES_UNKEPT.read_body(OFFER, body) == (usage, None)  # nothing parsed to hand over
    assert RESPONSES.read_body(OFFER, body) == (usage, whole)  # kept: parsed once, whole


_ERROR = {"code": "server_error", "message": "upstream broke"}
_INSTRUCTION_ITEMS = [
    {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "hi"}]}
]
_EXAMPLE_TOOLS = [{"type": "function", "name": "f", "parameters": {"type": "object", "examples": [{"output": ["x"]}]}}]


def _response(**members) -> dict:
    from tests.protocol import samples as S

    return {**S.RESPONSE_TEXT, **members}


@pytest.mark.parametrize(
    ("body", "raises"),
    [
        (orjson.dumps(_response(status="failed", error={"code": "server_error", "message": "x"})), StreamFailedEarly),
        (orjson.dumps({"error": {"message": "overloaded"}}), StreamFailedEarly),
        (orjson.dumps(_response(error="boom", output=[])), StreamFailedEarly),
        (orjson.dumps(_response(status="failed")), StreamFailedEarly),  # failed, and no error object
        (orjson.dumps(_response(object="chat.completion")), MalformedAnswer),
        (orjson.dumps(_response(output=None)), MalformedAnswer),
        (orjson.dumps(_response())[:-40], MalformedAnswer),  # cut short
        # usage in the metadata only: not the Response's own (the tail is not its members)
        (
            orjson.dumps({k: v for k, v in _response(metadata={"usage": {"input_tokens": 9}}).items() if k != "usage"}),
            None,
        ),
        (orjson.dumps(_response(), option=orjson.OPT_INDENT_2), None),  # spaced: parsed whole, fine
        # An error and no output, behind members that hold an `output` list of their own
        # (instructions as input items; a tool schema's examples, when tools come first).
        (orjson.dumps(_response(instructions=_INSTRUCTION_ITEMS, error=_ERROR, output=[])), StreamFailedEarly),
        (orjson.dumps({"tools": _EXAMPLE_TOOLS, **_response(error=_ERROR, output=[])}), StreamFailedEarly),
        (
            orjson.dumps({k: v for k, v in _response(error=_ERROR, tools=_EXAMPLE_TOOLS).items() if k != "output"}),
            StreamFailedEarly,
        ),
    ],
)
def test_an_unkept_response_in_any_doubt_is_parsed_whole_and_judged_so(body, raises):
    from gateway.proxy.responses_format import RESPONSES_UNKEPT, unparsed_usage

    assert unparsed_usage(body) is None
    if raises is None:
        usage, answer = RESPONSES_UNKEPT.read_body(OFFER, body)
        assert answer == orjson.loads(body) and usage == check_response_body(OFFER, body)[1]
    else:
        with pytest.raises(raises):
            RESPONSES_UNKEPT.read_body(OFFER, body)


def test_the_number_after_the_last_event_handed_on_survives_keep_alives():
    """What an error event ending a broken native stream is numbered: one past the last
    event the client got, whatever comments came after it (review: a keep-alive reset it to 0)."""
    accountant = ResponsesAccountant()
    assert accountant.next_sequence == 0
    created = {"type": "response.created", "sequence_number": 0, "response": {"id": "r", "object": "response"}}
    delta = {"type": "response.output_text.delta", "sequence_number": 5, "item_id": "m", "delta": "Hi"}
    for event in (created, delta):
        accountant.feed(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
    assert accountant.next_sequence == 6
    assert accountant.feed(b": keep-alive\n\n") == b": keep-alive\n\n"
    assert accountant.next_sequence == 6


# -- the client's `store` and `previous_response_id` in what it reads -----------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # OpenAI's order: the previous id before `store`.
        (
            b'{"id":"r","previous_response_id":null,"reasoning":{},"store":false,"tools":[]}',
            b'{"id":"r","previous_response_id":"resp_1","reasoning":{},"store":true,"tools":[]}',
        ),
        # `store` first, and a backend saying a previous id of its own.
        (
            b'{"store":false,"x":1,"previous_response_id":"resp_backend"}',
            b'{"store":true,"x":1,"previous_response_id":"resp_1"}',
        ),
        # vLLM writes no `store`: added beside the previous id.
        (
            b'{"id":"r","previous_response_id":null,"usage":null}',
            b'{"id":"r","previous_response_id":"resp_1","store":true,"usage":null}',
        ),
        # A tool's schema has a property named store (an object): not the Response's.
        (
            b'{"previous_response_id":null,"tools":[{"parameters":{"properties":{"store":{"type":"boolean"}}}}]}',
            None,
        ),
        (b'{"previous_response_id": null, "store": false}', None),  # spaced: parsed instead
        (b'{"store":false}', None),  # no previous id to tell the Response's members by
        (b'{"previous_response_id":null,"a":{"previous_response_id":null},"store":false}', None),
        (b'{"previous_response_id":"a\\"b","store":false}', None),  # an escape in the id: parsed
    ],
)
def test_client_echo_patches_the_responses_members_by_their_bytes_only_when_sure(text, expected):
    assert ClientEcho(True, "resp_1").patch(text) == expected
    if expected is not None:
        assert orjson.loads(expected)["store"] is True


def test_client_echo_of_an_unstored_call_without_a_previous_id():
    assert ClientEcho(False, None).patch(b'{"previous_response_id":null,"store":false}') == (
        b'{"previous_response_id":null,"store":false}'
    )


def test_the_accountant_hands_on_responses_saying_what_the_client_asked(fake):
    """Every event carrying the Response (created, in_progress, completed) says store true and
    the previous id; every other event passes byte for byte."""
    fake.reset()
    raw = _raw(fake)
    accountant = ResponsesAccountant(echo=ClientEcho(True, "resp_prev"))
    out = accountant.feed(raw) + accountant.flush()
    events = [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: ")]
    upstream = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == len(upstream)
    for got, came in zip(events, upstream, strict=True):
        if "response" in came:
            assert got["response"] == {**came["response"], "store": True, "previous_response_id": "resp_prev"}
        else:
            assert got == came
    assert accountant.response is not None and accountant.usage is not None
