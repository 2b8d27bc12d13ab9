"""The embedded usage store: one SQLite file (WAL) in the data dir, no other service needed.

Writes run on the event loop, in slices of `slice_events` events, one short transaction
each, yielding to the loop between slices. That is cheaper for the proxy path than a writer
thread: a thread running Python competes with the event loop for the GIL, and the loop,
which gives the GIL up at every socket call, waits for it each time (a GIL convoy). On the
loop the write never waits either: its connection has no busy timeout, so when another
process holds the write lock the slice is retried after a short asynchronous sleep, and it
never checkpoints (the fsyncs of a checkpoint run on the store's thread instead). With WAL
and `synchronous=NORMAL` a commit is a write to the page cache, not a disk flush.

Reads (rankings, export), checkpoints and retention deletes run on the store's one thread,
with a connection of their own: WAL lets them run beside the writer, and beside other
processes' writers. Retention (`Retention`): raw events older than `events_days` are deleted
(exactly, by timestamp), and the aggregates of days more than `aggregates_days` ago, at most
once every `prune_every_s` (an hour), in small batches; in a gateway that is the writer process.

Tables: `events` (one row per event, queryable with the sqlite3 shell), `aggregates` (the
per-day counters of `gateway.usage.aggregates`), `app_titles`, and `spend` (what each key
and team was billed per day: a gateway without Redis starts its budgets from it, reading a
few rows per key instead of a month of events; kept as long as the aggregates). An event's row and its
increments are written in the same transaction, and only when its id is new; only a call's
final row counts as a request (a failed attempt before it is a row of its own whose only
increment is its provider's attempt outcome, for uptime).

The schema's version is SQLite's `PRAGMA user_version`. A file made by an older gateway is
migrated when opened (`_migrate`: ALTER TABLE ADD COLUMN with the new fields' defaults, and
tables a version adds filled from the events, in one transaction, so two processes opening it
at once migrate it once); its rows stay readable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import orjson

from gateway.sqlite_files import connect_private, file_identity
from gateway.usage.aggregates import MAX_APPS_PER_DAY, SEP, SUM_CAP, DayApps, DayRows, IncrementBatch
from gateway.usage.events import MAX_COST_USD, UsageEvent
from gateway.usage.rankings import Period
from gateway.usage.spend import DaySpend, DaySpends
from gateway.usage.store import KEEP_EVERYTHING, Retention, UsageStore

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

log = logging.getLogger("gateway.usage")

# How long emptying the WAL waits for another process's write or read (`_truncate_wal`).
TRUNCATE_WAIT_S = 1.0

# Event columns, in UsageEvent.to_json's names (plus `day`, the UTC date, for range scans).
_COLUMNS = (
    "id",
    "timestamp",
    "day",
    "route",
    "model",
    "author",
    "backend",
    "category",
    "app",
    "app_title",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "latency_ms",
    "ttft_ms",
    "tokens_per_second",
    "status",
    "attempts",
    "estimated",
    "request_id",
    # schema version 1
    "endpoint",
    "key",
    "team",
    "call_id",
    "attempt",
    "final",
    "error",
    "cache_write_tokens",
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
    request_id TEXT,
    endpoint TEXT NOT NULL DEFAULT 'chat',
    key TEXT,
    team TEXT,
    call_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    final INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS spend (
    day TEXT NOT NULL,
    key TEXT NOT NULL,
    team TEXT NOT NULL,
    cost_nanos INTEGER NOT NULL,
    PRIMARY KEY (day, key, team)
) WITHOUT ROWID;
"""

