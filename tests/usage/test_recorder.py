"""The recorder: buffers without blocking, writes in batches, survives store outages, counts loss."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence

import pytest

from gateway.config.schema import ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.outcome import Attempt, CallOutcome, Observers
from gateway.proxy.usage import Usage
from gateway.settings import Settings
from gateway.usage.events import UsageEvent
from gateway.usage.rankings import ranking_query
from gateway.usage.recorder import UsageRecorder, install_recorder
from gateway.usage.sqlite_store import SqliteUsageStore
from gateway.usage.store import UsageStore

OFFER = Offer("qwen/qwen3-32b", "up", "Qwen/Qwen3-32B", ModelOffer())
NOON = 1741608000.0  # 2025-03-10T12:00:00Z: a fixed day, so no test straddles midnight


class FlakyStore(UsageStore):
    """A real SQLite store whose writes fail the first `failures` times, like a store in an outage."""

    def __init__(self, inner: UsageStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    async def record(self, events: Sequence[UsageEvent]) -> int:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store unreachable")
        return await self.inner.record(events)

    async def read_aggregates(self, spans):
        return await self.inner.read_aggregates(spans)

    def export(self, start, end):
        return self.inner.export(start, end)

    async def ensure_open(self):
        await self.inner.ensure_open()

    async def aclose(self):
        await self.inner.aclose()


def finished_call(prompt: int = 10, completion: int = 5) -> CallOutcome:
    return CallOutcome(
        request_id="r",
        requested_model="auto",
        stream=False,
        offer=OFFER,
        started_at=NOON,
        attempts=[Attempt("up", OFFER.model, None, 200, 0.1)],
        usage=Usage(prompt, completion),
    )


async def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def requests_that_day(store: UsageStore) -> int:
    return (await store.rankings(ranking_query("day", "2025-03-10", 10)))["totals"]["requests"]


@pytest.fixture
async def sqlite(tmp_path):
    store = SqliteUsageStore(tmp_path / "usage.sqlite3")
    yield store
    await store.aclose()


async def test_call_finished_only_buffers(sqlite):
    recorder = UsageRecorder(sqlite)
    recorder.call_finished(finished_call())
    assert recorder.buffered == 1
    assert await requests_that_day(sqlite) == 0  # nothing written on the request's time
    await recorder.flush()
    assert recorder.buffered == 0 and await requests_that_day(sqlite) == 1


async def test_writes_in_batches_and_retries_until_the_store_recovers(sqlite):
    store = FlakyStore(sqlite, failures=3)
    recorder = UsageRecorder(store, batch_size=4, flush_interval_s=0.02, retry_initial_s=0.01, retry_max_s=0.05)
    recorder.start()
    for _ in range(10):
        recorder.call_finished(finished_call())
    await wait_for(lambda: recorder.recorded == 10)
    await recorder.close()
    assert recorder.write_failures == 3 and recorder.dropped == 0
    assert await requests_that_day(sqlite) == 10
    assert store.calls >= 3 + 3  # three failures, then batches of at most 4


async def test_a_full_buffer_drops_the_oldest_and_says_so(sqlite, caplog):
    drops: list[int] = []
    recorder = UsageRecorder(FlakyStore(sqlite, failures=10**9), max_buffered=5, on_drop=drops.append)
    events = []
    with caplog.at_level(logging.ERROR, logger="gateway.usage"):
        for i in range(8):
            recorder.call_finished(finished_call(prompt=i + 1))
            events.append(recorder.pending()[-1])
    assert recorder.dropped == 3 and drops == [1, 1, 1]
    assert list(recorder.pending()) == events[3:]  # the newest are kept
    assert "usage events dropped" in caplog.text


async def test_close_flushes_everything_buffered(sqlite):
    recorder = UsageRecorder(sqlite, batch_size=1000, flush_interval_s=3600)
    recorder.start()
    for _ in range(7):
        recorder.call_finished(finished_call())
    await recorder.close()
    assert await requests_that_day(sqlite) == 7 and recorder.dropped == 0


async def test_close_with_the_store_down_counts_and_logs_the_loss(sqlite, caplog):
    recorder = UsageRecorder(FlakyStore(sqlite, failures=10**9), retry_initial_s=0.01)
    for _ in range(4):
        recorder.call_finished(finished_call())
    with caplog.at_level(logging.ERROR, logger="gateway.usage"):
        await recorder.close(timeout_s=0.05)
    assert recorder.dropped == 4 and recorder.buffered == 0
    assert "shutdown could not write them" in caplog.text


@pytest.mark.redis
async def test_events_made_while_redis_is_down_arrive_once_it_is_back(redis_server):
    from redis.asyncio import Redis

    from gateway.usage.redis_store import RedisUsageStore

    store = RedisUsageStore(
        Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1), owns_client=True
    )
    recorder = UsageRecorder(store, batch_size=2, flush_interval_s=0.02, retry_initial_s=0.02, retry_max_s=0.2)
    recorder.start()
    redis_server.stop()
    for _ in range(5):
        recorder.call_finished(finished_call())
    await wait_for(lambda: recorder.write_failures > 0)
    redis_server.start()
    await wait_for(lambda: recorder.recorded == 5)
    await recorder.close()
    assert await requests_that_day(store) == 5 and recorder.dropped == 0
    await store.aclose()


async def test_an_outcome_that_cannot_become_an_event_is_counted_and_skipped(sqlite, caplog):
    recorder = UsageRecorder(sqlite)
    broken = finished_call()
    broken.started_at = float("nan")  # no datetime for it
    recorder.call_finished(finished_call())
    recorder.call_finished(broken)
    recorder.call_finished(finished_call())
    with caplog.at_level(logging.ERROR, logger="gateway.usage"):
        await recorder.flush()
    assert await requests_that_day(sqlite) == 2
    assert recorder.dropped == 1 and "could not build a usage event" in caplog.text


async def test_calls_that_reached_no_backend_are_not_buffered(sqlite):
    recorder = UsageRecorder(sqlite)
    recorder.call_finished(CallOutcome(request_id="r", requested_model="nope", stream=False, status=503))
    assert recorder.buffered == 0


class HalfwayStore(FlakyStore):
    """Writes the first half of a batch, then fails once: a connection lost mid-write."""

    async def record(self, events: Sequence[UsageEvent]) -> int:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            await self.inner.record(events[: len(events) // 2])
            raise ConnectionError("connection lost mid-write")
        return await self.inner.record(events)


async def test_a_write_that_failed_halfway_is_retried_whole_and_counts_each_event_once(sqlite):
    recorder = UsageRecorder(
        HalfwayStore(sqlite, failures=1), batch_size=6, flush_interval_s=0.01, retry_initial_s=0.01
    )
    recorder.start()
    for _ in range(6):
        recorder.call_finished(finished_call())
    await wait_for(lambda: recorder.recorded == 6)
    await recorder.close()
    assert recorder.write_failures == 1 and recorder.dropped == 0
    assert await requests_that_day(sqlite) == 6


class TimedFailingStore(FlakyStore):
    """Fails every write and notes when each was tried (monotonic seconds)."""

    def __init__(self, inner: UsageStore) -> None:
        super().__init__(inner, failures=10**9)
        self.tried_at: list[float] = []

    async def record(self, events: Sequence[UsageEvent]) -> int:
        self.tried_at.append(time.monotonic())
        return await super().record(events)


async def traffic(recorder: UsageRecorder, seconds: float) -> None:
    """A call every 5 ms: the buffer always holds a full batch, as under real traffic."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        recorder.call_finished(finished_call())
        await asyncio.sleep(0.005)


