"""Rankings answers are kept and refreshed off the request path: pollers cost no computation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.api.answers import RefreshedAnswers
from tests.routing.support import Clock


class Producer:
    """Answers b'1', b'2', ... in turn; each computation waits until `release()` when `held`."""

    def __init__(self, held: bool = False) -> None:
        self.calls = 0
        self.held = held
        self.gate = asyncio.Event()
        self.fail_next = False

    def release(self) -> None:
        self.gate.set()

    async def __call__(self) -> bytes:
        self.calls += 1
        number = self.calls
        if self.held:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("store down")
        return str(number).encode()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_many_polls_within_the_interval_cost_one_computation():
    clock = Clock()
    answers, produce = RefreshedAnswers(clock=clock), Producer()
    bodies = [await answers.answer("week", produce, 5.0) for _ in range(100)]
    clock.advance(4.9)
    bodies += [await answers.answer("week", produce, 5.0) for _ in range(100)]
    assert bodies == [b"1"] * 200 and produce.calls == 1 and answers.refreshes == 1


async def test_concurrent_first_requests_share_one_computation():
    answers, produce = RefreshedAnswers(clock=Clock()), Producer(held=True)
    waiting = [asyncio.create_task(answers.answer("week", produce, 5.0)) for _ in range(10)]
    await settle()
    assert produce.calls == 1 and not any(t.done() for t in waiting)  # the first answer is awaited
    produce.release()
    assert await asyncio.gather(*waiting) == [b"1"] * 10 and produce.calls == 1


async def test_an_old_answer_is_served_at_once_while_one_refresh_runs_in_the_background():
    clock = Clock()
    answers, produce = RefreshedAnswers(clock=clock), Producer()
    assert await answers.answer("week", produce, 5.0) == b"1"
    produce.held = True
    clock.advance(5.0)
    # Twenty polls while the refresh is held: each is answered from memory, without waiting.
    assert [await answers.answer("week", produce, 5.0) for _ in range(20)] == [b"1"] * 20
    await settle()
    assert produce.calls == 2 and answers.refreshes == 2  # one refresh, not one per poll
    assert await answers.answer("week", produce, 5.0) == b"1"  # still held: still the kept answer
    produce.release()
    await settle()
    assert await answers.answer("week", produce, 5.0) == b"2" and produce.calls == 2
    clock.advance(4.0)
    assert await answers.answer("week", produce, 5.0) == b"2" and produce.calls == 2  # refreshed 4 s ago


async def test_a_failed_refresh_keeps_the_previous_answer_and_is_retried_later(caplog):
    clock = Clock()
    answers, produce = RefreshedAnswers(clock=clock), Producer()
    assert await answers.answer("week", produce, 5.0) == b"1"
    clock.advance(5.0)
    produce.fail_next = True
    with caplog.at_level(logging.WARNING, logger="gateway.usage"):
        assert await answers.answer("week", produce, 5.0) == b"1"
        await settle()
    assert produce.calls == 2 and "serving the previous one" in caplog.text
    assert await answers.answer("week", produce, 5.0) == b"1"  # the failed refresh started the retry
    await settle()
    assert produce.calls == 3 and await answers.answer("week", produce, 5.0) == b"3"


async def test_a_failed_first_computation_fails_its_request_and_the_next_one_retries():
    answers, produce = RefreshedAnswers(clock=Clock()), Producer()
    produce.fail_next = True
    with pytest.raises(RuntimeError, match="store down"):
        await answers.answer("week", produce, 5.0)
    assert await answers.answer("week", produce, 5.0) == b"2" and produce.calls == 2


async def test_each_query_is_kept_apart_and_only_the_latest_few_are_kept():
    answers, produce = RefreshedAnswers(size=2, clock=Clock()), Producer()
    assert [await answers.answer(q, produce, 5.0) for q in ("day", "week", "month")] == [b"1", b"2", b"3"]
    assert await answers.answer("month", produce, 5.0) == b"3"
    assert await answers.answer("day", produce, 5.0) == b"4"  # the oldest query was let go
    assert produce.calls == 4


async def test_no_interval_computes_every_answer():
    answers, produce = RefreshedAnswers(clock=Clock()), Producer()
    assert [await answers.answer("week", produce, 0) for _ in range(3)] == [b"1", b"2", b"3"]


async def test_the_first_request_after_an_idle_spell_waits_for_a_fresh_answer():
    """Hostile testing: the kept answer was served however old it was (the first view after
    an hour showed the hour-old ranking, the README promising one interval): past two
    intervals the request waits for the refresh; a poll within them still never waits."""
    clock = Clock()
    answers, produce = RefreshedAnswers(clock=clock), Producer()
    assert await answers.answer("week", produce, 5.0) == b"1"
    clock.advance(3600.0)  # idle for an hour
    assert await answers.answer("week", produce, 5.0) == b"2" and produce.calls == 2  # waited: fresh
    clock.advance(6.0)  # a poll past one interval, within two: the kept answer at once
    produce.held = True
    assert await answers.answer("week", produce, 5.0) == b"2"
    produce.release()
    await settle()
    assert produce.calls == 3
    # A refresh that fails after the idle spell: the kept answer, not an error.
    clock.advance(3600.0)
    produce.fail_next = True
    assert await answers.answer("week", produce, 5.0) == b"3" and produce.calls == 4
