"""The observer that records every call without slowing it down.

`call_finished` copies what the ledger needs of the call's outcome into a tuple of plain
values (`FinishedCall`; one more per failed attempt when the call fell back, as each attempt
is a ledger row), appends it to an in-memory buffer and returns: no I/O, no awaiting,
not even building the event (for a non-streamed answer it runs before the response goes
out). A background task hands the calls, in batches, to the writer process
(`gateway.usage.writer`, which builds the events and writes them to the store on another
core), or, with GATEWAY_USAGE_WRITER=inline, builds and writes them itself; a batch goes
when it is full or every `flush_interval_s`. A batch leaves the buffer only once the store accepted it,
so an outage loses nothing while the buffer has room: the write is retried with backoff
(ids make a retry that partly succeeded harmless). Past `max_buffered` events the oldest are
dropped, counted in `dropped` (exported as a metric) and logged. `close()`, run at shutdown
after in-flight requests drained, writes what is left.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple, TypeVar, cast

from gateway.config.snapshot import Offer
from gateway.proxy.outcome import Attempt, CallOutcome, Observers
from gateway.supervise import start_supervised
from gateway.usage.events import FinishedCall, UsageEvent, failed_attempts, finished_call
from gateway.usage.store import UsageStore
from gateway.usage.writer import WriterProcess

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.settings import Settings

log = logging.getLogger("gateway.usage")

_Item = TypeVar("_Item", UsageEvent, FinishedCall)


class UsageRecorder:
    def __init__(
        self,
        store: UsageStore | WriterProcess,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        max_buffered: int = 100_000,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_buffered = max_buffered
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.on_drop = on_drop  # called with the number of events just dropped (metrics hook)
        self.on_write_failure: Callable[[], None] | None = None  # called per failed batch write (metrics hook)
        self.dropped = 0  # events lost because the buffer overflowed or shutdown could not write them
        self.recorded = 0  # events the store accepted (new or already known)
        self.write_failures = 0
        # Oldest first; calls become events when the writer first takes them.
        self._buffer: collections.deque[UsageEvent | FinishedCall] = collections.deque()
        self._wake = asyncio.Event()  # a batch is ready: cut the flush interval short
        # Shutdown: cut a retry backoff short. Not `_wake`, which traffic sets as soon as a
        # batch is buffered: a backoff it could end would be no backoff under load.
        self._stop = asyncio.Event()
        self._writing = asyncio.Lock()  # one batch in flight: the writer task and flush() take turns
        # The batch in flight is the head of the buffer. An overflow while it is written pushes
        # its oldest items out: they are not lost unless the write fails, so they are counted
        # (as recorded or as dropped) only once the write has ended.
        self._in_flight = 0  # items of the batch in flight still at the head of the buffer
        self._pushed_out = 0  # items of the batch in flight the overflow pushed out
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._last_drop_log = 0.0
        # A writer process takes the calls as they are; a store in this process takes events.
        if isinstance(store, WriterProcess):
            store.on_rejected = self._rejected

    # -- CallObserver ----------------------------------------------------------------------
    def attempt_started(self, offer: Offer) -> None:
        return None

    def attempt_finished(self, offer: Offer, attempt: Attempt, ttft_s: float | None) -> None:
        return None

    def call_finished(self, outcome: CallOutcome) -> None:
        call = finished_call(outcome)  # plain values: nothing for the garbage collector to keep visiting
        if call is None:  # a call that never reached a backend used nothing
            return
        if len(outcome.attempts) > 1:  # it fell back: a row per failed attempt, before the final one
            for row in failed_attempts(outcome, call):
                self.add(row)
        self.add(call)

    # -- buffer ----------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def pending(self) -> tuple[UsageEvent | FinishedCall, ...]:
        """What the buffer holds, oldest first (a copy: for inspection, not for writing)."""
        return tuple(self._buffer)

    def add(self, item: UsageEvent | FinishedCall) -> None:
        if len(self._buffer) >= self.max_buffered:
            self._buffer.popleft()
            if self._in_flight:
                self._in_flight -= 1
                self._pushed_out += 1
            else:
                self._count_dropped(1, "the buffer is full (the store is failing or too slow)")
        self._buffer.append(item)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def next_batch(self) -> list[UsageEvent] | list[FinishedCall]:
        """The oldest items, up to a batch, as the store will be given them; they stay buffered
        until a write takes them. Calls as they are for a writer process, else events, building
        those still calls (in place, once: a retry sends the same objects)."""
        return self._call_batch() if isinstance(self.store, WriterProcess) else self._event_batch()

    def _call_batch(self) -> list[FinishedCall]:
        # Over a writer process the buffer holds calls only: call_finished buffers nothing else.
        return cast("list[FinishedCall]", list(itertools.islice(self._buffer, self.batch_size)))

    def _event_batch(self) -> list[UsageEvent]:
        buffer, i = self._buffer, 0
        batch: list[UsageEvent] = []
        while i < len(buffer) and len(batch) < self.batch_size:
            item = buffer[i]
            if not isinstance(item, UsageEvent):
                try:
                    item = UsageEvent.from_call(item)
                except Exception:
                    log.exception("could not build a usage event")
                    del buffer[i]
                    self._count_dropped(1, "a call could not be turned into an event")
                    continue
                buffer[i] = item
            batch.append(item)
            i += 1
        return batch

    def _rejected(self, count: int) -> None:
        """The writer process could not turn `count` calls of the batch in flight into events:
        they leave the buffer with the batch, counted as dropped rather than recorded."""
        self.recorded -= count  # the batch's whole length is added once it is acknowledged
        self._count_dropped(count, "calls could not be turned into events")

    def _count_dropped(self, count: int, why: str) -> None:
        self.dropped += count
        if self.on_drop is not None:
            try:
                self.on_drop(count)
            except Exception:
                log.exception("usage drop hook failed")
        now = time.monotonic()
        if now - self._last_drop_log > 10 or self._closing:  # one line per 10 s, not per event
            self._last_drop_log = now
            log.error("usage events dropped: %s (%d dropped so far)", why, self.dropped)

    # -- writing ---------------------------------------------------------------------------
    def start(self, on_restart: Callable[[str], None] | None = None) -> None:
        self._task = start_supervised("usage_recorder", self._run, on_restart)  # restarted if it dies

    async def write_batch(self) -> None:
        """Write the oldest batch once; it leaves the buffer only once the store took it, and a
        store failure is raised (the background task retries with backoff, `flush` does not)."""
        async with self._writing:
            if isinstance(self.store, WriterProcess):
                await self._write(self._call_batch(), self.store.record)
            else:
                await self._write(self._event_batch(), self.store.record)

    async def _write(self, batch: list[_Item], record: Callable[[list[_Item]], Awaitable[int]]) -> None:
        """One batch to its store, the buffer and the counts kept (under `_writing`)."""
        if not batch:
            return
        self._in_flight, self._pushed_out = len(batch), 0
        try:
            await record(batch)
        except BaseException:
            if self._pushed_out:
                self._count_dropped(self._pushed_out, "the buffer overflowed while their write failed")
            raise
        finally:
            in_flight, self._in_flight = self._in_flight, 0
        # Overflow may have pushed the oldest of these out meanwhile: pop only what is still there.
        for _ in range(in_flight):
            self._buffer.popleft()
        self.recorded += len(batch)

    async def _run(self) -> None:
        delay = self.retry_initial_s
        while not self._closing:
            if len(self._buffer) < self.batch_size:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
                except TimeoutError:
                    pass
            self._wake.clear()
            while self._buffer and not self._closing:
                try:
                    await self.write_batch()
                    delay = self.retry_initial_s
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.write_failures += 1
                    if self.on_write_failure is not None:
                        self.on_write_failure()
                    log.warning(
                        "usage store write failed (%s: %s); %d events buffered, retrying in %.1fs",
                        type(exc).__name__,
                        exc,
                        len(self._buffer),
                        delay,
                    )
                    await self._sleep_unless_closing(delay)
                    delay = min(delay * 2, self.retry_max_s)

    async def _sleep_unless_closing(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    async def flush(self) -> None:
        """Write everything buffered now (tests and shutdown); raises if the store fails."""
        while self._buffer:
            await self.write_batch()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer, then write what is left, retrying until `timeout_s`."""
        self._closing = True
        self._wake.set()
        self._stop.set()
        if self._task is not None:
            # Lets a write in progress finish. A task cancelled from outside (the event loop's
            # end cancels every task when shutdown was forced) has ended too: its batch stayed
            # buffered and is written below, not lost with a CancelledError.
            await asyncio.wait([self._task])
            if not self._task.cancelled() and self._task.exception() is not None:
                log.error("usage recorder task failed", exc_info=self._task.exception())
        deadline = time.monotonic() + timeout_s
        delay = self.retry_initial_s
        while self._buffer:
            try:
                await self.write_batch()
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    self._count_dropped(
                        len(self._buffer), f"shutdown could not write them ({type(exc).__name__}: {exc})"
                    )
                    self._buffer.clear()
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
        log.info("usage recorder closed: %d events recorded, %d dropped", self.recorded, self.dropped)


