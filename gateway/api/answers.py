"""Answers served from memory and refreshed off the request path: what /v1/rankings polls get.

A ranking over many days takes tens of milliseconds of CPU to read and compute. On a thread
it leaves the event loop free but not the GIL, so each computation slows every proxied call
of its worker; with the aggregates changing under traffic, clients polling the page made one
computation per poll (two pollers took the chat p99 from 6.5 to 36 ms). Here a query's
answer is computed once, kept, and served as it is until `max_age_s` has passed; the first
request after that gets the kept answer at once and starts one refresh in the background.
So the cost is at most one computation per query per `max_age_s`, whatever the number of
pollers, and no poll waits for one: only a query's first request, and the first after the
query sat idle for two intervals or more (whose kept answer could be hours old), wait for
theirs. An answer is at most two intervals plus one computation old.

A refresh that fails (the store is down) is logged and the kept answer stays; the next
request after `max_age_s` tries again. A query's first computation failing fails that request.
With `max_age_s` 0 every request computes its own answer (nothing kept).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("gateway.usage")

Produce = Callable[[], Awaitable[bytes]]


class _Kept:
    __slots__ = ("at", "body", "task")

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.at = 0.0
        self.task: asyncio.Task[bytes] | None = None  # the computation under way, if any


class RefreshedAnswers:
    """The latest answer per query (at most `size` queries), refreshed off the request path."""

    def __init__(self, size: int = 16, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.clock = clock
        self.refreshes = 0  # computations started (first ones and refreshes): for tests and curiosity
        self._kept: OrderedDict[Hashable, _Kept] = OrderedDict()

    async def answer(self, key: Hashable, produce: Produce, max_age_s: float) -> bytes:
        if max_age_s <= 0:
            self.refreshes += 1
            return await produce()
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept[key] = _Kept()
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        if kept.body is None:  # never answered: this request waits (with any other asking meanwhile)
            if kept.task is None:
                kept.task = self._start(key, kept, produce)
            return await asyncio.shield(kept.task)
        age = self.clock() - kept.at
        if kept.task is None and age >= max_age_s:
            kept.task = self._start(key, kept, produce)
        if age >= 2 * max_age_s and kept.task is not None:
            # Older than polling ever lets it get (a refresh starts at one interval): the
            # query sat idle, and the kept answer may be hours old. This request waits for
            # the refresh (the kept answer if it fails), so no answer is served more than
            # two intervals plus one computation old.
            try:
                return await asyncio.shield(kept.task)
            except Exception:
                return kept.body
        return kept.body

    def _start(self, key: Hashable, kept: _Kept, produce: Produce) -> asyncio.Task[bytes]:
        self.refreshes += 1
        task = asyncio.ensure_future(produce())
        task.add_done_callback(lambda done: self._finished(key, kept, done))
        return task

    def _finished(self, key: Hashable, kept: _Kept, task: asyncio.Task[bytes]) -> None:
        kept.task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            kept.body, kept.at = task.result(), self.clock()
        elif kept.body is not None:
            log.warning("refreshing the answer to %s failed (%s); serving the previous one", key, exc)
        elif self._kept.get(key) is kept:
            del self._kept[key]  # its first computation failed: the request saw why; the next one retries
