"""Issue 12 for natively passed-through Messages streams: a stream from a `type: anthropic`
backend that breaks mid-text is continued on a candidate that takes a prefill (asked through
the chat path), and the `anthropic` SDK reads one well-formed message: the same message_start,
the text continued in the same block, one stop_reason and one usage total. A break inside a
tool_use block is not continued: the client gets the error event naming the real failure.

Real parts: a gateway process, a fake Anthropic upstream (`break_after_events`), a fault
upstream of type `vllm` (prefill: `continue_final_message`) that continues a prefill from
where its words end, and the `anthropic` SDK.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from gateway.config.schema import ANTHROPIC_CACHE_WRITE_FACTOR
from tests.e2e.test_failover_table_e2e import ENV, FULL_ANSWER, all_rows, ledger
from tests.support import fault_upstream as fault
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fault_upstream import FaultUpstream
from tests.support.poll import poll

KEY = "sk-ant-test-key-123456"
CONFIG = """
backends:
  claude:
    type: anthropic
    base_url: {anthropic_url}
    api_key: {key}
    timeout_s: 5
    circuit: {{failure_threshold: 3, cooldown_s: 60}}
    models:
      test/small: {{upstream_id: claude-small, context_length: 200000, input_price: 1.0, output_price: 2.0}}
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
# message_start, ping, content_block_start: then the text deltas, one per token.
HEAD_EVENTS = 3


@pytest.fixture
def claude():
    server = FakeAnthropic(api_key=KEY).start()
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
def gw(start_gateway, claude, fallback):
    return start_gateway(CONFIG.format(anthropic_url=claude.base_url, key=KEY, fallback=fallback.base_url), env=ENV)


def _client(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)


def _events(gw, body: dict) -> list[tuple[str, dict]]:
    """The raw SSE events of a Messages stream: (event name, data)."""
    import orjson

    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": "sk-test"}, timeout=30) as r:
        assert r.status_code == 200, r.read()
        raw = b"".join(r.iter_bytes())
    out = []
    for event in raw.split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
        if b"data" in lines:
            out.append((lines[b"event"].decode(), orjson.loads(lines[b"data"])))
    return out


def test_a_native_messages_stream_cut_mid_text_is_continued_as_one_message(gw, claude, fallback):
    claude.behaviour.break_after_events = HEAD_EVENTS + 40  # the client reads t0..t39
    with _client(gw).messages.stream(
        model="auto", max_tokens=500, messages=[{"role": "user", "content": "Count."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == FULL_ANSWER
    assert [b.type for b in final.content] == ["text"] and final.content[0].text == FULL_ANSWER
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == fault.TOKENS  # 40 + 20
    assert final.model == "claude-small"  # the message the client started reading, continued
    # One attempt each; the fallback was asked through the chat path, with the prefill.
    assert len(claude.received) == 1 and len(fallback.seen) == 1
    sent = fallback.seen[0].body
    assert sent["messages"][-1] == {"role": "assistant", "content": "".join(f"t{i} " for i in range(40))}
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    assert sent["max_tokens"] == 500 - 40
    # The ledger: the broken attempt carries the 40 tokens it delivered (not billed), the
    # final row bills all 60 the client read.
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("claude", 502, "protocol", False, 40), ("steady", 200, None, True, fault.TOKENS)]


def test_the_continued_events_keep_anthropics_sequence(gw, claude, fallback):
    claude.behaviour.break_after_events = HEAD_EVENTS + 40
    body = {"model": "auto", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "Count."}]}
    events = _events(gw, body)
    names = [name for name, _ in events]
    assert names.count("message_start") == 1 and names.count("ping") == 1
    assert names.count("content_block_start") == 1 and names.count("content_block_stop") == 1
    assert names[-2:] == ["message_delta", "message_stop"] and "error" not in names
    deltas = [data for name, data in events if name == "content_block_delta"]
    assert {d["index"] for d in deltas} == {0} and len(deltas) == fault.TOKENS
    assert "".join(d["delta"]["text"] for d in deltas) == FULL_ANSWER
    closing = events[-2][1]
    assert closing["delta"]["stop_reason"] == "end_turn" and closing["usage"]["output_tokens"] == fault.TOKENS


