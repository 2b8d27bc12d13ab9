"""`race`: the second attempt starts only past the hedge time; the first success wins, the
other is cancelled with HEDGE_LOST; a failure leaves the other running; a cancelled caller
cancels both."""

from __future__ import annotations

import asyncio

import pytest

from gateway.proxy.hedge import CANCELLED, HEDGE_LOST, race


class Attempts:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: dict[str, tuple] = {}
        self.discarded: list[str] = []
        self.reasons: list[str] = []

    async def run(self, name: str, delay: float, fail: bool = False) -> str:
        self.started.append(name)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError as exc:
            self.cancelled[name] = exc.args
            raise
        if fail:
            raise ValueError(name)
        return name

    async def discard(self, value: str, reason: str) -> None:
        self.discarded.append(value)
        self.reasons.append(reason)


async def test_no_hedge_when_the_first_finishes_in_time():
    runs = Attempts()
    result = await race(runs.run("a", 0.01), lambda: runs.run("b", 0), 0.2, runs.discard)
    assert (result.winner, result.hedged, runs.started) == ("a", False, ["a"])


async def test_the_hedge_wins_and_the_first_is_cancelled_as_lost():
    runs = Attempts()
    result = await race(runs.run("a", 5), lambda: runs.run("b", 0.05), 0.05, runs.discard)
    assert (result.winner, result.hedged, result.errors) == ("b", True, [])
    assert runs.cancelled == {"a": (HEDGE_LOST,)}


async def test_a_failure_leaves_the_other_running():
    runs = Attempts()
    result = await race(runs.run("a", 0.2), lambda: runs.run("b", 0, fail=True), 0.05, runs.discard)
    assert result.winner == "a" and [str(e) for e in result.errors] == ["b"] and runs.cancelled == {}


async def test_both_failing_gives_both_errors_in_the_order_they_ended():
    runs = Attempts()
    result = await race(runs.run("a", 0.2, fail=True), lambda: runs.run("b", 0, fail=True), 0.05, runs.discard)
    assert result.winner is None and [str(e) for e in result.errors] == ["b", "a"]


async def test_a_cancelled_caller_cancels_both():
    runs = Attempts()
    task = asyncio.create_task(race(runs.run("a", 5), lambda: runs.run("b", 5), 0.01, runs.discard))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(runs.cancelled) == {"a", "b"}


async def _slow_to_stop(name: str, runs: Attempts, outcome: str | None) -> str:
    """An attempt that takes 0.3 s to wind down once cancelled (an answer being closed), then
    either ends cancelled (outcome None) or returns `outcome` (it succeeded meanwhile)."""
    runs.started.append(name)
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError as exc:
        runs.cancelled[name] = exc.args
        await asyncio.sleep(0.3)
        if outcome is None:
            raise
        return outcome
    return name


async def test_a_caller_cancelled_while_the_loser_stops_still_closes_the_winner():
    # The winner is chosen, the loser takes a while to stop, and the client leaves meanwhile:
    # nothing is returned, so the winner's answer must be closed (its connection and slot).
    runs = Attempts()
    task = asyncio.create_task(race(_slow_to_stop("a", runs, None), lambda: runs.run("b", 0.05), 0.05, runs.discard))
    await asyncio.sleep(0.2)  # b has won; a is winding down
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs.cancelled["a"] == (HEDGE_LOST,)
    # Closed as called off, not as lost: it won, and nobody took it (hostile testing found it
    # recorded as the losing hedge).
    assert (runs.discarded, runs.reasons) == (["b"], [CANCELLED])


async def test_a_loser_that_succeeds_as_it_is_cancelled_is_discarded():
    runs = Attempts()
    result = await race(_slow_to_stop("a", runs, "a-late"), lambda: runs.run("b", 0.05), 0.05, runs.discard)
    assert (result.winner, runs.discarded, runs.reasons) == ("b", ["a-late"], [HEDGE_LOST])
