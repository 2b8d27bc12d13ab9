"""`gateway rankings` rendering: human token units, change arrows, growth percentages."""

from __future__ import annotations

import io

import pytest

from gateway.cli.rankings import change, human_tokens, percent, render
from tests.usage.fixtures import EXPECTED


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1K"),
        (1500, "1.5K"),
        (12_345, "12.3K"),
        (999_999, "1M"),
        (1_234_567, "1.23M"),
        (791_000_000_000, "791B"),
        (999_500_000_000, "1T"),
        (2_500_000_000_000, "2.5T"),
        (-2500, "-2.5K"),
    ],
)
def test_tokens_in_human_units(count, text):
    assert human_tokens(count) == text


def test_change_arrows(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert change(1, 3) == "▲2"
    assert change(4, 2) == "▼2"
    assert change(2, 2) == "="
    assert change(5, None) == "new"


def test_change_arrows_fall_back_to_ascii_on_terminals_that_cannot_show_them(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert (change(1, 3), change(4, 2)) == ("^2", "v2")


def test_growth_is_signed_and_missing_growth_is_a_dash():
    assert percent(0.25, signed=True) == "+25.0%"
    assert percent(-0.7, signed=True) == "-70.0%"
    assert percent(None, signed=True) == "-"


def test_render_shows_every_table_without_throughput_when_there_is_none():
    text = render({**EXPECTED, "throughput": []})
    for heading in ("Top models", "Market share by author", "Category: programming", "Top apps", "Trending apps"):
        assert heading in text
    assert "Throughput" not in text


def test_render_shows_each_providers_uptime_in_the_throughput_table():
    row = {
        "model": "qwen/qwen3-32b",
        "backend": "groq",
        "median_tokens_per_second": 400.0,
        "median_latency_ms": 500.0,
        "median_ttft_ms": 50.0,
        "input_price": 0.29,
        "output_price": 0.59,
        "attempts": 2,
        "attempts_failed": 1,
        "uptime": 0.5,
    }
    never_tried = {**row, "backend": "idle", "attempts": 0, "attempts_failed": 0, "uptime": None}
    lines = render({**EXPECTED, "throughput": [row, never_tried]}).splitlines()
    header = lines.index("Throughput (medians)") + 1
    assert lines[header].split()[-1] == "UPTIME"
    assert lines[header + 1].split()[-1] == "50.0%" and lines[header + 2].split()[-1] == "-"
