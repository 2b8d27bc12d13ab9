"""How a relayed stream is written to the client: an upstream answer that arrived whole (a
short answer from a fast upstream) goes out as one answer, head to end, in one write; one
that trickles in goes out as it comes. The same bytes and the same accounting either way.
In-process through the real app and its lifespan, to a real HTTP upstream (the gateway's
own HTTP/1 client reads it), each ASGI message the app sent recorded."""

from __future__ import annotations

import orjson
import pytest

from tests.api.test_accounting_order import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.fault_upstream import TOKENS, FaultUpstream, at_once
from tests.support.inprocess import post

POLICY = """
backends:
  up:
    type: openai
    base_url: {url}
    models:
      up/model: {{context_length: 8192}}
routes:
  auto: {{models: [up/model]}}
"""


def _chat(stream_options: bool = False) -> bytes:
    body = {"model": "auto", "messages": [{"role": "user", "content": "Count."}], "stream": True}
    if stream_options:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def _delta(delta: dict) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


ROLE = _delta({"role": "assistant", "content": ""})
JUNK = b"data: {not json\n\n"  # a malformed event: six in a row break a stream


def _events(body: bytes) -> list[bytes]:
    return [event for event in body.split(b"\n\n") if event]


@pytest.fixture
def whole_upstream():
    upstream = FaultUpstream().start()
    upstream.always(at_once())
    yield upstream
    upstream.stop()


@pytest.mark.parametrize("include_usage", [False, True])
async def test_an_answer_that_came_whole_goes_out_in_one_write(tmp_path, whole_upstream, include_usage):
    async with running(tmp_path, POLICY.format(url=whole_upstream.base_url)) as (app, state, recorder):
        sent = await post(app, state, _chat(include_usage), on_send=recorder.track)

    # Two ASGI messages (the server writes them as one: `send_head_and_body`): the head, then
    # the whole body with nothing to follow.
    assert [(m["type"], bool(m.get("more_body"))) for m in sent] == [
        ("http.response.start", False),
        ("http.response.body", False),
    ]
    assert sent[0]["status"] == 200
    events = _events(sent[1]["body"])
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(event[6:]) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(f"t{i} " for i in range(TOKENS))
    assert any("usage" in c for c in chunks) is include_usage  # the usage chunk the gateway asked for, stripped
    assert len(whole_upstream.seen) == 1
    # Accounted once, after the whole answer was sent, with the upstream's usage.
    assert len(recorder.outcomes) == 1
    outcome = recorder.outcomes[0]
    assert outcome.status == 200
    assert (outcome.usage.completion_tokens, outcome.usage.estimated) == (TOKENS, False)
    assert recorder.finished[0][1] == [("http.response.start", False), ("http.response.body", False)]


async def test_an_answer_that_trickles_in_goes_out_as_it_comes(tmp_path):
    upstream = FakeUpstream().start()
    upstream.reset(content="one two three four", chunk_delay_s=0.02)
    try:
        async with running(tmp_path, POLICY.format(url=upstream.base_url)) as (app, state, recorder):
            sent = await post(app, state, _chat(), on_send=recorder.track)
    finally:
        upstream.stop()

    kinds = [(m["type"], bool(m.get("more_body"))) for m in sent]
    assert kinds[0] == ("http.response.start", False)
    assert kinds[-1] == ("http.response.body", False)
    assert kinds[1:-1] == [("http.response.body", True)] * (len(kinds) - 2)
    assert len(kinds) >= 4  # the events came apart, and so went out apart
    body = b"".join(m.get("body", b"") for m in sent)
    assert _events(body)[-1] == b"data: [DONE]"
    assert [o.status for o in recorder.outcomes] == [200]


