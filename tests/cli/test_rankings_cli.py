"""`gateway rankings` rendering: human token units, change arrows, growth percentages; and the
command as an admin runs it: the policy it reads prices from, the JSON it prints."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from gateway.cli.rankings import change, human_tokens, percent, render
from tests.support.services import REPO
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


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m gateway ARGS` from the checkout, with no GATEWAY_* setting but `env`'s."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        env={**inherited, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_named_policy_that_does_not_exist_is_refused_as_models_refuses_it(tmp_path):
    """`--config` (or GATEWAY_CONFIG) naming a missing file ranked without prices, exit 0: a
    typo passed for a policy without any. Refused now, before the store is opened."""
    missing = tmp_path / "typo.yaml"
    data = tmp_path / "data"
    said = [f"{missing}: 1 problem(s)", "  - <file>: cannot read the file: No such file or directory"]
    for flags, env in (
        (["--config", str(missing)], {}),
        ([], {"GATEWAY_CONFIG": str(missing)}),
    ):
        done = gateway("rankings", "--data-dir", str(data), *flags, env=env)
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert done.stderr.splitlines() == said
        assert gateway("models", *flags, env=env).stderr.splitlines() == said  # the same words
    assert not data.exists()


def test_rankings_json_says_whose_traffic_it_counts_as_the_api_does(tmp_path):
    """GET /v1/rankings answers with `scope`; the CLI's JSON, said to be that answer, had none.
    It ranks the whole store: everything, no key or team filter."""
    done = gateway("rankings", "--window", "day", "--json", "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["scope"] == {"key": None, "team": None, "all_visible": True}
    assert list(body) == [
        "window", "previous_window", "totals", "models", "others", "authors", "categories", "apps", "throughput",
        "scope",
    ]  # fmt: skip
    assert body["window"]["name"] == "day" and body["totals"]["requests"] == 0