class UsageLedger(NamedTuple):
    """What `install_recorder` opened: the store the API reads, the recorder writing to it."""

    store: UsageStore
    recorder: UsageRecorder


def install_recorder(
    settings: Settings,
    redis: Redis | None,
    observers: Observers,
    closers: list[Callable[[], Awaitable[None]]],
    *,
    on_drop: Callable[[int], None] | None = None,
    on_write_failure: Callable[[], None] | None = None,
    on_task_restart: Callable[[str], None] | None = None,
) -> UsageLedger:
    """Open the configured store (for reads here; writes go through a writer process unless
    GATEWAY_USAGE_WRITER=inline), register the recorder with `observers`, and append its
    flush to `closers` (run at shutdown). `on_drop`, `on_write_failure` and `on_task_restart`
    are the metrics hooks. Given these few things rather than the app's state, the ledger depends on nothing
    above it and can be installed without an app."""
    from gateway.usage.stores import open_store, retention_of

    inline = settings.usage_writer != "process"
    store = open_store(settings, redis, prunes=inline)  # else the writer process deletes
    writer: UsageStore | WriterProcess = store
    if not inline:
        writer = WriterProcess(
            settings.redis_url,
            settings.data_dir,
            log_level=settings.log_level,
            cpus=settings.writer_cpus(),
            retention=retention_of(settings),
            events_redis_url=settings.redis_events_url,
            max_apps_per_day=settings.usage_max_apps_per_day,
        )
    recorder = UsageRecorder(
        writer,
        batch_size=settings.usage_batch_size,
        flush_interval_s=settings.usage_flush_s,
        max_buffered=settings.usage_buffer_max,
        on_drop=on_drop,
    )
    recorder.on_write_failure = on_write_failure
    if settings.usage_recording:
        observers.add(recorder)
    else:
        log.warning("usage recording is off (GATEWAY_USAGE_RECORDING=false): calls are not recorded")
    recorder.start(on_task_restart)

    async def close() -> None:
        try:
            await recorder.close(timeout_s=settings.usage_shutdown_flush_s)
        finally:
            if writer is not store:
                await writer.aclose()
            await store.aclose()

    closers.append(close)
    log.info(
        "usage ledger: %s store, written %s",
        store.name,
        "by a writer process" if writer is not store else "in this process",
    )
    return UsageLedger(store, recorder)