async def test_an_answer_that_came_whole_and_broken_gets_its_head_before_the_break(tmp_path):
    content = _delta({"content": "Hi"})
    upstream = FaultUpstream().start()
    upstream.always(at_once(ROLE, content, *[JUNK] * 6))
    try:
        async with running(tmp_path, POLICY.format(url=upstream.base_url)) as (app, state, recorder):
            sent = await post(app, state, _chat(), on_send=recorder.track)
    finally:
        upstream.stop()

    assert [(m["type"], bool(m.get("more_body"))) for m in sent] == [
        ("http.response.start", False),
        ("http.response.body", True),  # what the client may have: the role and the content
        ("http.response.body", False),  # then how the stream broke
    ]
    assert sent[1]["body"] == ROLE + content
    assert orjson.loads(_events(sent[2]["body"])[0][6:])["error"]["code"] == "malformed"
    assert len(upstream.seen) == 1
    assert [(o.status, o.error) for o in recorder.outcomes] == [(502, "malformed")]


async def test_an_answer_that_came_whole_reaches_the_client_before_it_is_stored(tmp_path, whole_upstream):
    """A Responses stream kept by the gateway (`store` true): the client gets every event
    before the store's write, and only the stream's end waits for it (a follow-up sent once
    the stream ended finds the response)."""
    body = orjson.dumps({"model": "auto", "input": "Count.", "stream": True})
    async with running(tmp_path, POLICY.format(url=whole_upstream.base_url)) as (app, state, recorder):
        sent = await post(app, state, body, path="/v1/responses", on_send=recorder.track)

    assert [(m["type"], bool(m.get("more_body"))) for m in sent] == [
        ("http.response.start", False),
        ("http.response.body", True),  # every event, response.completed included
        ("http.response.body", False),  # the end, once stored
    ]
    events = _events(sent[1]["body"])
    assert events[-1].startswith(b"event: response.completed\n")
    assert sent[2]["body"] == b""
    assert [o.status for o in recorder.outcomes] == [200]


async def test_a_responses_stream_nothing_is_kept_of_goes_out_in_one_write(tmp_path, whole_upstream):
    """With `store: false` there is nothing to wait for before the stream's end: it went out
    as a second write all the same, one system call more per request under load (strace
    under bench/agent_bench.py's responses cases: 3.06 writes per request, chat 2.06)."""
    body = orjson.dumps({"model": "auto", "input": "Count.", "stream": True, "store": False})
    async with running(tmp_path, POLICY.format(url=whole_upstream.base_url)) as (app, state, recorder):
        sent = await post(app, state, body, path="/v1/responses", on_send=recorder.track)

    assert [(m["type"], bool(m.get("more_body"))) for m in sent] == [
        ("http.response.start", False),
        ("http.response.body", False),  # every event and the end, in the one write
    ]
    assert _events(sent[1]["body"])[-1].startswith(b"event: response.completed\n")
    assert [o.status for o in recorder.outcomes] == [200]


TWO_BACKENDS = """
backends:
  first:
    type: vllm
    base_url: {first}
    models:
      up/first: {{context_length: 8192}}
  second:
    type: vllm
    base_url: {second}
    models:
      up/second: {{context_length: 8192}}
routes:
  auto: {{strategy: ordered, models: [up/first, up/second]}}
"""


async def test_an_answer_that_came_whole_and_broken_is_continued_after_its_events(tmp_path):
    content = _delta({"content": "t0 "})
    first, second = FaultUpstream("first").start(), FaultUpstream("second").start()
    first.always(at_once(ROLE, content, *[JUNK] * 6))
    policy = TWO_BACKENDS.format(first=first.base_url, second=second.base_url)
    try:
        async with running(tmp_path, policy) as (app, state, recorder):
            sent = await post(app, state, _chat(), on_send=recorder.track)
    finally:
        first.stop()
        second.stop()

    kinds = [(m["type"], bool(m.get("more_body"))) for m in sent]
    assert kinds[0] == ("http.response.start", False) and kinds[-1] == ("http.response.body", False)
    assert sent[1]["body"] == ROLE + content  # the events read, before the continuation's
    events = _events(b"".join(m.get("body", b"") for m in sent))
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(event[6:]) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(f"t{i} " for i in range(TOKENS))  # the first's "t0 ", then the second's rest
    # Each upstream asked once; the second with the client's text so far as a prefill.
    assert (len(first.seen), len(second.seen)) == (1, 1)
    assert second.seen[0].body["messages"][-1] == {"role": "assistant", "content": "t0 "}
    assert [o.status for o in recorder.outcomes] == [200]
