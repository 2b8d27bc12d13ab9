"""A stream whose connection breaks after the answer's end: the client gets a whole answer.

An upstream that sends its last chunk (the finish, the usage) and then drops the connection
instead of sending `[DONE]` and closing cleanly lost nothing of the answer. The gateway used
to end such a stream with an error event after it (for Messages: after message_stop), so
the SDKs raised on an answer that was complete (`messages.stream().get_final_message()`
among them) and the ledger recorded a 502. Real parts: a gateway process, fake upstreams
over HTTP that drop the connection after N events, the openai and anthropic SDKs.
"""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest

from tests.e2e.test_usage_e2e import export_today
from tests.support.poll import poll

CONFIG = """
backends:
  compat:
    type: openai
    base_url: {openai_url}
    api_key: sk-compat-123456
    timeout_s: 5
    models:
      m/chat: {{upstream_id: chat-1, context_length: 32000}}
  spare:
    type: openai
    base_url: {spare_url}
    timeout_s: 5
    models:
      m/spare: {{upstream_id: spare-1, context_length: 32000}}
  claude:
    type: anthropic
    base_url: {anthropic_url}
    api_key: sk-ant-test-key-123456
    timeout_s: 5
    models:
      anthropic/claude-sonnet-4.5: {{upstream_id: claude-sonnet-4-5, context_length: 200000}}
  native:
    type: openai
    base_url: {native_url}
    api_key: sk-fake-responses-123456
    apis: [responses]
    timeout_s: 5
    models:
      test/native: {{upstream_id: small-native, context_length: 32000}}
routes:
  open: {{strategy: ordered, models: [m/chat, m/spare]}}
  claude: {{strategy: ordered, models: [anthropic/claude-sonnet-4.5, m/spare]}}
  native: {{strategy: ordered, models: [test/native]}}
"""
ENV = {"GATEWAY_API_KEYS": "team-a:sk-test", "GATEWAY_USAGE_FLUSH_S": "0.05"}
HELLO = [{"role": "user", "content": "Say hello."}]
CONTENT = "Hello from the fake upstream."
# The fake chat upstream's stream of CONTENT: the role chunk, five words, the finish chunk,
# the usage chunk (asked for), [DONE].
AFTER_USAGE, AFTER_FINISH, MID_ANSWER = 8, 7, 3


@pytest.fixture
def gw(start_gateway, upstream, upstream_b, claude, native):
    config = CONFIG.format(
        openai_url=upstream.base_url,
        spare_url=upstream_b.base_url,
        anthropic_url=claude.base_url,
        native_url=native.base_url,
    )
    return start_gateway(config, env=ENV)


def ledger(gw, count: int) -> list[dict]:
    rows = poll(lambda: (r := export_today(gw.dir / "data")) and len(r) >= count and r, timeout=15)
    return sorted(rows, key=lambda e: (e["timestamp"], e["attempt"]))


