"""A usage database made by an older gateway opens, migrates once, and keeps its rows."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, date, datetime

from gateway.usage.events import UsageEvent
from gateway.usage.rankings import ranking_query
from gateway.usage.sqlite_store import SCHEMA_VERSION, SqliteUsageStore
from tests.usage.fixtures import billed_call

# The schema as the gateway created it before schema versions (user_version 0), verbatim.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    timestamp TEXT NOT NULL,
    day TEXT NOT NULL,
    route TEXT,
    model TEXT NOT NULL,
    author TEXT NOT NULL,
    backend TEXT NOT NULL,
    category TEXT NOT NULL,
    app TEXT,
    app_title TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    latency_ms REAL,
    ttft_ms REAL,
    tokens_per_second REAL,
    status INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS events_by_day ON events (day, timestamp, id);
CREATE TABLE IF NOT EXISTS aggregates (
    day TEXT NOT NULL,
    part TEXT NOT NULL,
    field TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (day, part, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_titles (
    day TEXT NOT NULL,
    app TEXT NOT NULL,
    title TEXT NOT NULL,
    PRIMARY KEY (day, app)
) WITHOUT ROWID;
"""

DAY = date(2025, 3, 10)


def old_database(path) -> None:
    """Two events and their aggregates, as the old code wrote them."""
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        for n, (app, prompt) in enumerate((("https://cline.bot", 100), (None, 40)), 1):
            conn.execute(
                "INSERT INTO events VALUES (?, ?, '2025-03-10', 'auto', 'qwen/qwen3-32b', 'qwen', 'vllm', 'chat',"
                " ?, NULL, ?, 10, 0, 0, 0.5, 900.0, 100.0, 40.0, 200, 1, 0, ?)",
                (f"old{n}", f"2025-03-10T1{n}:00:00.000000Z", app, prompt, f"req-{n}"),
            )
        for name, value in (("requests", 2), ("prompt", 140), ("completion", 20)):
            conn.execute(
                "INSERT INTO aggregates VALUES ('2025-03-10', 'model', ?, ?)", (f"qwen/qwen3-32b\x1f{name}", value)
            )


