"""The per-day counters: summed per group of like events, they equal the per-event increments."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from gateway.usage.aggregates import SEP, IncrementBatch, event_increments
from tests.usage.fixtures import varied_events


def increments_one_by_one(events) -> dict:
    sums: Counter = Counter()
    for event in events:
        for part, name, value in event_increments(event):
            sums[(event.day, part, name)] += value
    return dict(sums)


def test_a_batch_sums_exactly_the_increments_of_its_events():
    events = varied_events(2000)
    batch = IncrementBatch()
    for event in events:
        batch.add(event)
    assert batch.sums == increments_one_by_one(events)
    assert {part for (_, part, _) in batch.sums} == {"model", "offer", "category", "app", "hist"}


def test_increments_skip_zeros_and_keep_failures_out_of_the_timings():
    failed, ok = varied_events(2)
    failed.status, failed.prompt_tokens, failed.completion_tokens, failed.cost, failed.app = 502, 0, 0, 0.0, None
    names = {name for _, name, _ in event_increments(failed)}
    assert f"{failed.model}{SEP}failed" in names and f"{failed.model}{SEP}requests" in names
    assert not any(name.endswith((f"{SEP}prompt", f"{SEP}cost_nanos")) for name in names)
    # Its only histogram entry is its provider's failed attempt (uptime), no timing.
    assert [(p, n, v) for p, n, v in event_increments(failed) if p == "hist"] == [
        ("hist", f"{failed.backend}{SEP}{failed.model}{SEP}attempts{SEP}0", 1)
    ]
    ok.status, ok.latency_ms = 200, 1000.0
    assert ("hist", f"{ok.backend}{SEP}{ok.model}{SEP}latency_ms{SEP}79", 1) in event_increments(
        ok
    )  # 2**(79/8) <= 1000 < 2**(80/8)


def test_an_event_added_many_times_on_a_day_counts_that_many_times():
    event = varied_events(1)[0]
    day = event.day + timedelta(days=3)
    once_each, at_once = IncrementBatch(), IncrementBatch()
    for _ in range(5):
        once_each.add(event, day=day)
    at_once.add(event, times=5, day=day)
    assert at_once.sums == once_each.sums and {d for (d, _, _) in at_once.sums} == {day}


def test_counters_and_usage_share_the_token_fields_and_add_sums_every_field():
    """One definition of the token fields (`TokenCounts`); `Counters.add` is written out for
    speed, so this checks it misses no field, inherited or its own."""
    from dataclasses import fields

    from gateway.proxy.usage import TokenCounts, Usage
    from gateway.usage.aggregates import Counters

    tokens = [f.name for f in fields(TokenCounts)]
    assert [f.name for f in fields(Usage)][: len(tokens)] == tokens
    assert [f.name for f in fields(Counters)][: len(tokens)] == tokens
    names = [f.name for f in fields(Counters)]
    a = Counters(*range(1, len(names) + 1))
    b = Counters(*(10 * i for i in range(1, len(names) + 1)))
    a.add(b)
    assert [getattr(a, n) for n in names] == [11 * i for i in range(1, len(names) + 1)]
    assert a.tokens == a.total_tokens == 11 + 22
    assert not hasattr(a, "__dict__") and not hasattr(Usage(), "__dict__")  # slots kept


def test_an_attempt_counts_for_or_against_its_provider_unless_the_request_decided_it():
    from dataclasses import replace

    from gateway.usage.aggregates import ANSWERED, FAILED, attempt_outcome

    row = varied_events(1)[0]
    cases = {
        (200, None): ANSWERED,
        (502, "upstream_error"): FAILED,
        (502, "upstream_auth_failed"): FAILED,  # the gateway's key for that backend is wrong
        (503, "http_503"): FAILED,
        (504, "timeout"): FAILED,
        (429, "rate_limited"): FAILED,
        (408, "http_408"): FAILED,
        (404, "misconfigured"): FAILED,  # a wrong upstream_id: the backend entry's fault
        (499, "client_disconnected"): None,
        (400, "context_length_exceeded"): None,
        (400, "context_length"): None,
        (400, "upstream_rejected_request"): None,  # the upstream refused the request itself
        (422, "http_422"): None,
        # An answer over the gateway's size bound: the request asked for that much.
        (502, "response_too_large"): None,
        # The gateway ended the call: its shutdown mid-answer, its own fault after the answer.
        (503, "shutdown"): None,
        (500, "internal_error"): None,
    }
    for final in (True, False):
        for (status, error), expected in cases.items():
            event = replace(row, status=status, error=error, final=final)
            assert attempt_outcome(event) == expected, (status, error, final)