async def test_the_retry_backoff_holds_under_traffic(sqlite):
    # Issue 11 item 13: `add` set the wake-up event once a batch was buffered, and the retry
    # sleep returned as soon as it was set: tens of thousands of retries in 2 s. With a 0.5 s
    # backoff doubling (0.5, 1, 2, ...) 2 s of traffic allows tries at about 0, 0.5 and 1.5 s.
    store = TimedFailingStore(sqlite)
    recorder = UsageRecorder(store, batch_size=2, flush_interval_s=0.05, retry_initial_s=0.5, retry_max_s=4.0)
    recorder.start()
    await traffic(recorder, 2.0)
    tries = list(store.tried_at)
    await recorder.close(timeout_s=0)
    assert 2 <= len(tries) <= 3, len(tries)
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    for gap, backoff in zip(gaps, (0.5, 1.0)):
        assert gap >= backoff * 0.9, gaps  # never sooner than the backoff (no upper bound: machine speed)


class GatedStore(FlakyStore):
    """Holds each write until `gate` is set, then writes it (or fails it, while `failures` last)."""

    def __init__(self, inner: UsageStore, failures: int = 0) -> None:
        super().__init__(inner, failures)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def record(self, events: Sequence[UsageEvent]) -> int:
        self.entered.set()
        await self.gate.wait()
        return await super().record(events)