def raw_stream(gw, path: str, body: dict) -> str:
    headers = {"authorization": "Bearer sk-test", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", gw.url + path, json={**body, "stream": True}, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        return response.read().decode()


def data_of(text: str) -> list[dict]:
    """The JSON data of each event (not `[DONE]`)."""
    out = []
    for block in filter(None, text.split("\n\n")):
        for line in block.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def test_chat_stream_broken_after_its_usage_chunk_is_a_whole_answer(gw, upstream, upstream_b, openai_client):
    upstream.reset(break_after_events=AFTER_USAGE)
    chunks = list(
        openai_client(gw).chat.completions.create(
            model="open", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == CONTENT
    assert chunks[-1].choices == [] and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 7)
    text = raw_stream(gw, "/v1/chat/completions", {"model": "open", "messages": HELLO})
    assert "error" not in text and text.endswith("data: [DONE]\n\n")  # the gateway ends the stream
    assert data_of(text)[-1]["choices"][0]["finish_reason"] == "stop"
    rows = ledger(gw, 2)
    # The second call asked for no usage: the gateway asked for it, read it, and left it out.
    assert [(r["status"], r["backend"], r["estimated"], r["completion_tokens"]) for r in rows] == [
        (200, "compat", False, 7)
    ] * 2
    assert len(upstream.received) == 2 and upstream_b.received == []  # nothing retried elsewhere


def test_chat_stream_broken_after_its_finish_chunk_is_a_whole_answer(gw, upstream, openai_client):
    upstream.reset(break_after_events=AFTER_FINISH)
    chunks = list(openai_client(gw).chat.completions.create(model="open", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == CONTENT
    assert chunks[-1].choices[0].finish_reason == "stop"
    # A client that asked for usage gets the estimate in place of the lost usage chunk, then
    # [DONE], as the stream's own end gives it when an upstream sends no usage.
    text = raw_stream(
        gw, "/v1/chat/completions", {"model": "open", "messages": HELLO, "stream_options": {"include_usage": True}}
    )
    assert text.endswith("data: [DONE]\n\n") and "error" not in text
    usage = data_of(text)[-1]
    assert data_of(text)[-1]["choices"] == []
    rows = ledger(gw, 2)
    assert [(r["status"], r["error"], r["estimated"]) for r in rows] == [(200, None, True)] * 2  # usage was lost
    assert (usage["usage"]["prompt_tokens"], usage["usage"]["completion_tokens"]) == (
        rows[1]["prompt_tokens"],
        rows[1]["completion_tokens"],
    )


def test_chat_stream_broken_mid_answer_still_ends_with_an_error(gw, upstream):
    upstream.reset(break_after_events=MID_ANSWER)
    events = data_of(raw_stream(gw, "/v1/chat/completions", {"model": "open", "messages": HELLO}))
    assert list(events[-1]) == ["error"] and events[-1]["error"]["message"] == "The upstream stream broke off."
    [row] = ledger(gw, 1)
    assert row["status"] == 502


def test_messages_translated_stream_broken_after_its_end_is_a_whole_message(gw, upstream):
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)
    for cut in (AFTER_USAGE, AFTER_FINISH):
        upstream.reset(break_after_events=cut)
        with client.messages.stream(model="open", max_tokens=50, messages=HELLO) as stream:
            final = stream.get_final_message()  # raised APIStatusError on the error event after message_stop
        assert final.stop_reason == "end_turn" and final.content[0].text.strip() == CONTENT
    client.close()
    upstream.reset(break_after_events=AFTER_FINISH)
    text = raw_stream(gw, "/v1/messages", {"model": "open", "max_tokens": 50, "messages": HELLO})
    names = [block.split("\n")[0] for block in filter(None, text.split("\n\n"))]
    assert names[-3:] == ["event: content_block_stop", "event: message_delta", "event: message_stop"]
    assert "event: error" not in names
    rows = ledger(gw, 3)
    assert [(r["status"], r["endpoint"], r["estimated"]) for r in rows] == [
        (200, "messages", False),
        (200, "messages", True),
        (200, "messages", True),
    ]


def test_responses_translated_stream_broken_after_its_end_completes(gw, upstream, openai_client):
    upstream.reset(break_after_events=AFTER_FINISH)
    with openai_client(gw).responses.stream(model="open", input="Say hello.") as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text.strip() == CONTENT
    [row] = ledger(gw, 1)
    assert (row["status"], row["endpoint"]) == (200, "responses")


def test_native_messages_stream_broken_before_message_stop_gets_it(gw, claude):
    body = {"model": "claude", "max_tokens": 50, "messages": HELLO}
    whole = raw_stream(gw, "/v1/messages", body)
    names = [block.split("\n")[0] for block in filter(None, whole.split("\n\n"))]
    assert names[-2:] == ["event: message_delta", "event: message_stop"]
    claude.reset(break_after_events=len(names) - 1)  # everything but message_stop
    broken = raw_stream(gw, "/v1/messages", body)
    assert broken == whole  # message_stop, which carries nothing, added by the gateway
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)
    with client.messages.stream(**body) as stream:
        assert stream.get_final_message().stop_reason == "end_turn"
    client.close()
    rows = ledger(gw, 3)
    assert [(r["status"], r["backend"]) for r in rows] == [(200, "claude")] * 3


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_a_native_stream_held_open_after_its_end_event_does_not_hold_the_client(gw, claude, native, path):
    """Hostile testing: a native Messages (Responses) upstream that sent message_stop
    (response.completed) and left its body open held the client's stream open for its idle
    limit, 10 s. It has a short grace to end its body: the client's stream ends whole, at
    once, and the call is a success."""
    if path == "/v1/messages":
        body: dict = {"model": "claude", "max_tokens": 50, "messages": HELLO}
        end, upstream = "event: message_stop", claude
    else:
        body, end, upstream = {"model": "native", "input": "Say hello."}, "event: response.completed", native
    whole = raw_stream(gw, path, body)
    upstream.reset(held_open_s=30)
    started = time.monotonic()
    held = raw_stream(gw, path, body)
    elapsed = time.monotonic() - started

    assert elapsed < 5, elapsed  # not the 10 s idle limit
    names = [block.split("\n")[0] for block in filter(None, held.split("\n\n"))]
    assert names == [block.split("\n")[0] for block in filter(None, whole.split("\n\n"))]
    assert names[-1] == end and names.count(end) == 1
    rows = ledger(gw, 2)
    assert [(r["status"], r["error"]) for r in rows] == [(200, None), (200, None)]


def test_a_native_responses_stream_held_open_after_its_response_failed_does_not_hold_the_client(gw, native):
    """`response.failed` after content is a terminal Responses event too (the stream's end,
    relayed when no continuation can take it): an upstream that sent it and left its body
    open held the client's stream for its idle limit, 10 s, where `response.completed`
    held it half a second."""
    native.reset(held_open_s=30, fail_after_events=(6, "failed"))
    started = time.monotonic()
    held = raw_stream(gw, "/v1/responses", {"model": "native", "input": "Say hello."})
    elapsed = time.monotonic() - started

    assert elapsed < 5, elapsed  # not the 10 s idle limit
    names = [block.split("\n")[0] for block in filter(None, held.split("\n\n"))]
    assert names[-1] == "event: response.failed" and names.count("event: response.failed") == 1
    assert names.count("event: response.output_text.delta") == 2  # the events before the failure
    rows = ledger(gw, 1)
    assert [(r["backend"], r["status"]) for r in rows] == [("native", 502)]


def test_native_messages_stream_broken_before_message_delta_is_an_error(gw, claude):
    body = {"model": "claude", "max_tokens": 50, "messages": HELLO}
    names = [b.split("\n")[0] for b in filter(None, raw_stream(gw, "/v1/messages", body).split("\n\n"))]
    claude.reset(break_after_events=len(names) - 2)  # the message_delta with its stop_reason never came
    broken = [b.split("\n")[0] for b in filter(None, raw_stream(gw, "/v1/messages", body).split("\n\n"))]
    assert broken[-1] == "event: error" and "event: message_stop" not in broken
    rows = ledger(gw, 2)
    assert [r["status"] for r in rows] == [200, 502]


def test_an_upstream_error_event_then_a_break_ends_with_that_one_error_event(gw, upstream):
    """The upstream's own error event after content, then its connection dropped: the client
    got the error event and then a second one ("broke off"), and a continuation was tried
    after an error the client had already read. One error event now, the upstream's."""
    head = {"id": "chatcmpl-e", "object": "chat.completion.chunk", "created": 1, "model": "chat-1"}
    raw = [
        b"data: "
        + json.dumps({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}).encode(),
        b"data: " + json.dumps({**head, "choices": [{"index": 0, "delta": {"content": "Half an"}}]}).encode(),
        b'data: {"error": {"message": "worker died", "type": "server_error", "code": 500}}',
    ]
    # The connection drops where [DONE] would come.
    upstream.reset(raw_stream=[event + b"\n\n" for event in [*raw, b"data: [DONE]"]], break_after_events=3)
    events = data_of(raw_stream(gw, "/v1/chat/completions", {"model": "open", "messages": HELLO}))
    assert [e["error"]["message"] for e in events if "error" in e] == ["worker died"]
    text = raw_stream(gw, "/v1/messages", {"model": "open", "max_tokens": 50, "messages": HELLO})
    names = [block.split("\n")[0] for block in filter(None, text.split("\n\n"))]
    assert names.count("event: error") == 1 and names[-1] == "event: error"
    # The error event ended the answer, as `[DONE]` does: the break after it is past the end
    # (nothing to warn of, nothing continued); the call is the error event's.
    assert "broke mid-answer" not in gw.log()
    rows = ledger(gw, 2)
    assert [(r["status"], r["error"], r["endpoint"]) for r in rows] == [
        (502, "upstream_error", "chat"),
        (502, "upstream_error", "messages"),
    ]


# -- a stream the upstream ends cleanly without its end event ---------------------------------
# Hostile testing: the body ended (its last chunk, a clean close) where `[DONE]`, message_stop
# or response.completed should have come. The gateway took the end of the body for the end of
# the answer: an answer cut mid-sentence reached the client as a success, billed, and never
# continued; a whole one lacked the usage chunk the client asked for, and `[DONE]`. Each
# case is run with the events apart (relayed one by one) and together (read whole before the
# answer's head goes out).


@pytest.mark.parametrize("apart", [False, True], ids=["whole", "apart"])
def test_a_chat_stream_ended_cleanly_after_its_finish_gets_usage_and_done(gw, upstream, apart):
    upstream.reset(end_after_events=AFTER_FINISH, chunk_delay_s=0.05 if apart else 0, one_write=not apart)
    body = {"model": "open", "messages": HELLO, "stream_options": {"include_usage": True}}
    text = raw_stream(gw, "/v1/chat/completions", body)
    assert text.endswith("data: [DONE]\n\n") and "error" not in text
    events = data_of(text)
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-1]["choices"] == []
    [row] = ledger(gw, 1)
    assert (row["status"], row["estimated"]) == (200, True)
    assert (events[-1]["usage"]["prompt_tokens"], events[-1]["usage"]["completion_tokens"]) == (
        row["prompt_tokens"],
        row["completion_tokens"],
    )
    assert events[-1]["id"] == events[0]["id"] and events[-1]["model"] == events[0]["model"]


@pytest.mark.parametrize("apart", [False, True], ids=["whole", "apart"])
def test_a_chat_stream_ended_cleanly_mid_answer_is_a_broken_stream(gw, upstream, upstream_b, apart):
    """Cut after its first words, as a break there is: the words that reached the client (or
    came whole with the head) end with the API's error event, as this route does not continue."""
    upstream.reset(end_after_events=MID_ANSWER, chunk_delay_s=0.05 if apart else 0, one_write=not apart)
    text = raw_stream(gw, "/v1/chat/completions", {"model": "open", "messages": HELLO})
    events = data_of(text)
    assert [e["choices"][0]["delta"].get("content") for e in events[:-1]] == ["", "Hello ", "from "]
    assert list(events[-1]) == ["error"] and events[-1]["error"]["message"] == "The upstream stream broke off."
    assert "[DONE]" not in text
    rows = ledger(gw, 1)
    assert [(r["status"], r["backend"]) for r in rows] == [(502, "compat")]
    assert len(upstream.received) == 1 and upstream_b.received == []


def test_a_native_messages_stream_ended_cleanly_before_message_stop_gets_it(gw, claude):
    body = {"model": "claude", "max_tokens": 50, "messages": HELLO}
    whole = raw_stream(gw, "/v1/messages", body)
    names = [block.split("\n")[0] for block in filter(None, whole.split("\n\n"))]
    claude.reset(end_after_events=len(names) - 1)  # everything but message_stop
    assert raw_stream(gw, "/v1/messages", body) == whole
    claude.reset(end_after_events=len(names) - 2)  # the message_delta with its stop_reason never came
    cut = [b.split("\n")[0] for b in filter(None, raw_stream(gw, "/v1/messages", body).split("\n\n"))]
    assert cut[-1] == "event: error" and "event: message_delta" not in cut
    rows = ledger(gw, 3)
    assert [(r["status"], r["backend"]) for r in rows] == [(200, "claude"), (200, "claude"), (502, "claude")]


def test_a_native_responses_stream_ended_cleanly_before_its_terminal_event_fails(gw, native, openai_client):
    body = {"model": "native", "input": "Say hello."}
    whole = [b.split("\n")[0] for b in filter(None, raw_stream(gw, "/v1/responses", body).split("\n\n"))]
    assert whole[-1] == "event: response.completed"
    native.reset(end_after_events=len(whole) - 1, chunk_delay_s=0.05)
    cut = [b.split("\n")[0] for b in filter(None, raw_stream(gw, "/v1/responses", body).split("\n\n"))]
    assert cut[:-1] == whole[:-1] and cut[-1] == "event: error"  # as a broken native stream ends
    # What the SDK says of a stream whose `error` event ends it, OpenAI's own included.
    with pytest.raises(RuntimeError, match=r"Didn't receive a `response.completed` event"):
        with openai_client(gw).responses.stream(model="native", input="Say hello.") as stream:
            stream.get_final_response()
    rows = ledger(gw, 3)
    assert [(r["status"], r["backend"]) for r in rows] == [(200, "native"), (502, "native"), (502, "native")]


def test_a_chat_stream_ended_cleanly_before_any_text_fails_over_or_ends_whole(gw, upstream, upstream_b):
    """Read whole before its head went out: an empty answer that had finished is completed;
    one cut after its role chunk fails the attempt, and the next candidate answers."""
    head = {"id": "chatcmpl-e", "object": "chat.completion.chunk", "created": 1, "model": "chat-1"}
    role = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    finish = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    events = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in (role, finish)]
    upstream.reset(raw_stream=events)
    text = raw_stream(gw, "/v1/chat/completions", {"model": "open", "messages": HELLO})
    assert text == b"".join(events).decode() + "data: [DONE]\n\n"
    upstream.reset(raw_stream=events[:1])
    text = raw_stream(gw, "/v1/chat/completions", {"model": "open", "messages": HELLO})
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in data_of(text)).strip() == CONTENT
    assert text.endswith("data: [DONE]\n\n")
    rows = ledger(gw, 3)
    assert [(r["backend"], r["status"]) for r in rows] == [("compat", 200), ("compat", 502), ("spare", 200)]
    assert len(upstream.received) == 1 and len(upstream_b.received) == 1
