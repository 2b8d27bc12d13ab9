"""`time_limit(delay)`: `asyncio.timeout(delay)` for the fallback loop, at less cost per attempt.

Every attempt runs under a time limit. `asyncio.timeout` (3.11) builds a `Timeout` with a
state machine, looks the loop up twice and the task once; profiled under wrk it was the
single most sampled line of the gateway's own code (3.3% of the gateway's CPU at c=16).
This is the same contract with only what the loop needs: when the limit passes, the task is
cancelled and the `CancelledError` that results leaves the block as `TimeoutError`, unless
the task was also cancelled from outside (the client left, shutdown), which then propagates
as asyncio.timeout lets it (`Task.uncancel` accounting).

No timer per attempt either: under uvloop a `call_later` and its `cancel` cost about 2 us
(a libuv timer started, stopped and closed), still 1.5% of the gateway's samples. Limits
are kept in slots of `SLOT_S` by when they end (`_Deadlines`, one per event loop), with one
timer per slot that has any: an attempt adds itself to its slot's set and leaves it on
exit, and a limit fires at most `SLOT_S` late (attempts' limits are seconds long).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from types import TracebackType
from typing import Any

SLOT_S = 0.05  # how late a limit may fire


class _Deadlines:
    """The limits of one event loop, by the slot in which each ends; a slot's timer fires
    them all (those still inside their block: one that left is no longer in the set). A
    slot's set stays, empty, until its timer has fired: under steady traffic a slot keeps
    getting new limits, and no timer is cancelled and made again. It holds no reference to
    its loop (it is the value of a weak mapping keyed by the loop: one would keep the loop,
    and every loop a test suite runs, alive)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[int, set[TimeLimit]] = {}

    def add(self, limit: TimeLimit, delay: float, loop: asyncio.AbstractEventLoop) -> int:
        slot = int((loop.time() + delay) / SLOT_S) + 1  # its end, rounded up
        limits = self._slots.get(slot)
        if limits is None:
            limits = self._slots[slot] = set()
            loop.call_at(slot * SLOT_S, self._fire, slot)
        limits.add(limit)
        return slot

    def remove(self, limit: TimeLimit, slot: int) -> None:
        limits = self._slots.get(slot)
        if limits is not None:
            limits.discard(limit)

    def _fire(self, slot: int) -> None:
        for limit in self._slots.pop(slot, ()):
            limit.expire()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = weakref.WeakKeyDictionary()


def _deadlines(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    deadlines = _by_loop.get(loop)
    if deadlines is None:
        deadlines = _by_loop[loop] = _Deadlines()
    return deadlines


class TimeLimit:
    __slots__ = ("_cancelling", "_deadlines", "_delay", "_expired", "_slot", "_task")

    def __init__(self, delay: float, task: asyncio.Task[Any] | None = None) -> None:
        self._delay = delay
        self._expired = False
        self._cancelling = 0
        self._task: asyncio.Task[Any] | None = task
        self._deadlines: _Deadlines | None = None
        self._slot = 0

    async def __aenter__(self) -> TimeLimit:
        task = self._task if self._task is not None else asyncio.current_task()
        if task is None:
            raise RuntimeError("time_limit() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = task.get_loop()
        deadlines = self._deadlines = _deadlines(loop)
        self._slot = deadlines.add(self, self._delay, loop)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        deadlines = self._deadlines
        if deadlines is not None:
            self._deadlines = None
            deadlines.remove(self, self._slot)
        if self._expired:
            task = self._task
            assert task is not None
            if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def expire(self) -> None:
        """The limit has passed (its slot's timer): cancel the block's task."""
        if self._deadlines is None:  # left its block already
            return
        self._deadlines = None
        self._expired = True
        assert self._task is not None
        self._task.cancel()


def time_limit(delay: float, task: asyncio.Task[Any] | None = None) -> TimeLimit:
    """An async context manager that raises `TimeoutError` if its block runs past `delay`
    seconds (at most `SLOT_S` later).

    `task`: the task running the block, when the caller has it already (looking it up,
    `asyncio.current_task()`, is a Python function on 3.11, and every attempt would call it);
    else it is looked up on entry."""
    return TimeLimit(delay, task)


async def sleep_at_least(seconds: float) -> None:
    """`asyncio.sleep`, never short. Under uvloop a sleep can end up to a millisecond early
    (its clock counts whole milliseconds, read at the start of a loop turn); where the wait
    is a floor someone else set (an upstream's `Retry-After`), the rest is slept too."""
    until = time.perf_counter() + seconds
    await asyncio.sleep(seconds)
    while (left := until - time.perf_counter()) > 0:
        await asyncio.sleep(left)