def _prompt_rows(gw) -> list[tuple]:
    """Each attempt's row: final, prompt tokens, cache reads, cache writes, estimated, cost."""
    query = (
        "SELECT final, prompt_tokens, cached_tokens, cache_write_tokens, estimated, cost FROM events ORDER BY attempt"
    )
    with sqlite3.connect(Path(gw.dir) / "data" / "usage.sqlite3") as db:
        return list(db.execute(query))


def test_a_continued_native_stream_bills_the_prompt_anthropic_reported(gw, claude, fallback):
    """Hostile testing: message_start had said what the prompt was (its input, cache reads
    and writes), yet the broken attempt, and so the bill and the client's closing usage,
    carried the gateway's estimate of it (9 tokens, all fresh): a long cached prompt (a
    Claude Code session) billed at the full input price, or a large one under-billed."""
    claude.behaviour.break_after_events = HEAD_EVENTS + 40
    claude.behaviour.input_tokens, claude.behaviour.cache_read_tokens = 1200, 800
    claude.behaviour.cache_creation_tokens = 100
    body = {"model": "auto", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "Count."}]}
    events = _events(gw, body)

    start, closing = events[0][1]["message"]["usage"], events[-2][1]["usage"]
    assert (start["input_tokens"], start["cache_read_input_tokens"]) == (1200, 800)
    # The client's closing usage is the bill: the prompt message_start announced, all 60 tokens.
    assert closing["output_tokens"] == fault.TOKENS
    assert closing["input_tokens"] + closing["cache_read_input_tokens"] + closing["cache_creation_input_tokens"] == 2100
    assert (closing["cache_read_input_tokens"], closing["cache_creation_input_tokens"]) == (800, 100)
    assert len(claude.received) == 1 and len(fallback.seen) == 1
    ledger(gw, 1)
    rows = poll(lambda: _prompt_rows(gw) if len(_prompt_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert [row[:4] for row in rows] == [(0, 2100, 800, 100), (1, 2100, 800, 100)]
    assert rows[1][4] == 1  # the completion tokens the broken attempt delivered are counted, not reported
    # At claude's prices (cache reads at its input price: the offer sets no cached price;
    # writes at 1.25x, `type: anthropic`'s default), the fallback's 20 tokens at its own.
    delivered = (2000 * 1.0 + 100 * 1.0 * ANTHROPIC_CACHE_WRITE_FACTOR + 40 * 2.0) / 1e6
    assert rows[0][5] == pytest.approx(delivered)
    assert rows[1][5] == pytest.approx(delivered + 20 * 4.0 / 1e6)


def test_a_stream_cut_between_blocks_continues_in_a_new_block(gw, claude, fallback):
    # Cut right after the text block closed (before message_delta): the continuation opens
    # the next block index, and the SDK's message holds both blocks, whole.
    claude.behaviour.break_after_events = HEAD_EVENTS + 40 + 1
    claude.behaviour.text_pieces = [f"t{i} " for i in range(40)]
    claude.behaviour.content = "".join(f"t{i} " for i in range(40))
    with _client(gw).messages.stream(
        model="auto", max_tokens=500, messages=[{"role": "user", "content": "Count."}]
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "text"]
    assert "".join(b.text for b in final.content) == FULL_ANSWER
    assert final.usage.output_tokens == fault.TOKENS and len(fallback.seen) == 1


def test_a_break_inside_a_tool_use_block_is_not_continued(gw, claude, fallback):
    claude.behaviour.content = "Let me look."
    claude.behaviour.text_pieces = ["Let me look."]
    claude.behaviour.tool_use = {"id": "toolu_1", "name": "read", "input": {"path": "README.md"}}
    # message_start, ping, text start/delta/stop, tool_use start, first half of its input.
    claude.behaviour.break_after_events = 7
    with pytest.raises(anthropic.APIStatusError) as raised:
        with _client(gw).messages.stream(
            model="auto", max_tokens=500, messages=[{"role": "user", "content": "Read it."}]
        ) as stream:
            for _ in stream:
                pass
    assert "broke off" in str(raised.value) and "protocol" in str(raised.value)
    assert fallback.seen == []  # nobody was asked to continue a half-written tool call
    ledger(gw, 1)
    rows = all_rows(gw)
    assert rows == [("claude", 502, "protocol", True, rows[0][4])]


def test_a_continued_message_bills_the_thinking_the_client_read(gw, claude, fallback):
    """Hostile testing: the thinking block's deltas the client had read were left out of its
    closing usage, the bill and the continuation's `max_tokens` (only text was counted)."""
    claude.behaviour.thinking = "Counting from zero."
    # message_start, ping, the thinking block (start, thinking, signature, stop), the text
    # block's start, then t0..t39.
    claude.behaviour.break_after_events = 2 + 4 + 1 + 40
    body = {"model": "auto", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "Count."}]}
    events = _events(gw, body)

    text = "".join(d["delta"].get("text", "") for name, d in events if name == "content_block_delta")
    assert text == FULL_ANSWER and "error" not in [name for name, _ in events]
    assert events[-2][1]["usage"]["output_tokens"] == 1 + fault.TOKENS  # the thinking delta, 40 + 20
    assert len(claude.received) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["max_tokens"] == 500 - 41
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("claude", 502, "protocol", False, 41), ("steady", 200, None, True, 1 + fault.TOKENS)]


