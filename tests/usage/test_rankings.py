"""The rankings computed from aggregates alone (no store): the hand-computed fixture, medians, series."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from gateway.usage.aggregates import SEP, DayRows, IncrementBatch, bucket_of
from gateway.usage.rankings import (
    Period,
    QueryError,
    RankingQuery,
    _median,
    compute_rankings,
    compute_series,
    ranking_query,
    series_query,
)
from tests.usage.fixtures import EVENTS, EXPECTED, EXPECTED_THROUGHPUT, WEEK_END


def aggregates_of(events) -> dict[date, DayRows]:
    """What a store would hold: the events' increments summed per day."""
    batch = IncrementBatch()
    for event in events:
        batch.add(event)
    days: dict[date, DayRows] = {}
    for (day, part, name), value in batch.sums.items():
        days.setdefault(day, DayRows()).parts.setdefault(part, {})[name] = value
    for (day, app), title in batch.titles.items():
        days.setdefault(day, DayRows()).titles[app] = title
    return days


def test_fixture_rankings_match_the_hand_computed_ones():
    body = compute_rankings(ranking_query("week", WEEK_END, 3), aggregates_of(EVENTS))
    throughput = body.pop("throughput")
    assert body == EXPECTED
    assert [(t["model"], t["backend"], t["requests"]) for t in throughput] == [r[:3] for r in EXPECTED_THROUGHPUT]
    for row, (_, _, _, tps, latency, ttft) in zip(throughput, EXPECTED_THROUGHPUT):
        assert row["median_tokens_per_second"] == pytest.approx(tps, rel=0.05)
        assert row["median_latency_ms"] == pytest.approx(latency, rel=0.05)
        assert row["median_ttft_ms"] == pytest.approx(ttft, rel=0.05)


def test_prices_come_from_the_config_and_effective_cost_from_the_ledger():
    prices = {("deepseek", "deepseek/deepseek-v3.2"): (0.28, 0.42)}
    body = compute_rankings(ranking_query("week", WEEK_END, 3), aggregates_of(EVENTS), prices)
    row = body["throughput"][0]
    assert (row["input_price"], row["output_price"]) == (0.28, 0.42)
    assert row["cost_per_million_tokens"] == pytest.approx(0.2 / 600_000 * 1e6, rel=1e-5)
    assert body["throughput"][1]["input_price"] is None


def test_an_empty_window_ranks_nothing_without_dividing_by_zero():
    body = compute_rankings(ranking_query("day", "2030-01-01", 5), aggregates_of(EVENTS))
    assert body["models"] == [] and body["authors"] == [] and body["throughput"] == []
    assert body["others"] == {"models": 0, "tokens": 0, "share": 0.0}
    assert body["totals"]["growth"] is None


def test_month_window_and_previous_window_bounds():
    query = RankingQuery("month", date(2025, 3, 31))
    assert query.period == Period(date(2025, 3, 2), date(2025, 3, 31))
    assert query.period.before(1) == Period(date(2025, 1, 31), date(2025, 3, 1))
    assert query.spans()["app"].start == date(2024, 12, 2)  # three preceding windows (90 days) for the trend


def test_ties_are_broken_by_name_so_every_replica_agrees():
    from tests.usage.fixtures import _event

    events = [
        _event("a", "2025-03-10T00:00:00", "b/model", "x", 10, 0),
        _event("b", "2025-03-10T00:00:00", "a/model", "x", 10, 0),
    ]
    body = compute_rankings(ranking_query("day", "2025-03-10", 5), aggregates_of(events))
    assert [m["model"] for m in body["models"]] == ["a/model", "b/model"]


def test_median_of_histogram_is_within_a_bucket_of_the_true_median():
    values = [12.0, 35.0, 36.0, 37.5, 80.0, 81.0, 400.0]  # true median 37.5
    histogram: dict[int, int] = {}
    for v in values:
        histogram[bucket_of(v)] = histogram.get(bucket_of(v), 0) + 1
    assert _median(histogram) == pytest.approx(37.5, rel=0.05)
    assert _median({}) is None


def test_series_sums_tokens_per_week_with_an_others_band():
    body = compute_series(series_query("week", 4, WEEK_END, 2), aggregates_of(EVENTS))
    assert [p["start"] for p in body["periods"]] == ["2025-02-17", "2025-02-24", "2025-03-03", "2025-03-10"]
    assert body["totals"] == [1_200_000, 600_000, 800_000, 1_000_000]
    # Over the four weeks qwen leads (2.5M), then deepseek (900k); the rest is `others`.
    assert [m["model"] for m in body["models"]] == ["qwen/qwen3-32b", "deepseek/deepseek-v3.2"]
    assert body["models"][0]["tokens"] == [1_200_000, 600_000, 400_000, 300_000]
    assert body["others"] == [0, 0, 100_000, 100_000]


def test_daily_series_has_one_bar_per_day():
    body = compute_series(series_query("day", 7, WEEK_END, 10), aggregates_of(EVENTS))
    assert len(body["periods"]) == 7 and body["periods"][-1] == {"start": WEEK_END, "end": WEEK_END, "days": 1}
    assert sum(body["totals"]) == 1_000_000


@pytest.mark.parametrize(
    ("args", "param"),
    [
        (("year", None, None), "window"),
        (("week", "2025-13-01", None), "end"),
        (("week", None, "0"), "limit"),
        (("week", None, "many"), "limit"),
        (("week", None, "100000"), "limit"),
    ],
)
def test_bad_query_parameters_name_the_parameter(args, param):
    with pytest.raises(QueryError) as info:
        ranking_query(*args)
    assert info.value.param == param


def test_series_query_rejects_unknown_granularity():
    with pytest.raises(QueryError) as info:
        series_query("hour", None, None, None)
    assert info.value.param == "granularity"


def test_rows_whose_names_hold_the_separator_are_skipped_not_a_failed_ranking():
    """A store written before names were checked can hold a name with the field separator in
    it: its rows split into too many parts. The ranking leaves them out, as it leaves out a
    metric from a newer version, instead of answering 500 until retention drops the day."""
    broken = replace(EVENTS[0], id="broken", backend=f"old{SEP}backend", model=f"old/{SEP}model")
    body = compute_rankings(ranking_query("week", WEEK_END, 3), aggregates_of([*EVENTS, broken]))
    throughput = body.pop("throughput")
    assert [(t["model"], t["backend"], t["requests"]) for t in throughput] == [r[:3] for r in EXPECTED_THROUGHPUT]
    assert body["models"] == EXPECTED["models"]
