"""Hedged attempts: when the first candidate is slow to produce content, start the next too.

Opt-in per route (`hedge: {after_ms: N}`). Open-model providers vary most in their time to
first token, and a request stuck in one provider's queue is often answered sooner by
another: past `after_ms` without content from the first attempt, the second starts, the
first to produce content is taken, and the other is cancelled with `HEDGE_LOST` as the
reason (its attempt is recorded under that label: in the ledger, never billed to the key).

`race` is generic over what an attempt returns: the fallback loop (`gateway.proxy.attempts`)
gives it two attempt coroutines and gets back the winner, or every failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# The cancellation message of the attempt that lost a race; also its attempt's error label.
HEDGE_LOST = "hedge_lost"
# The label of an answer closed because the race itself was called off (the client left).
CANCELLED = "cancelled"


@dataclass(slots=True)
class RaceResult(Generic[T]):
    winner: T | None = None
    errors: list[Exception] = field(default_factory=list)  # failed attempts, in the order they ended
    hedged: bool = False  # whether the second attempt was started


async def race(
    first: Awaitable[T],
    second: Callable[[], Awaitable[T]],
    after_s: float,
    discard: Callable[[T, str], Awaitable[None]],
    decisive: Callable[[Exception], bool] | None = None,
) -> RaceResult[T]:
    """Run `first`; if it has not finished `after_s` later, start `second()` too. The first to
    succeed wins and the other is cancelled (and awaited: its attempt is recorded before the
    winner's); one that succeeded in the same instant is handed to `discard` as HEDGE_LOST.
    A failure leaves the other running, unless `decisive` says it ends the race (a request
    the upstream judged invalid: the other would be waited on for nothing), which then ends
    as if the other had lost. If the caller is cancelled, both are, and an answer already
    won goes to `discard` as CANCELLED: it lost to nothing, the call was called off."""
    loop = asyncio.get_running_loop()
    result: RaceResult[T] = RaceResult()
    tasks: set[asyncio.Task[T]] = {loop.create_task(_awaited(first))}
    try:
        done, tasks = await asyncio.wait(tasks, timeout=after_s)
        if not done:
            result.hedged = True
            tasks.add(loop.create_task(_awaited(second())))
        while True:
            for task in done:
                error = task.exception()
                if error is None:
                    if result.winner is None:
                        result.winner = task.result()
                    else:
                        await discard(task.result(), HEDGE_LOST)
                    continue
                if not isinstance(error, Exception):
                    raise error
                result.errors.append(error)
            decided = result.winner is None and decisive is not None and any(map(decisive, result.errors))
            if result.winner is not None or decided:
                for answer in await _cancel(tasks, HEDGE_LOST):
                    await discard(answer, HEDGE_LOST)  # succeeded as it was being cancelled
                return result
            if not tasks:
                return result
            done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # Cancelled (the client left, shutdown) or failed: nothing is returned, so every
        # answer already won or won meanwhile is closed here (each holds an upstream
        # connection and a slot of its backend's calls in flight).
        late: list[T] = []
        try:
            late = await _cancel(tasks, None)
        finally:
            for answer in ([result.winner] if result.winner is not None else []) + late:
                await asyncio.shield(discard(answer, CANCELLED))
        raise


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _cancel(tasks: set[asyncio.Task[T]], reason: str | None) -> list[T]:
    """Cancel and await `tasks`; the results of those that succeeded before the cancellation
    reached them (the caller closes them)."""
    for task in tasks:
        task.cancel(reason)
    if tasks:
        await asyncio.wait(tasks)
    succeeded = []
    for task in tasks:
        if task.cancelled():
            continue
        if task.exception() is None:  # retrieved: a loser that failed as it was cancelled is not "never retrieved"
            succeeded.append(task.result())
    return succeeded