def columns(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(events)")]


def user_version(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


async def test_an_old_database_is_migrated_and_its_rows_read_with_the_new_fields_defaults(tmp_path):
    path = tmp_path / "usage.sqlite3"
    old_database(path)
    assert user_version(path) == 0 and "call_id" not in columns(path)

    store = SqliteUsageStore(path)
    old = [e async for e in store.export(DAY, DAY)]
    assert [(e.id, e.prompt_tokens, e.app, e.request_id) for e in old] == [
        ("old1", 100, "https://cline.bot", "req-1"),
        ("old2", 40, None, "req-2"),
    ]
    assert {(e.endpoint, e.key, e.team, e.call_id, e.attempt, e.final, e.error, e.cache_write_tokens) for e in old} == {
        ("chat", None, None, None, 1, True, None, 0)
    }
    new = UsageEvent(
        id="new-1",
        timestamp=datetime(2025, 3, 10, 15, tzinfo=UTC),
        model="qwen/qwen3-32b",
        backend="vllm",
        prompt_tokens=7,
        completion_tokens=3,
        key="alice",
        call_id="new",
        cache_write_tokens=5,
        endpoint="messages",
    )
    assert await store.record([new]) == 1
    rows = [e async for e in store.export(DAY, DAY)]
    assert [e.id for e in rows] == ["old1", "old2", "new-1"] and rows[-1] == new
    totals = (await store.rankings(ranking_query("day", DAY.isoformat(), 10)))["totals"]
    assert (totals["requests"], totals["tokens"]) == (3, 170)  # the old aggregates kept, the new added
    await store.aclose()
    assert user_version(path) == SCHEMA_VERSION
    assert columns(path)[-8:] == [
        "endpoint",
        "key",
        "team",
        "call_id",
        "attempt",
        "final",
        "error",
        "cache_write_tokens",
    ]


async def rows_of(store: SqliteUsageStore) -> list[UsageEvent]:
    return [e async for e in store.export(DAY, DAY)]


async def test_three_connections_opening_an_old_database_at_once_migrate_it_once(tmp_path):
    # Each store opens the file on its own thread, as three gateway processes would at once.
    path = tmp_path / "usage.sqlite3"
    old_database(path)
    stores = [SqliteUsageStore(path) for _ in range(3)]
    exported = await asyncio.gather(*(rows_of(s) for s in stores))
    assert [len(rows) for rows in exported] == [2, 2, 2]
    for s in stores:
        await s.aclose()
    assert columns(path).count("call_id") == 1 and user_version(path) == SCHEMA_VERSION


async def test_a_new_database_starts_at_the_current_version(tmp_path, caplog):
    # Without a word of migration (a new user read "schema migrated from version 0 to 2" on
    # a brand-new data directory); an old file's migration is logged.
    caplog.set_level("INFO", logger="gateway.usage")
    store = SqliteUsageStore(tmp_path / "usage.sqlite3")
    assert [e async for e in store.export(DAY, DAY)] == []
    await store.aclose()
    assert user_version(tmp_path / "usage.sqlite3") == SCHEMA_VERSION
    assert "migrated" not in caplog.text
    old_database(tmp_path / "old.sqlite3")
    store = SqliteUsageStore(tmp_path / "old.sqlite3")
    assert len([e async for e in store.export(DAY, DAY)]) == 2
    await store.aclose()
    assert f"schema migrated from version 0 to {SCHEMA_VERSION}" in caplog.text


async def _version_1_database(path) -> list[UsageEvent]:
    """A file as version 1 left it: events of keys and teams, and no `spend` table (made by
    today's store, then the table dropped and the version set back)."""
    calls = [
        billed_call(f"v1-{n}", day, n, key, team, cost, final)
        for n, (day, key, team, cost, final) in enumerate(
            [
                (9, "alice", None, 0.5, True),
                (10, "alice", None, 0.25, True),
                (10, "alice", None, 0.125, True),
                (10, "alice", None, 9.0, False),  # a failed attempt's row: not billed
                (10, "bob", "platform", 0.75, True),
                (10, None, None, 4.0, True),  # no key, no team: nobody's budget
            ]
        )
    ]
    store = SqliteUsageStore(path)
    assert await store.record(calls) == len(calls)
    await store.aclose()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE spend")
        conn.execute("PRAGMA user_version = 1")
    return calls


async def test_version_2_fills_the_spend_table_from_the_events_once(tmp_path):
    """What budgets start from without Redis: a file of version 1 has events but no `spend`
    table; opening it (three processes at once) fills the table from them once, and new
    calls add to it."""
    path = tmp_path / "usage.sqlite3"
    await _version_1_database(path)
    stores = [SqliteUsageStore(path) for _ in range(3)]
    seen = await asyncio.gather(*(s.day_spends(date(2025, 3, 10)) for s in stores))
    expected = [("alice", None, "2025-03-10", 375_000_000), ("bob", "platform", "2025-03-10", 750_000_000)]
    for spends in seen:
        assert sorted((s.key, s.team, s.day.isoformat(), s.cost_nanos) for s in spends) == expected
    later = UsageEvent(
        id="v2-1",
        timestamp=datetime(2025, 3, 10, 18, tzinfo=UTC),
        model="qwen/qwen3-32b",
        backend="vllm",
        prompt_tokens=1,
        completion_tokens=1,
        cost=0.001,
        key="alice",
    )
    assert await stores[0].record([later]) == 1
    spends = await stores[1].day_spends(date(2025, 3, 1))
    assert sorted((s.key, s.day.isoformat(), s.cost_nanos) for s in spends) == [
        ("alice", "2025-03-09", 500_000_000),
        ("alice", "2025-03-10", 376_000_000),
        ("bob", "2025-03-10", 750_000_000),
    ]
    for s in stores:
        await s.aclose()
    assert user_version(path) == SCHEMA_VERSION


async def test_a_file_from_a_newer_gateway_is_used_with_a_warning_and_left_at_its_version(tmp_path, caplog):
    """A gateway rolled back to an older version opens the file the newer one migrated: it
    reads and writes the columns it knows (a newer one's are added with defaults), says so
    once per store, and leaves the file's version as it is for the newer gateway."""
    caplog.set_level("INFO", logger="gateway.usage")
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path)
    assert [e async for e in store.export(DAY, DAY)] == []
    await store.aclose()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE events ADD COLUMN from_the_future TEXT NOT NULL DEFAULT ''")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SqliteUsageStore(path)
    event = UsageEvent(
        id="e-1",
        timestamp=datetime(2025, 3, 10, 15, tzinfo=UTC),
        model="qwen/qwen3-32b",
        prompt_tokens=7,
        completion_tokens=3,
    )
    assert await store.record([event]) == 1
    assert [e async for e in store.export(DAY, DAY)] == [event]
    await store.aclose()
    assert user_version(path) == SCHEMA_VERSION + 1
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "newer" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert warned[0].getMessage() == (
        f"usage store: {path} has schema version {SCHEMA_VERSION + 1}, newer than this gateway's "
        f"{SCHEMA_VERSION} (a newer gateway wrote it): this one reads and writes the fields it knows"
    )
