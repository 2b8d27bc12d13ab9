"""gateway/proxy/time_limit.py: the fallback loop's per-attempt limit keeps asyncio.timeout's
contract (TimeoutError on expiry; an outside cancellation stays a cancellation)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.proxy.time_limit import sleep_at_least, time_limit


def given_task(delay: float):
    """`time_limit` told its task, as the fallback loop tells it the request's handler."""
    return time_limit(delay, asyncio.current_task())


LIMITS = [asyncio.timeout, time_limit, given_task]


@pytest.mark.parametrize("limit", LIMITS)
async def test_a_block_that_runs_past_the_limit_raises_timeout_error(limit):
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with limit(0.05):
            await asyncio.sleep(5)
    assert 0.049 <= loop.time() - started < 1  # never early (uvloop's clock counts whole ms), one slot late at most
    assert asyncio.current_task().cancelling() == 0  # the task is left as it was: nothing pending


@pytest.mark.parametrize("limit", LIMITS)
async def test_a_block_within_the_limit_is_untouched_and_no_timer_fires_later(limit):
    async with limit(0.05):
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past the limit: had the timer not been cancelled, this would be cancelled
    assert asyncio.current_task().cancelling() == 0


@pytest.mark.parametrize("limit", LIMITS)
async def test_a_cancellation_from_outside_stays_a_cancellation(limit):
    entered = asyncio.Event()

    async def attempt():
        async with limit(5):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    await entered.wait()
    task.cancel()  # the client left
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("limit", LIMITS)
async def test_a_cancellation_from_outside_while_expiring_is_not_swallowed(limit):
    async def attempt():
        async with limit(0.01):
            try:
                await asyncio.sleep(5)
            finally:
                asyncio.current_task().cancel()  # cancelled from outside as the limit fires
                await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(attempt())


@pytest.mark.parametrize("limit", LIMITS)
async def test_errors_inside_pass_through(limit):
    with pytest.raises(KeyError):
        async with limit(5):
            raise KeyError("x")


async def test_limits_ending_in_the_same_slot_share_one_timer_and_each_fires_for_its_own_task():
    """Many attempts at once (one timer per slot, not per attempt): each expired one gets its
    TimeoutError, one that left its block in time is untouched, and nothing fires later."""
    loop = asyncio.get_running_loop()
    timers = []
    call_at = loop.call_at

    def counting_call_at(when, callback, *args, **kwargs):
        if getattr(callback, "__name__", "") == "_fire":  # the limits' timers, not asyncio.sleep's
            timers.append(when)
        return call_at(when, callback, *args, **kwargs)

    loop.call_at = counting_call_at
    try:

        async def attempt(sleep: float) -> str:
            try:
                async with time_limit(0.1):
                    await asyncio.sleep(sleep)
            except TimeoutError:
                return "timeout"
            return "done"

        results = await asyncio.gather(*[attempt(5 if i % 2 else 0) for i in range(20)])
    finally:
        del loop.call_at
    assert results == ["done", "timeout"] * 10
    assert 1 <= len(timers) <= 2  # 20 limits, ending within a slot (or across one boundary)
    await asyncio.sleep(0.15)  # past every slot: the finished attempts' limits fire at nobody
    assert asyncio.current_task().cancelling() == 0


def test_a_finished_event_loop_is_not_kept_alive_by_its_limits():
    import gc
    import weakref

    async def limited() -> None:
        async with time_limit(30):
            await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(limited())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None  # nothing of the time limits' holds it


@pytest.mark.parametrize("seconds", [0.0051, 0.0103, 0.0207])
def test_sleep_at_least_never_ends_early_under_uvloop(seconds):
    import time

    import uvloop

    async def main() -> float:
        worst = 1.0
        for _ in range(20):
            spin = time.perf_counter()
            while time.perf_counter() - spin < 0.0007:  # the loop's cached clock goes stale meanwhile
                pass
            start = time.perf_counter()
            await sleep_at_least(seconds)
            worst = min(worst, time.perf_counter() - start - seconds)
        return worst

    assert uvloop.run(main()) >= 0  # plain asyncio.sleep ends up to ~1 ms early here