async def test_events_pushed_out_while_their_write_is_in_flight_are_recorded_not_dropped(sqlite):
    # Issue 11 item 18: the overflow dropped the oldest events, which were the batch being
    # written; the write then succeeded, so they counted as both dropped and recorded.
    store = GatedStore(sqlite)
    recorder = UsageRecorder(store, batch_size=5, max_buffered=5)
    for _ in range(5):
        recorder.call_finished(finished_call())
    write = asyncio.create_task(recorder.flush())
    await store.entered.wait()  # the 5 are in flight
    for _ in range(5):
        recorder.call_finished(finished_call())  # each pushes one in-flight event out of the buffer
    store.gate.set()
    await write  # flush() goes on to write the 5 newer ones too
    assert (recorder.recorded, recorder.dropped, recorder.buffered) == (10, 0, 0)
    assert await requests_that_day(sqlite) == 10


async def test_events_pushed_out_while_their_write_fails_are_dropped_once(sqlite):
    store = GatedStore(sqlite, failures=1)
    drops: list[int] = []
    recorder = UsageRecorder(store, batch_size=5, max_buffered=5, on_drop=drops.append)
    for _ in range(5):
        recorder.call_finished(finished_call())
    write = asyncio.create_task(recorder.write_batch())
    await store.entered.wait()
    for _ in range(3):
        recorder.call_finished(finished_call())  # 3 of the in-flight 5 pushed out
    store.gate.set()
    with pytest.raises(ConnectionError):
        await write
    # The 3 pushed out are lost with the failed write; the 2 still buffered and the 3 new wait.
    assert (recorder.recorded, recorder.dropped, recorder.buffered, sum(drops)) == (0, 3, 5, 3)
    await recorder.flush()
    assert (recorder.recorded, recorder.dropped, recorder.buffered) == (5, 3, 0)
    assert await requests_that_day(sqlite) == 5


async def test_install_recorder_wires_the_ledger_from_what_it_is_given(tmp_path):
    """No app state: the settings, the observer fan-out, the shutdown hooks and the metric
    hooks are all the ledger needs; the recorder observes calls, reports drops through
    `on_drop`, and its closer flushes into the store the ledger opened."""
    settings = Settings(
        data_dir=tmp_path, usage_writer="inline", usage_buffer_max=2, usage_flush_s=3600, usage_batch_size=1000
    )
    observers = Observers()
    closers: list = []
    drops: list[int] = []
    ledger = install_recorder(settings, None, observers, closers, on_drop=drops.append)
    assert ledger.store.name == "sqlite" and ledger.recorder.store is ledger.store  # inline: no writer process
    for _ in range(3):
        observers.call_finished(finished_call())
    assert drops == [1] and ledger.recorder.buffered == 2
    assert len(closers) == 1
    await closers[0]()
    reopened = SqliteUsageStore(tmp_path / "usage.sqlite3")
    try:
        assert await requests_that_day(reopened) == 2
    finally:
        await reopened.aclose()


async def test_install_recorder_with_recording_off_observes_nothing(tmp_path):
    settings = Settings(data_dir=tmp_path, usage_writer="inline", usage_recording=False)
    observers = Observers()
    closers: list = []
    ledger = install_recorder(settings, None, observers, closers)
    observers.call_finished(finished_call())
    assert ledger.recorder.buffered == 0
    await closers[0]()