# Each version's changes to the one before, in order; `user_version` says how many are applied.
# A table created by this version's _SCHEMA already has them: only older files run them.
SCHEMA_VERSION = 2
_EVENT_COLUMNS_ADDED: dict[int, tuple[tuple[str, str], ...]] = {
    1: (
        ("endpoint", "TEXT NOT NULL DEFAULT 'chat'"),
        ("key", "TEXT"),
        ("team", "TEXT"),
        ("call_id", "TEXT"),
        ("attempt", "INTEGER NOT NULL DEFAULT 1"),
        ("final", "INTEGER NOT NULL DEFAULT 1"),
        ("error", "TEXT"),
        ("cache_write_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ),
    2: (),
}
# Version 2's `spend` table, filled from the events a file already holds (its own writes keep
# it from then on); the sums are `cost_nanos` of each row as `DaySpends` makes them (SQLite
# rounds a half away from zero, Python to even: a row of exactly k.5 nano-dollars may differ
# by one), each row's cost taken no higher than the ledger's bound (`MAX_COST_USD`: a row
# stored before it may be past it) and summed without failing on overflow (TOTAL, not SUM).
_BACKFILL = {
    2: (
        "INSERT INTO spend SELECT day, COALESCE(key, ''), COALESCE(team, ''),"
        f" CAST(MIN(TOTAL(ROUND(MIN(cost, {MAX_COST_USD:g}) * 1000000000)), {SUM_CAP}) AS INTEGER) FROM events"
        " WHERE final = 1 AND (COALESCE(key, '') != '' OR COALESCE(team, '') != '')"
        " GROUP BY day, COALESCE(key, ''), COALESCE(team, '')"
        f" ON CONFLICT (day, key, team) DO UPDATE SET cost_nanos = MIN(cost_nanos + excluded.cost_nanos, {SUM_CAP})"
    ),
}

_KNOWN_IDS = "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(?))"
_INSERT_EVENT = f"INSERT OR IGNORE INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
# Rows go in 25 to a statement: a quarter less CPU per row than one row per statement.
_ROWS_PER_INSERT = 25
_INSERT_EVENTS = _INSERT_EVENT + f", ({', '.join('?' * len(_COLUMNS))})" * (_ROWS_PER_INSERT - 1)
# Sums saturate at SUM_CAP: past 64 bits SQLite's `+` turns a sum to a float, and MIN brings
# it back to the integer cap.
_ADD = (
    "INSERT INTO aggregates VALUES (?, ?, ?, ?) ON CONFLICT (day, part, field)"
    f" DO UPDATE SET value = MIN(value + excluded.value, {SUM_CAP})"
)
_TITLE = "INSERT INTO app_titles VALUES (?, ?, ?) ON CONFLICT (day, app) DO UPDATE SET title = excluded.title"
_EXPORT_PAGE = 2000
_SPEND = (
    "INSERT INTO spend VALUES (?, ?, ?, ?)"
    f" ON CONFLICT (day, key, team) DO UPDATE SET cost_nanos = MIN(cost_nanos + excluded.cost_nanos, {SUM_CAP})"
)
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _row(event: UsageEvent) -> tuple[Any, ...]:
    timestamp = event.timestamp_text
    return (
        event.id,
        timestamp,
        timestamp[:10],
        event.route,
        event.model,
        event.author,
        event.backend,
        event.category,
        event.app,
        event.app_title,
        event.prompt_tokens,
        event.completion_tokens,
        event.cached_tokens,
        event.reasoning_tokens,
        event.cost,
        event.latency_ms,
        event.ttft_ms,
        event.tokens_per_second,
        event.status,
        event.attempts,
        int(event.estimated),
        event.request_id,
        event.endpoint,
        event.key,
        event.team,
        event.call_id,
        event.attempt,
        int(event.final),
        event.error,
        event.cache_write_tokens,
    )


def _event(row: sqlite3.Row) -> UsageEvent:
    data = dict(row)
    data.pop("day")
    data["timestamp"] = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
    data["estimated"] = bool(data["estimated"])
    data["final"] = bool(data["final"])
    return UsageEvent(**data)


def _migrate(conn: sqlite3.Connection) -> int:
    """Bring a file made by an older version up to SCHEMA_VERSION. In one IMMEDIATE
    transaction: a second process opening the file meanwhile waits, then finds it done.
    Returns the file's version before, or as it stays: a newer gateway's file (this one rolled
    back) is left at its version, its newer columns to that gateway."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found >= SCHEMA_VERSION:
        return int(found)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        present = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        # A new file (no events yet) is made whole by _SCHEMA: nothing to say about it.
        held = conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for name, declaration in _EVENT_COLUMNS_ADDED[step]:
                if name not in present:  # a new file's table has them already
                    conn.execute(f"ALTER TABLE events ADD COLUMN {name} {declaration}")
            if step in _BACKFILL:
                conn.execute(_BACKFILL[step])
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if held and version < SCHEMA_VERSION:  # not when another process had migrated it meanwhile
        log.info("usage store: schema migrated from version %d to %d", version, SCHEMA_VERSION)
    return int(found)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY, SQLITE_LOCKED and their extended codes)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code & 0xFF) in _BUSY if code is not None else "locked" in str(exc)


def _write_slice(conn: sqlite3.Connection, events: Sequence[UsageEvent], max_apps: int = MAX_APPS_PER_DAY) -> int:
    """One transaction: the events whose ids are new, and their increments. Runs on the loop
    and never waits: with no busy timeout, a lock held elsewhere fails BEGIN at once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        known = {row[0] for row in conn.execute(_KNOWN_IDS, (orjson.dumps([e.id for e in events]).decode(),))}
        new: dict[str, UsageEvent] = {}
        for event in events:
            if event.id not in known and event.id not in new:
                new[event.id] = event
        rows = [_row(event) for event in new.values()]
        whole = len(rows) - len(rows) % _ROWS_PER_INSERT
        conn.executemany(
            _INSERT_EVENTS,
            [tuple(chain.from_iterable(rows[i : i + _ROWS_PER_INSERT])) for i in range(0, whole, _ROWS_PER_INSERT)],
        )
        conn.executemany(_INSERT_EVENT, rows[whole:])
        batch = IncrementBatch(lambda day: DayApps(_stored_apps(conn, day), max_apps))
        for event in new.values():
            batch.add(event)  # a failed attempt before the final row counts only its outcome
        conn.executemany(_ADD, [(d.isoformat(), part, name, value) for (d, part, name), value in batch.sums.items()])
        conn.executemany(_TITLE, [(d.isoformat(), app, title) for (d, app), title in batch.titles.items()])
        spends = DaySpends()
        for event in new.values():
            spends.add(event)
        conn.executemany(_SPEND, [(s.day.isoformat(), s.key or "", s.team or "", s.cost_nanos) for s in spends.rows()])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(new)


def _stored_apps(conn: sqlite3.Connection, day: date) -> set[str]:
    rows = conn.execute("SELECT field FROM aggregates WHERE day = ? AND part = 'app'", (day.isoformat(),))
    return {field.rsplit(SEP, 1)[0] for (field,) in rows}


class SqliteUsageStore(UsageStore):
    name = "sqlite"

    def __init__(
        self,
        path: Path,
        busy_timeout_s: float = 30.0,
        slice_events: int = 200,
        checkpoint_every_s: float = 1.0,
        *,
        wal_truncate_frames: int = 4096,
        truncate_retry_s: float = 30.0,
        retention: Retention = KEEP_EVERYTHING,
        prune_every_s: float = 3600.0,
        prune_batch: int = 500,
        clock: Callable[[], float] = time.time,
        max_apps_per_day: int = MAX_APPS_PER_DAY,
    ) -> None:
        self.max_apps_per_day = max_apps_per_day  # apps with a row of their own per day (aggregates)
        self.path = Path(path)
        self.retention = retention
        self.prune_every_s = prune_every_s  # deletes run at most this often (the first after the first write)
        self.prune_batch = prune_batch  # rows per DELETE: each a short transaction that holds the lock briefly
        self.clock = clock  # wall clock, UTC epoch seconds (tests move it)
        self.pruned = 0  # raw events deleted for retention, in this process
        self._prune: asyncio.Task[int] | None = None
        self._last_prune: float | None = None
        self.busy_timeout_s = busy_timeout_s  # how long a write keeps retrying while another process holds the lock
        self.slice_events = slice_events  # events per transaction: how long the loop is held at most
        self.checkpoint_every_s = checkpoint_every_s
        self.wal_truncate_frames = wal_truncate_frames  # past this (pages, 4 KB each), the next write empties the WAL
        self.truncate_retry_s = truncate_retry_s  # after a busy try, none for this long
        self.wal_truncations = 0  # the WAL emptied
        self.wal_truncations_busy = 0  # tries that found another process's read or write in the way
        self._wal_frames = 0  # as the last checkpoint found the WAL (`_checkpoint_wal`)
        self._truncate_not_before = 0.0  # monotonic: after a busy try, the next is not before this
        self.busy_retries = 0  # slices retried because another connection held the write lock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-sqlite")
        self._reader: sqlite3.Connection | None = None  # the thread's
        self._reader_file: tuple[int, int] | None = None  # the file it opened (`_replaced`)
        self._told_newer = False  # a newer gateway's file: said once (`_open`)
        self._writer: sqlite3.Connection | None = None  # the loop's
        self._writer_file: tuple[int, int] | None = None
        self._opening: asyncio.Lock | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._last_checkpoint = 0.0

    # -- connections -----------------------------------------------------------------------
    async def _run(self, fn: Callable[[*_Args], _T], *args: *_Args) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> sqlite3.Connection:
        """A connection to the file, WAL and schema in place (on the thread: it may wait)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: the data dir
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            conn = connect_private(self.path, timeout=self.busy_timeout_s)
            try:
                # Switching a new file to WAL takes an exclusive lock that SQLite does not wait
                # for (its busy handler is skipped there): two processes opening a new file at
                # once can see "database is locked". Retry; once in WAL, the file stays so.
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                version = _migrate(conn)
            except sqlite3.OperationalError as exc:
                conn.close()
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
                continue
            if version > SCHEMA_VERSION and not self._told_newer:
                # A rollback: say it once, since the newer gateway's fields are not written.
                self._told_newer = True
                log.warning(
                    "usage store: %s has schema version %d, newer than this gateway's %d (a newer gateway "
                    "wrote it): this one reads and writes the fields it knows",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                )
            conn.row_factory = sqlite3.Row
            return conn

    def _replaced(self, opened: tuple[int, int] | None) -> bool:
        """Whether the file at `path` is no longer the one a connection opened: restored from a
        backup, or moved aside and made anew (by `gateway usage import`/`export`). Kept, that
        connection would write every call into a file no longer at the path, which the CLI and
        the other processes never read. A path with no file (moved away, nothing in its place
        yet: perhaps a restore under way) keeps the open one rather than make a file in the way."""
        found = file_identity(self.path)
        return found is not None and found != opened

    def _connection(self) -> sqlite3.Connection:
        """The thread's connection (reads, checkpoints); opens the file and its schema, again
        when the file was replaced."""
        if self._reader is not None and self._replaced(self._reader_file):
            self._reader.close()
            self._reader = None
        if self._reader is None:
            self._reader = self._open()
            self._reader_file = file_identity(self.path)
        return self._reader

    def _open_writer(self) -> sqlite3.Connection:
        self._connection()  # the schema exists before the writer's first statement
        conn = self._open()
        conn.row_factory = None
        conn.execute("PRAGMA busy_timeout=0")  # never wait on the loop: busy slices are retried asynchronously
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints (fsyncs) run on the thread, not in a commit
        self._writer_file = file_identity(self.path)
        return conn

    def _close_replaced(self, conn: sqlite3.Connection) -> None:
        conn.close()  # SQLite neither checkpoints nor deletes the journals of a file moved from its path
        log.info("usage store: %s was replaced under this process: writing to the file now there", self.path)

    async def _writer_connection(self) -> sqlite3.Connection:
        # One stat per batch written, not per call: a replaced file is met at the next flush.
        if self._writer is None or self._replaced(self._writer_file):
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self._writer is not None and self._replaced(self._writer_file):
                    replaced, self._writer = self._writer, None
                    await self._run(self._close_replaced, replaced)
                if self._writer is None:
                    self._writer = await self._run(self._open_writer)  # creating the file may fsync: not on the loop
        assert self._writer is not None  # for mypy: set above, under the lock
        return self._writer

    async def ensure_open(self) -> None:
        await self._writer_connection()  # the thread's connection first: the file, its schema

    # -- writing ---------------------------------------------------------------------------
    async def record(self, events: Sequence[UsageEvent]) -> int:
        if not events:
            return 0
        conn = await self._writer_connection()
        if self._wal_frames > self.wal_truncate_frames and not self.pruning:
            await self._truncate_wal()
        new = 0
        for start in range(0, len(events), self.slice_events):
            if start:
                await asyncio.sleep(0)  # let requests run between slices
            new += await self._write_when_free(conn, events[start : start + self.slice_events])
        self._maybe_checkpoint()
        self._maybe_prune()
        return new

    async def _write_when_free(self, conn: sqlite3.Connection, events: Sequence[UsageEvent]) -> int:
        """Write a slice, waiting (asynchronously, with jittered backoff) while another
        connection holds the write lock, for up to `busy_timeout_s`."""
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.002
        while True:
            try:
                return _write_slice(conn, events, self.max_apps_per_day)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
            self.busy_retries += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.1)

    def _maybe_checkpoint(self) -> None:
        """Move the WAL into the database file now and then, on the thread (PASSIVE: it waits
        for no one). The loop's connection never checkpoints, so this is what bounds the WAL."""
        now = time.monotonic()
        if (
            self._checkpoint is None or self._checkpoint.done()
        ) and now - self._last_checkpoint >= self.checkpoint_every_s:
            self._last_checkpoint = now
            self._checkpoint = asyncio.create_task(self._run(self._checkpoint_wal), name="usage-sqlite-checkpoint")
            self._checkpoint.add_done_callback(_retrieve_exception)

    async def wait_checkpointed(self) -> None:
        """Wait until the checkpoint in progress, if any, has ended."""
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])

    # -- retention (on the thread) ---------------------------------------------------------
    @property
    def pruning(self) -> bool:
        """A retention delete is running (a write starts one, at most every `prune_every_s`)."""
        return self._prune is not None and not self._prune.done()

    async def wait_pruned(self) -> None:
        """Wait until the retention delete in progress, if any, has ended."""
        if self._prune is not None:
            await asyncio.wait([self._prune])

    def _maybe_prune(self) -> None:
        """Delete what is past retention, on the thread, at most once every `prune_every_s`."""
        if not self.retention.prunes:
            return
        now = time.monotonic()
        if self._prune is not None and not self._prune.done():
            return
        if self._last_prune is not None and now - self._last_prune < self.prune_every_s:
            return
        self._last_prune = now
        self._prune = asyncio.create_task(self._run(self._delete_expired), name="usage-sqlite-retention")
        self._prune.add_done_callback(_retrieve_prune_exception)

    def _delete_expired(self) -> int:
        """Raw events older than `events_days` (by timestamp, exactly), then the aggregates of
        days before `aggregates_days` ago. In batches of `prune_batch` rows (aggregates: one day
        at a time), each its own short transaction, so a writer waits for the lock briefly."""
        conn = self._connection()
        now = self.clock()
        deleted = 0
        if self.retention.events_days:
            cutoff = datetime.fromtimestamp(now - self.retention.events_days * 86400, UTC)
            text = cutoff.isoformat(timespec="microseconds").replace("+00:00", "Z")
            while True:
                gone = conn.execute(
                    "DELETE FROM events WHERE rowid IN"
                    " (SELECT rowid FROM events WHERE day <= ? AND timestamp < ? LIMIT ?)",
                    (text[:10], text, self.prune_batch),
                ).rowcount
                deleted += gone
                if gone < self.prune_batch:
                    break
        if self.retention.aggregates_days:
            today = datetime.fromtimestamp(now, UTC).date()
            first_kept = today - timedelta(days=self.retention.aggregates_days)
            # Spend is kept for this month whatever the retention: budgets start from it.
            kept_from = {"spend": min(first_kept, today.replace(day=1))}
            for table in ("aggregates", "app_titles", "spend"):
                kept = kept_from.get(table, first_kept).isoformat()
                while True:
                    (day,) = conn.execute(f"SELECT min(day) FROM {table}").fetchone()
                    if day is None or day >= kept:
                        break
                    conn.execute(f"DELETE FROM {table} WHERE day = ?", (day,))
        self.pruned += deleted
        if deleted:
            log.info("usage store: %d raw events past retention deleted", deleted)
        return deleted

    def _checkpoint_wal(self) -> None:
        """PASSIVE: it copies the WAL into the file without stopping anyone, and says how many
        frames the WAL holds (`record` reads it: see `_truncate_wal`)."""
        _, self._wal_frames, _ = self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def _truncate_wal(self) -> None:
        """Empty the WAL, between two writes of this store. A PASSIVE checkpoint never rewinds
        the WAL: SQLite starts it over only when a write finds it wholly copied, and under
        steady traffic a commit lands while each checkpoint runs, so the WAL grew by every
        call for as long as traffic lasted (about 5 KB a call: a gigabyte in half an hour of
        `make bench`). TRUNCATE needs the write lock, which the loop's writes would keep
        taking from it, so the write waits for it here (on the thread, as any checkpoint:
        the loop is free); it copies what the last PASSIVE pass left and empties the file.
        Not while a retention delete runs on the thread (the write would wait for all of
        it). Another process's write or read in progress is waited for up to
        `TRUNCATE_WAIT_S`; if it is still there (a long export, a sqlite3 shell holding a
        read), the WAL is left as it is for `truncate_retry_s`, so that one reader does not
        hold every write for a second. A failure is logged: the batch is written either way."""
        if time.monotonic() < self._truncate_not_before:
            return
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
        try:
            emptied = await self._run(self._truncate)
        except (sqlite3.Error, OSError) as exc:
            log.warning("usage store: emptying the WAL failed: %s", exc)
            emptied = False
        if emptied:
            self._wal_frames = 0
            self.wal_truncations += 1
        else:
            self._truncate_not_before = time.monotonic() + self.truncate_retry_s

    def _truncate(self) -> bool:
        conn = self._connection()
        conn.execute(f"PRAGMA busy_timeout={int(TRUNCATE_WAIT_S * 1000)}")
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        if busy:
            self.wal_truncations_busy += 1
        return not busy

    # -- reading (on the thread) -----------------------------------------------------------
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
                "SELECT day, app, title FROM app_titles WHERE day BETWEEN ? AND ?",
                (span.start.isoformat(), span.end.isoformat()),
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

    def _day_spends(self, first_day: date) -> list[DaySpend]:
        rows = self._connection().execute(
            "SELECT key, team, day, cost_nanos FROM spend WHERE day >= ?", (first_day.isoformat(),)
        )
        return [
            DaySpend(key or None, team or None, date.fromisoformat(day), nanos)
            for key, team, day, nanos in rows
            if nanos
        ]

    def _close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()  # the last connection to close checkpoints the WAL into the file
        self._writer = self._reader = None

    # -- the interface ---------------------------------------------------------------------
    async def read_aggregates(self, spans: Mapping[str, Period]) -> dict[date, DayRows]:
        return await self._run(self._read, dict(spans))

    async def day_spends(self, first_day: date) -> list[DaySpend]:
        return await self._run(self._day_spends, first_day)

    async def export(self, start: date, end: date) -> AsyncIterator[UsageEvent]:
        after: tuple[str, str] | None = None
        while True:
            page = await self._run(self._page, start, end, after)
            for event in page:
                yield event
            if len(page) < _EXPORT_PAGE:
                return
            last = page[-1]
            after = (last.timestamp_text, last.id)

    async def aclose(self) -> None:
        for task in (self._checkpoint, self._prune):
            if task is not None:
                await asyncio.wait([task])
        await self._run(self._close)
        self._executor.shutdown(wait=True)


def _retrieve_prune_exception(task: asyncio.Task[int]) -> None:
    """A failed prune loses nothing: the rows stay until the next one."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("usage store retention delete failed: %s", task.exception())


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    """A failed checkpoint loses nothing (the WAL holds the commits; the next one catches up)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("usage store checkpoint failed: %s", task.exception())
