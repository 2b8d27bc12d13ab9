"""JSON Lines: every line validated on its own, bad ones reported by number."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from gateway.usage.jsonl import BadLine, event_from_json, event_line, parse_lines
from tests.usage.fixtures import EVENTS


def test_an_exported_line_imports_back_to_the_same_event():
    for event in EVENTS:
        assert event_from_json(orjson.loads(event_line(event))) == event


def test_minimal_line_takes_defaults_and_derives_the_author():
    event = event_from_json(
        {
            "id": "x",
            "timestamp": "2025-03-10T12:00:00+01:00",
            "model": "qwen/qwen3-32b",
            "prompt_tokens": 10,
            "completion_tokens": 5,
        }
    )
    assert event.timestamp == datetime(2025, 3, 10, 11, 0, tzinfo=UTC)
    assert (event.author, event.backend, event.category, event.status, event.cost) == (
        "qwen",
        "unknown",
        "chat",
        200,
        0.0,
    )


def test_a_timestamp_without_zone_is_utc():
    event = event_from_json(
        {"id": "x", "timestamp": "2025-03-10T12:00:00", "model": "a/b", "prompt_tokens": 1, "completion_tokens": 1}
    )
    assert event.timestamp.tzinfo is UTC and event.timestamp.hour == 12


def test_parse_lines_numbers_bad_lines_and_skips_blank_ones():
    good = event_line(EVENTS[0])
    lines = [
        good,
        b"\n",
        b'{"id": "y", "model": "a/b"}\n',
        b"[1, 2]\n",
        b'{"id": "z", "timestamp": "2025-03-10T00:00:00Z", "model": "a/b", "prompt_tokens": 2, "completion_tokens": 1, "tokens": 4}\n',
        b'{"id": "s", "timestamp": "2025-03-10T00:00:00Z", "model": "a/b", "prompt_tokens": 1, "completion_tokens": 1, "status": 99}\n',
        b'{"id": "c", "timestamp": "2025-03-10T00:00:00Z", "model": "a/b", "prompt_tokens": 1, "completion_tokens": 1, "backend": "a\\u001fb"}\n',
    ]
    results = dict(parse_lines(lines))
    assert set(results) == {1, 3, 4, 5, 6, 7}
    assert results[1] == EVENTS[0]
    bad = {n: r.reason for n, r in results.items() if isinstance(r, BadLine)}
    assert "timestamp" in bad[3] and "prompt_tokens" in bad[3]  # every missing field named
    assert "object" in bad[4]
    assert "tokens is 4" in bad[5]
    assert "status" in bad[6]
    assert "backend" in bad[7]


def test_a_line_written_before_the_ledger_had_attempts_imports_with_their_defaults():
    # A line as `gateway usage export` wrote it before schema version 1 (no endpoint, key,
    # team, call_id, attempt, final, error, cache_write_tokens).
    line = (
        b'{"id":"0195a1b2c3d4","timestamp":"2025-03-10T12:00:00.000000Z","route":"auto","model":"qwen/qwen3-32b",'
        b'"author":"qwen","backend":"vllm","category":"chat","app":"alice","app_title":null,"prompt_tokens":10,'
        b'"completion_tokens":5,"tokens":15,"cached_tokens":0,"reasoning_tokens":0,"cost":0.0,"latency_ms":900.0,'
        b'"ttft_ms":100.0,"tokens_per_second":40.0,"status":200,"attempts":2,"estimated":false,"request_id":"r"}'
    )
    event = event_from_json(orjson.loads(line))
    assert (event.endpoint, event.key, event.team, event.call_id, event.attempt, event.final) == (
        "chat",
        None,
        None,
        None,
        1,
        True,
    )
    assert (event.error, event.cache_write_tokens, event.attempts) == (None, 0, 2)


def test_the_new_fields_round_trip_and_bad_ones_are_reported():
    event = event_from_json(
        {
            "id": "c-2",
            "timestamp": "2025-03-10T12:00:00Z",
            "model": "a/b",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "endpoint": "messages",
            "key": "alice",
            "team": "platform",
            "call_id": "c",
            "attempt": 2,
            "final": False,
            "error": "timeout",
            "status": 504,
            "cache_write_tokens": 0,
        }
    )
    assert event_from_json(orjson.loads(event_line(event))) == event
    assert orjson.loads(event_line(event))["final"] is False
    [(_, bad)] = list(
        parse_lines(
            [
                b'{"id":"x","timestamp":"2025-03-10T12:00:00Z","model":"a/b","prompt_tokens":1,'
                b'"completion_tokens":1,"attempt":0,"endpoint":"Chat!"}'
            ]
        )
    )
    assert isinstance(bad, BadLine) and "attempt" in bad.reason and "endpoint" in bad.reason


def test_a_bad_lines_reason_quotes_its_value_bounded():
    """A `tokens` of 10,000 characters came back whole, on one stderr line per such line."""
    line = orjson.loads(event_line(EVENTS[0])) | {"tokens": "z" * 10_000}
    [(number, bad)] = list(parse_lines([orjson.dumps(line)]))
    assert number == 1 and isinstance(bad, BadLine)
    assert bad.reason.startswith("tokens is 'zzz") and "z" * 198 + "…" in bad.reason and len(bad.reason) < 300


def test_an_import_whose_write_fails_raises_that_failure_without_writing_again():
    """Review: the cleanup that writes the lines read before a read failure wrote a batch
    whose own write had failed a second time (twice the wait on a locked store, and the
    second error raised in place of the first)."""
    import asyncio

    import pytest

    from gateway.usage.jsonl import import_lines

    class FailingStore:
        def __init__(self) -> None:
            self.writes = 0

        async def import_events(self, batch):
            self.writes += 1
            raise OSError(f"write {self.writes} failed")

    store = FailingStore()
    lines = [event_line(event) for event in EVENTS[:3]]
    with pytest.raises(OSError, match="write 1 failed"):
        asyncio.run(import_lines(store, lines, batch_size=2))
    assert store.writes == 1

    def lines_then_a_read_error():
        yield lines[0]
        raise OSError("EIO")

    written: list = []

    class Store:
        async def import_events(self, batch):
            written.extend(batch)
            return len(batch)

    with pytest.raises(OSError, match="EIO"):
        asyncio.run(import_lines(Store(), lines_then_a_read_error(), batch_size=2))
    assert written == [EVENTS[0]]  # the line read before the failure is imported
