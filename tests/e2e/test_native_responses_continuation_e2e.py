"""Issue 12 for natively passed-through Responses streams: a stream from a backend serving
`/v1/responses` that breaks mid-text is continued on a candidate that takes a prefill (asked
through the chat path), and the `openai` SDK reads one well-formed Response: the same id, the
text continued in the same message item, gapless sequence numbers, one response.completed
with the whole output and a usage counting every output token. The continued Response is
stored, so `previous_response_id` works on it. A break inside a function call is not continued.

Real parts: a gateway process, a fake Responses upstream (`break_after_events`), a fault
upstream of type `vllm` (prefill `continue_final_message`) and the `openai` SDK.
"""

from __future__ import annotations

import openai
import pytest

from tests.e2e.test_failover_table_e2e import ENV, FULL_ANSWER, all_rows, ledger
from tests.support import fault_upstream as fault
from tests.support.fake_responses import FakeResponses
from tests.support.fault_upstream import FaultUpstream
from tests.support.poll import poll

CONFIG = """
backends:
  native:
    type: openai
    base_url: {native}
    api_key: sk-fake-responses-123456
    apis: [chat, responses]
    circuit: {{failure_threshold: 3, cooldown_s: 60}}
    models:
      test/small: {{upstream_id: small-native, context_length: 32768, input_price: 1.0, output_price: 2.0}}
  steady:
    type: vllm
    base_url: {fallback}
    api_key: sk-steady-123456
    timeout_s: 10
    models:
      test/large: {{context_length: 131072, input_price: 3.0, output_price: 4.0}}
routes:
  auto:
    strategy: ordered
    models: [test/small, test/large]
"""
# response.created, response.in_progress, output_item.added, content_part.added: then the deltas.
HEAD_EVENTS = 4


@pytest.fixture
def native():
    server = FakeResponses().start()
    server.behaviour.content = FULL_ANSWER
    server.behaviour.text_pieces = [f"t{i} " for i in range(fault.TOKENS)]
    yield server
    server.stop()


@pytest.fixture
def fallback():
    server = FaultUpstream("steady").start()
    yield server
    server.stop()


@pytest.fixture
def gw(start_gateway, native, fallback):
    return start_gateway(CONFIG.format(native=native.base_url, fallback=fallback.base_url), env=ENV)


def _client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, timeout=30)


@pytest.mark.parametrize("cut", ["break_after_events", "end_after_events"])
def test_a_native_responses_stream_cut_mid_text_is_continued_as_one_response(gw, native, fallback, cut):
    """`end_after_events`: the body ended cleanly there, without a terminal event (hostile
    testing: that was taken for the answer's end, and the client got a Response cut short)."""
    setattr(native.behaviour, cut, HEAD_EVENTS + 40)  # the client reads t0..t39
    client = _client(gw)
    events = list(client.responses.create(model="auto", input="Count.", max_output_tokens=500, stream=True))

    kinds = [e.type for e in events]
    assert kinds.count("response.created") == 1 and kinds.count("response.output_item.added") == 1
    assert kinds[-1] == "response.completed" and "error" not in kinds and "response.failed" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))  # gapless
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == fault.TOKENS and "".join(deltas) == FULL_ANSWER
    created, completed = events[0].response, events[-1].response
    assert completed.id == created.id and completed.output_text == FULL_ANSWER
    assert [item.id for item in completed.output] == [events[2].item.id]  # the same message item
    assert completed.usage.output_tokens == fault.TOKENS  # 40 + 20
    # One attempt each; the fallback was asked through the chat path, with the prefill.
    assert len(native.received) == 1 and len(fallback.seen) == 1
    sent = fallback.seen[0].body
    assert sent["messages"][-1] == {"role": "assistant", "content": "".join(f"t{i} " for i in range(40))}
    assert sent["continue_final_message"] is True
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("native", 502, "protocol", False, 40), ("steady", 200, None, True, fault.TOKENS)]
    # The continued Response was stored: a follow-up can build on it.
    fallback_seen = len(fallback.seen)
    setattr(native.behaviour, cut, None)
    client.responses.create(model="auto", input="Go on.", previous_response_id=completed.id)
    follow_up = native.received[-1].body
    assert len(native.received) == 2 and len(fallback.seen) == fallback_seen
    assert any(
        item.get("role") == "assistant" and FULL_ANSWER.strip() in str(item.get("content"))
        for item in follow_up["input"]
    )


def test_a_break_in_the_message_after_a_reasoning_item_is_continued_and_bills_it(gw, native, fallback):
    """Hostile testing: a reasoning item done before the message blocked the continuation
    for good (only one being written is not continuable), and the reasoning the client read
    was left out of what it was billed and of the continuation's budget."""
    native.behaviour.reasoning_summary = "Counting from zero."
    native.behaviour.break_after_events = HEAD_EVENTS + 6 + 40  # the reasoning item, then t0..t39
    events = list(_client(gw).responses.create(model="auto", input="Count.", max_output_tokens=500, stream=True))

    kinds = [e.type for e in events]
    assert kinds[-1] == "response.completed" and "error" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == FULL_ANSWER
    completed = events[-1].response
    assert [item.type for item in completed.output] == ["reasoning", "message"]
    assert [item.id for item in completed.output] == [events[2].item.id, events[8].item.id]
    assert completed.output_text == FULL_ANSWER
    assert completed.usage.output_tokens == 1 + fault.TOKENS  # the summary's delta, 40 + 20
    assert completed.usage.output_tokens_details.reasoning_tokens == 1
    assert len(native.received) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["max_tokens"] == 500 - 41
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("native", 502, "protocol", False, 41), ("steady", 200, None, True, 1 + fault.TOKENS)]


def test_a_break_inside_a_function_call_is_not_continued(gw, native, fallback):
    native.behaviour.function_call = {"call_id": "call_1", "name": "read", "arguments": '{"path": "README.md"}'}
    native.behaviour.break_after_events = 4  # created, in_progress, item added, half the arguments
    events = list(_client(gw).responses.create(model="auto", input="Read it.", stream=True))
    assert events[-1].type == "error" and "broke off" in events[-1].message
    # Numbered after the last event the client got (hostile testing found it always 0).
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert fallback.seen == []
    ledger(gw, 1)
    assert [row[:4] for row in all_rows(gw)] == [("native", 502, "protocol", True)]


@pytest.mark.parametrize("how", ["failed", "error"])
def test_a_mid_stream_server_error_is_continued_as_one_response(gw, native, fallback, how):
    """The upstream ends the Response mid-text with `response.failed` or an `error` event
    (code `server_error`): it was relayed and the stream ended there. Now it is held back and
    the Response continued."""
    native.behaviour.fail_after_events = (HEAD_EVENTS + 40, how)
    events = list(_client(gw).responses.create(model="auto", input="Count.", max_output_tokens=500, stream=True))

    kinds = [e.type for e in events]
    assert kinds[-1] == "response.completed" and "error" not in kinds and "response.failed" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == FULL_ANSWER
    assert events[-1].response.usage.output_tokens == fault.TOKENS
    assert len(native.received) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["messages"][-1]["content"] == "".join(f"t{i} " for i in range(40))
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("native", 502, "upstream_error", False, 40), ("steady", 200, None, True, fault.TOKENS)]
