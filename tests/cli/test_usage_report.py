"""`gateway usage report`: spend per key, team or model, read from the store by the real CLI."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from gateway.usage.events import UsageEvent
from gateway.usage.jsonl import event_line
from gateway.usage.spend import spend_report, window_of
from tests.e2e.usage_helpers import gateway_cli


def _event(id, day, key, team, model, prompt, completion, cost, *, status=200, final=True):
    return UsageEvent(
        id=id,
        timestamp=datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=UTC),
        model=model,
        backend="up",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=cost,
        status=status,
        key=key,
        team=team,
        final=final,
    )


# March 2025: alice (red) 3 calls, bob (blue) 2 (one failed after a failed attempt), an open call.
EVENTS = [
    _event("a1", "2025-03-03", "alice", "red", "qwen/qwen3-32b", 100, 50, 0.25),
    _event("a2", "2025-03-10", "alice", "red", "deepseek/deepseek-v3.2", 1000, 500, 1.5),
    _event("a3", "2025-03-12", "alice", "red", "qwen/qwen3-32b", 10, 5, 0.125),
    _event("b0", "2025-03-12", "bob", "blue", "qwen/qwen3-32b", 0, 0, 0.0, status=502, final=False),
    _event("b1", "2025-03-12", "bob", "blue", "qwen/qwen3-32b", 200, 100, 0.5),
    _event("b2", "2025-03-16", "bob", "blue", "qwen/qwen3-32b", 0, 0, 0.0, status=429),
    _event("o1", "2025-03-31", None, None, "deepseek/deepseek-v3.2", 40, 20, 0.0625),
    _event("x1", "2025-04-01", "alice", "red", "qwen/qwen3-32b", 9999, 9999, 99.0),  # next month
    _event("x2", "2025-02-28", "bob", "blue", "qwen/qwen3-32b", 9999, 9999, 99.0),  # month before
]


def test_windows_are_the_budgets_calendar_ones():
    assert window_of("day", date(2025, 3, 12)) == (date(2025, 3, 12), date(2025, 3, 12))
    assert window_of("week", date(2025, 3, 12)) == (date(2025, 3, 10), date(2025, 3, 16))  # ISO week, Mon-Sun
    assert window_of("month", date(2025, 3, 12)) == (date(2025, 3, 1), date(2025, 3, 31))
    assert window_of("month", date(2024, 12, 31)) == (date(2024, 12, 1), date(2024, 12, 31))
    assert window_of("month", date(2024, 2, 10)) == (date(2024, 2, 1), date(2024, 2, 29))
    with pytest.raises(ValueError):
        window_of("year", date(2025, 3, 12))


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(event_line(e) for e in EVENTS))
    data = tmp_path / "data"
    done = gateway_cli("usage", "import", str(path), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return data


def report(data, *args: str) -> dict:
    done = gateway_cli("usage", "report", *args, "--json", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_spend_by_key_for_a_month(data_dir):
    body = report(data_dir, "--by", "key", "--window", "month", "--end", "2025-03-12")
    assert body["window"] == {"name": "month", "start": "2025-03-01", "end": "2025-03-31"}
    rows = {row["key"]: row for row in body["rows"]}
    assert [row["key"] for row in body["rows"]] == ["alice", "bob", "(no key)"]  # most spent first
    assert rows["alice"] == {
        "key": "alice", "requests": 3, "failed": 0, "prompt_tokens": 1110, "completion_tokens": 555,
        "tokens": 1665, "cost_usd": 1.875,
    }  # fmt: skip
    # bob: the failed attempt before b1 is not a request; b2 (429) is one, and failed.
    assert (rows["bob"]["requests"], rows["bob"]["failed"], rows["bob"]["cost_usd"]) == (2, 1, 0.5)
    assert rows["(no key)"]["cost_usd"] == 0.0625
    assert body["totals"]["requests"] == 6 and body["totals"]["cost_usd"] == 1.875 + 0.5 + 0.0625


def test_spend_by_team_and_model_for_a_week_and_a_day(data_dir):
    week = report(data_dir, "--by", "team", "--window", "week", "--end", "2025-03-14")
    assert week["window"]["start"] == "2025-03-10" and week["window"]["end"] == "2025-03-16"
    assert [(r["team"], r["requests"], r["cost_usd"]) for r in week["rows"]] == [("red", 2, 1.625), ("blue", 2, 0.5)]
    day = report(data_dir, "--by", "model", "--window", "day", "--end", "2025-03-12")
    assert [(r["model"], r["requests"], r["tokens"]) for r in day["rows"]] == [("qwen/qwen3-32b", 2, 315)]


def test_the_table_shows_every_row_and_the_total(data_dir):
    done = gateway_cli(
        "usage", "report", "--by", "team", "--window", "month", "--end", "2025-03-01", "--data-dir", str(data_dir)
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "Spend by team, month 2025-03-01 – 2025-03-31 (UTC)"
    assert lines[1].split() == ["Team", "Requests", "Failed", "Prompt", "Completion", "Tokens", "Cost", "(USD)"]
    assert lines[2].split() == ["red", "3", "0", "1.11K", "555", "1.67K", "$1.875"]
    assert lines[3].split() == ["blue", "2", "1", "200", "100", "300", "$0.50"]
    assert lines[4].split() == ["(no", "team)", "1", "0", "40", "20", "60", "$0.0625"]
    assert lines[5].split() == ["Total", "6", "1", "1.35K", "675", "2.02K", "$2.4375"]
    assert "gateway usage report reads SQLite" in done.stderr.decode()


def test_an_empty_window_and_bad_arguments(data_dir):
    empty = gateway_cli("usage", "report", "--window", "day", "--end", "2030-01-01", "--data-dir", str(data_dir))
    assert empty.returncode == 0 and "No usage recorded in this window." in empty.stdout.decode()
    bad = gateway_cli("usage", "report", "--end", "March", "--data-dir", str(data_dir))
    assert bad.returncode == 2 and "--end must be YYYY-MM-DD" in bad.stderr.decode()
    assert gateway_cli("usage", "report", "--by", "app", "--data-dir", str(data_dir)).returncode == 2


def test_the_report_reads_redis_when_configured(tmp_path, redis_server):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(event_line(e) for e in EVENTS))
    # Kept past the default 35 days of raw events, which would expire 2025's streams at once.
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_EVENTS_RETENTION_DAYS": "0"}
    assert gateway_cli("usage", "import", str(path), env=env).returncode == 0
    done = gateway_cli("usage", "report", "--by", "key", "--window", "month", "--end", "2025-03-05", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert [(r["key"], r["cost_usd"]) for r in json.loads(done.stdout)["rows"]] == [
        ("alice", 1.875), ("bob", 0.5), ("(no key)", 0.0625),
    ]  # fmt: skip
    assert spend_report(EVENTS, "key", "month", date(2025, 3, 1), date(2025, 3, 31)) == json.loads(done.stdout)


def test_a_report_short_of_the_ledgers_daily_totals_says_what_it_misses(tmp_path, redis_server):
    """Hostile testing: the report sums raw events, which Redis keeps in a stream per day
    trimmed at about 1,000,000 entries (and which may live in an `allkeys-lru` Redis of their
    own), while budgets and the daily aggregates count every call. A day whose stream lost
    entries gave a report short of what the keys were billed, and nothing said so. The
    report now compares each day with the aggregates and names what it misses."""
    import redis

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(event_line(e) for e in EVENTS))
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_EVENTS_RETENTION_DAYS": "0"}
    assert gateway_cli("usage", "import", str(path), env=env).returncode == 0
    # What a trim past the day's bound, or an eviction, leaves of 2025-03-10: no raw events
    # (alice's a2, $1.50), its aggregates whole.
    client = redis.Redis.from_url(redis_server.url)
    assert client.xtrim("{usage:2025-03-10}:events", maxlen=0) == 1
    client.close()

    done = gateway_cli("usage", "report", "--by", "key", "--window", "month", "--end", "2025-03-05", "--json", env=env)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [(r["key"], r["requests"], r["cost_usd"]) for r in body["rows"]] == [
        ("bob", 2, 0.5), ("alice", 2, 0.375), ("(no key)", 1, 0.0625),
    ]  # fmt: skip
    assert body["missing"] == {"requests": 1, "cost_usd": 1.5, "days": ["2025-03-10"]}
    warning = "the ledger counts 1 more call ($1.50) in this window than its raw events hold (2025-03-10)"
    assert warning in done.stderr.decode()
    table = gateway_cli("usage", "report", "--by", "team", "--window", "week", "--end", "2025-03-10", env=env)
    assert table.returncode == 0, table.stderr
    assert warning in table.stdout.decode()
    # A window whose events are whole says nothing of the kind.
    whole = gateway_cli("usage", "report", "--window", "day", "--end", "2025-03-12", "--json", env=env)
    assert "missing" not in json.loads(whole.stdout) and "more call" not in whole.stderr.decode()


def test_a_continued_call_is_billed_once_by_its_final_row():
    # A stream cut after 40 tokens on one backend and continued on another: the broken
    # attempt's row repeats its 40 delivered tokens for the operator; the final row holds the
    # whole bill (gateway.usage.events). The key's spend is the final row, once.
    broken = _event("c1-1", "2025-03-12", "carol", "red", "qwen/qwen3-32b", 9, 40, 0.25, status=502, final=False)
    final = _event("c1-2", "2025-03-12", "carol", "red", "z-ai/glm-5", 9, 60, 0.375)
    line = spend_report([broken, final], "key", "day", date(2025, 3, 12), date(2025, 3, 12))["rows"][0]
    assert (line["key"], line["requests"], line["failed"]) == ("carol", 1, 0)
    assert (line["prompt_tokens"], line["completion_tokens"], line["cost_usd"]) == (9, 60, 0.375)


@pytest.mark.parametrize("window", ["day", "week", "month"])
def test_the_windows_at_the_calendars_edges_are_reports_not_tracebacks(data_dir, window):
    """The week or month holding 9999-12-31 ended a day past what `date` holds (a traceback);
    it ends at 9999-12-31. And `gateway rankings` at year 1 says which parameter is wrong."""
    assert window_of("week", date(9999, 12, 31)) == (date(9999, 12, 27), date(9999, 12, 31))
    assert window_of("month", date(9999, 12, 31)) == (date(9999, 12, 1), date(9999, 12, 31))
    for end in ("9999-12-31", "0001-01-01"):
        done = gateway_cli("usage", "report", "--window", window, "--end", end, "--data-dir", str(data_dir))
        assert done.returncode == 0 and "No usage recorded in this window." in done.stdout.decode(), done.stderr
    early = gateway_cli("rankings", "--window", window, "--end", "0001-01-01", "--data-dir", str(data_dir))
    assert early.returncode == 2 and "`end` 0001-01-01 is too early" in early.stderr.decode()
    assert "Traceback" not in early.stderr.decode()


def test_an_export_to_a_file_that_cannot_be_written_says_so(data_dir, tmp_path):
    done = gateway_cli(
        "usage", "export", "--start", "2025-03-01", "--end", "2025-03-02",
        "--output", str(tmp_path / "missing" / "march.jsonl"), "--data-dir", str(data_dir),
    )  # fmt: skip
    assert done.returncode == 2 and "gateway usage export: [Errno 2]" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


_PEAK_RSS = (
    "import resource, sys\n"
    "from gateway.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _report_peak_kib(data: str, end: str) -> tuple[dict, int]:
    import os
    import subprocess
    import sys

    from tests.e2e.usage_helpers import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"PYTHONPATH": str(REPO), "GATEWAY_DATA_DIR": data}
    args = ["usage", "report", "--by", "key", "--window", "day", "--end", end, "--json"]
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *args], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    peak = next(line for line in done.stderr.decode().splitlines() if line.startswith("peak-rss-kib"))
    return json.loads(done.stdout), int(peak.split()[1])


def test_a_report_sums_events_as_it_reads_them_not_all_at_once(tmp_path):
    """A report over a busy window (Redis keeps about a million events a day, a month tens of
    millions) read every event into a list before summing it, a few hundred bytes each: 80,000
    events added about 30 MB to the process's peak. Summed as read, they add under 3 MB to
    what a window with no events takes."""
    from datetime import timedelta

    start = datetime(2025, 3, 3, tzinfo=UTC)
    events = (
        UsageEvent(
            id=f"e{i:06d}",
            timestamp=start + timedelta(seconds=i % 80_000),
            model="qwen/qwen3-32b",
            backend="up",
            prompt_tokens=100,
            completion_tokens=50,
            cost=0.001,
            key=f"k{i % 5}",
            team="red",
        )
        for i in range(80_000)
    )
    path = tmp_path / "events.jsonl"
    with path.open("wb") as out:
        out.writelines(event_line(e) for e in events)
    data = str(tmp_path / "data")
    assert gateway_cli("usage", "import", str(path), env={"GATEWAY_DATA_DIR": data}).returncode == 0

    empty, baseline = _report_peak_kib(data, "2025-03-04")  # the same store, a day without events
    assert empty["totals"]["requests"] == 0
    body, peak = _report_peak_kib(data, "2025-03-03")
    assert [(row["key"], row["requests"]) for row in body["rows"]] == [(f"k{i}", 16_000) for i in range(5)]
    assert body["totals"]["requests"] == 80_000 and "missing" not in body
    assert peak - baseline < 12_000, f"peak {peak} KiB against {baseline} KiB for an empty window"