def test_a_break_inside_a_thinking_block_is_not_continued(gw, claude, fallback):
    claude.behaviour.thinking = "Counting from zero."
    claude.behaviour.break_after_events = 4  # message_start, ping, thinking start, its first delta
    with pytest.raises(anthropic.APIStatusError) as raised:
        with _client(gw).messages.stream(
            model="auto", max_tokens=500, messages=[{"role": "user", "content": "Count."}]
        ) as stream:
            for _ in stream:
                pass
    assert "broke off" in str(raised.value)
    assert fallback.seen == []
    ledger(gw, 1)
    assert [row[:4] for row in all_rows(gw)] == [("claude", 502, "protocol", True)]


def test_a_mid_stream_overloaded_error_is_continued_as_one_message(gw, claude, fallback):
    """Anthropic ends a stream mid-answer with `event: error` (overloaded_error): it was
    relayed and the stream ended there. Now it is held back and the message continued."""
    claude.behaviour.error_after_events = (HEAD_EVENTS + 40, "overloaded_error")
    body = {"model": "auto", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "Count."}]}
    events = _events(gw, body)

    names = [name for name, _ in events]
    assert "error" not in names and names.count("message_start") == 1
    assert names[-2:] == ["message_delta", "message_stop"]
    deltas = [data for name, data in events if name == "content_block_delta"]
    assert {d["index"] for d in deltas} == {0} and "".join(d["delta"]["text"] for d in deltas) == FULL_ANSWER
    assert events[-2][1]["usage"]["output_tokens"] == fault.TOKENS
    assert len(claude.received) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["messages"][-1] == {
        "role": "assistant",
        "content": "".join(f"t{i} " for i in range(40)),
    }
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("claude", 502, "upstream_error", False, 40), ("steady", 200, None, True, fault.TOKENS)]


def test_a_mid_stream_invalid_request_error_is_relayed_not_continued(gw, claude, fallback):
    claude.behaviour.error_after_events = (HEAD_EVENTS + 40, "invalid_request_error")
    body = {"model": "auto", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "Count."}]}
    events = _events(gw, body)

    assert [name for name, _ in events].count("error") == 1 and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "invalid_request_error"
    assert fallback.seen == []
    ledger(gw, 1)
    assert [row[:4] for row in all_rows(gw)] == [("claude", 502, "upstream_error", True)]


def test_an_upstream_holding_its_body_open_after_its_error_event_does_not_hold_the_client(gw, claude, fallback):
    """Anthropic's stream ends at an `event: error`: an upstream that sent one after content
    and then held its body open held the client's stream until the idle limit (10 s). It gets
    the grace a message_stop gives (0.5 s) and the error event is the stream's last."""
    claude.behaviour.error_after_events = (HEAD_EVENTS + 40, "invalid_request_error")
    claude.behaviour.held_open_s = 8
    body = {"model": "auto", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "Count."}]}
    started = time.monotonic()
    events = _events(gw, body)
    assert time.monotonic() - started < 5  # the grace, not the idle limit nor the 8 s hold
    assert [name for name, _ in events].count("error") == 1 and events[-1][0] == "error"
    assert len(claude.received) == 1 and fallback.seen == []
    ledger(gw, 1)
    assert [row[:4] for row in all_rows(gw)] == [("claude", 502, "upstream_error", True)]
