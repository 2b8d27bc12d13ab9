"""The embedded usage store: one SQLite file (WAL) in the data dir, no other service needed.

Every SQLite call runs on one dedicated thread that owns the connection, so the event loop
never waits on the disk. Several worker processes may share the file: WAL lets readers run
beside the writer, and writers queue on the busy timeout.

Tables: `events` (one row per event, queryable with the sqlite3 shell), `aggregates` (the
per-day counters of `gateway.usage.aggregates`) and `app_titles`. An event's row and its
increments are written in the same transaction, and only when its id is new.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import Any

from gateway.usage.aggregates import DayRows, IncrementBatch
from gateway.usage.events import UsageEvent
from gateway.usage.rankings import Period
from gateway.usage.store import UsageStore

# Event columns, in UsageEvent.to_json's names (plus `day`, the UTC date, for range scans).
_COLUMNS = (
    "id", "timestamp", "day", "route", "model", "author", "backend", "category", "app", "app_title",
    "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost", "latency_ms",
    "ttft_ms", "tokens_per_second", "status", "attempts", "estimated", "request_id",
)

_SCHEMA = """
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

_INSERT_EVENT = f"INSERT OR IGNORE INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_ADD = "INSERT INTO aggregates VALUES (?, ?, ?, ?) ON CONFLICT (day, part, field) DO UPDATE SET value = value + excluded.value"
_TITLE = "INSERT INTO app_titles VALUES (?, ?, ?) ON CONFLICT (day, app) DO UPDATE SET title = excluded.title"
_EXPORT_PAGE = 2000


def _row(event: UsageEvent) -> tuple[Any, ...]:
    data = event.to_json()
    data["day"] = event.day.isoformat()
    data["estimated"] = int(event.estimated)
    return tuple(data[c] for c in _COLUMNS)


def _event(row: sqlite3.Row) -> UsageEvent:
    data = dict(row)
    data.pop("day")
    data["timestamp"] = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
    data["estimated"] = bool(data["estimated"])
    return UsageEvent(**data)


class SqliteUsageStore(UsageStore):
    name = "sqlite"

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-sqlite")
        self._conn: sqlite3.Connection | None = None

    # -- the store's thread ----------------------------------------------------------------
    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def _record(self, events: Sequence[UsageEvent]) -> int:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            batch = IncrementBatch()
            new = 0
            for event in events:
                if conn.execute(_INSERT_EVENT, _row(event)).rowcount == 1:
                    batch.add(event)
                    new += 1
            conn.executemany(_ADD, ((d.isoformat(), part, name, value) for (d, part, name), value in batch.sums.items()))
            conn.executemany(_TITLE, ((d.isoformat(), app, title) for (d, app), title in batch.titles.items()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new

    def _read(self, spans: Mapping[str, Period]) -> dict[date, DayRows]:
        conn = self._connection()
        days: dict[date, DayRows] = {}
        for part, span in spans.items():
            rows = conn.execute(
                "SELECT day, field, value FROM aggregates WHERE part = ? AND day BETWEEN ? AND ?",
                (part, span.start.isoformat(), span.end.isoformat()),
            )
            for day, name, value in rows:
                days.setdefault(date.fromisoformat(day), DayRows()).parts.setdefault(part, {})[name] = value
        if "app" in spans:
            span = spans["app"]
            for day, app, title in conn.execute(
                "SELECT day, app, title FROM app_titles WHERE day BETWEEN ? AND ?", (span.start.isoformat(), span.end.isoformat())
            ):
                days.setdefault(date.fromisoformat(day), DayRows()).titles[app] = title
        return days

    def _page(self, start: date, end: date, after: tuple[str, str] | None) -> list[UsageEvent]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM events WHERE day BETWEEN ? AND ?"
        args: list[Any] = [start.isoformat(), end.isoformat()]
        if after is not None:
            sql += " AND (timestamp, id) > (?, ?)"
            args += list(after)
        sql += " ORDER BY day, timestamp, id LIMIT ?"
        args.append(_EXPORT_PAGE)
        return [_event(row) for row in self._connection().execute(sql, args)]

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the interface ---------------------------------------------------------------------
    async def record(self, events: Sequence[UsageEvent]) -> int:
        if not events:
            return 0
        return await self._run(self._record, list(events))

    async def read_aggregates(self, spans: Mapping[str, Period]) -> dict[date, DayRows]:
        return await self._run(self._read, dict(spans))

    async def export(self, start: date, end: date) -> AsyncIterator[UsageEvent]:
        after: tuple[str, str] | None = None
        while True:
            page = await self._run(self._page, start, end, after)
            for event in page:
                yield event
            if len(page) < _EXPORT_PAGE:
                return
            last = page[-1]
            after = (last.to_json()["timestamp"], last.id)

    async def aclose(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)
