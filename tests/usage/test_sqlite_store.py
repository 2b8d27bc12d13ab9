"""The SQLite store's own promises: the event loop never waits on the file, however busy it is."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from gateway.usage import sqlite_store
from gateway.usage.recorder import UsageRecorder
from gateway.usage.sqlite_store import SqliteUsageStore
from gateway.usage.store import Retention
from tests.usage.fixtures import EVENTS, varied_events


async def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def events_in_file(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


@pytest.fixture
async def store(tmp_path):
    s = SqliteUsageStore(tmp_path / "usage.sqlite3")
    await s.record(EVENTS[:1])  # the file and its schema exist
    yield s
    await s.aclose()


@pytest.fixture
def other_writer(store):
    """Another process's connection, holding the write lock until the test lets go."""
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    yield conn
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.close()


async def test_a_write_waits_for_another_writers_lock_without_holding_the_loop(store, other_writer):
    writing = asyncio.create_task(store.record(EVENTS[1:]))
    await wait_for(lambda: store.busy_retries >= 3)  # this coroutine ran meanwhile: the loop was free
    assert not writing.done()
    assert other_writer.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    other_writer.execute("ROLLBACK")
    assert await writing == len(EVENTS) - 1
    assert events_in_file(store.path) == len(EVENTS)


async def test_a_lock_held_past_the_busy_timeout_fails_the_write_and_the_recorder_retries_it(store, other_writer):
    store.busy_timeout_s = 0.05
    recorder = UsageRecorder(store, batch_size=2, flush_interval_s=0.01, retry_initial_s=0.01, retry_max_s=0.05)
    recorder.start()
    for event in EVENTS[1:4]:
        recorder.add(event)
    await wait_for(lambda: recorder.write_failures > 0)
    assert recorder.recorded == 0 and recorder.buffered == 3
    other_writer.execute("COMMIT")
    await wait_for(lambda: recorder.recorded == 3)
    await recorder.close()
    assert recorder.dropped == 0 and events_in_file(store.path) == 4


async def test_a_batch_is_written_in_slices_each_its_own_transaction(store):
    store.slice_events = 7
    events = varied_events(100)
    assert await store.record(events + events[:10]) == 100
    assert events_in_file(store.path) == 101


async def test_the_wal_reaches_the_database_file_while_the_store_is_open(tmp_path):
    """The loop's connection never checkpoints; the store's thread does, so the WAL stays bounded."""
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, checkpoint_every_s=0)
    try:
        await store.record(varied_events(1000))
        await wait_for(lambda: path.stat().st_size > 100_000)  # only a checkpoint writes the main file in WAL mode
    finally:
        await store.aclose()


async def test_two_stores_opening_a_new_file_at_once_both_work(tmp_path):
    """Like two worker processes starting on an empty data dir."""
    stores = [SqliteUsageStore(tmp_path / "usage.sqlite3") for _ in range(4)]
    try:
        written = await asyncio.gather(*(s.record(EVENTS) for s in stores))
    finally:
        for s in stores:
            await s.aclose()
    assert sorted(written) == [0, 0, 0, len(EVENTS)]


async def test_the_wal_stays_bounded_while_writes_never_pause(tmp_path):
    """A PASSIVE checkpoint copies the WAL into the file but never rewinds it: SQLite starts
    the WAL over only when a write finds it wholly copied, and under steady traffic a commit
    always lands while a checkpoint runs. The WAL then grew by every call for as long as the
    traffic lasted (1.1 GB after half an hour of `make bench`). Past `wal_truncate_frames` the
    next write waits for the thread to empty it."""
    path = tmp_path / "usage.sqlite3"
    wal = path.with_name(path.name + "-wal")
    store = SqliteUsageStore(path, checkpoint_every_s=0, slice_events=50, wal_truncate_frames=200)
    events = varied_events(20_000)
    largest = 0
    try:
        for start in range(0, len(events), 250):
            await store.record(events[start : start + 250])
            largest = max(largest, wal.stat().st_size)
        await store.wait_checkpointed()  # the last one, started by the last write
        # 20,000 events make about 100 MB of WAL frames, which it held before. Here: the
        # threshold (800 KB) and the batches (about 1.3 MB each) written while a checkpoint,
        # running beside them on its thread, counted the frames: about 8 MB on an idle machine,
        # 9.5 MB seen with the suite's other worker busy, 27.8 MB with the suite beside a
        # helper's coding-agent runs (how many batches land during one checkpoint is the
        # scheduler's), so the bound is under half of the unbounded WAL.
        assert largest < 40 * 1024 * 1024
        assert store.wal_truncations > 0
    finally:
        await store.aclose()
    assert events_in_file(path) == 20_000


async def test_a_reader_in_the_way_of_emptying_the_wal_costs_one_wait_not_one_per_write(tmp_path, monkeypatch):
    """A review found each write past the threshold waiting the whole `TRUNCATE_WAIT_S` while
    another process held a read (a sqlite3 shell, a long export): a batch a second. Now one
    busy try, then none for `TRUNCATE_RETRY_S`; once the reader is gone, the WAL is emptied."""
    monkeypatch.setattr(sqlite_store, "TRUNCATE_WAIT_S", 0.05)
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, checkpoint_every_s=0, wal_truncate_frames=50, truncate_retry_s=0.3)
    events = varied_events(2_000)
    try:
        await store.record(events[:10])
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # a read snapshot held open
        for start in range(10, 1_010, 200):
            await store.record(events[start : start + 200])
            await store.wait_checkpointed()
        assert store.wal_truncations_busy == 1 and store.wal_truncations == 0
        reader.execute("COMMIT")
        reader.close()
        await asyncio.sleep(0.3)  # the retry time has come
        await store.record(events[1_010:1_210])
        assert store.wal_truncations_busy == 1 and store.wal_truncations == 1
        await store.wait_checkpointed()
        await store.record(events[1_210:1_215])  # the WAL emptied just before: nothing to do
        assert store.wal_truncations == 1
    finally:
        await store.aclose()
    assert events_in_file(path) == 1_215


async def test_the_wal_is_not_emptied_while_a_retention_delete_runs(tmp_path, monkeypatch):
    """The truncation queues behind whatever the store's thread runs: a write would wait out
    a whole retention delete (minutes, the first time on a large file)."""
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, checkpoint_every_s=0, wal_truncate_frames=20, retention=Retention(events_days=30))
    release = threading.Event()

    def slow_prune() -> int:
        release.wait(10)
        return 0

    monkeypatch.setattr(store, "_delete_expired", slow_prune)
    try:
        await store.record(varied_events(400))  # starts the first prune, which runs until released
        await store.wait_checkpointed()
        assert store.pruning
        await store.record(varied_events(600)[400:])
        assert store.wal_truncations == 0 and store.wal_truncations_busy == 0
        release.set()
        await store.wait_pruned()
        await store.wait_checkpointed()
        await store.record(varied_events(610)[600:])
        assert store.wal_truncations == 1
    finally:
        await store.aclose()


async def test_a_failure_emptying_the_wal_is_logged_and_the_batch_still_written(tmp_path, monkeypatch, caplog):
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, checkpoint_every_s=0, wal_truncate_frames=50)

    def failing() -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_truncate", failing)
    try:
        await store.record(varied_events(400))
        await store.wait_checkpointed()
        assert await store.record(varied_events(600)[400:]) == 200
    finally:
        await store.aclose()
    assert events_in_file(path) == 600
    assert "emptying the WAL failed: disk I/O error" in caplog.text
