"""The rankings API's answers: computed off the event loop, reused only while their inputs are unchanged."""

from __future__ import annotations

import threading

from gateway.api.rankings import AnswerMemo


async def test_an_answer_is_reused_only_while_its_inputs_are_unchanged():
    memo = AnswerMemo()
    computed: list[int] = []

    def compute(value: int) -> dict:
        computed.append(value)
        return {"value": value}

    assert await memo.answer("week", {"day": 1}, lambda: compute(1)) == b'{"value":1}'
    assert await memo.answer("week", {"day": 1}, lambda: compute(2)) == b'{"value":1}'  # same aggregates
    assert await memo.answer("week", {"day": 2}, lambda: compute(3)) == b'{"value":3}'  # they changed
    assert await memo.answer("month", {"day": 2}, lambda: compute(4)) == b'{"value":4}'  # another query
    assert computed == [1, 3, 4] and memo.computed == 3


async def test_only_the_latest_few_answers_are_kept():
    memo = AnswerMemo(size=2)
    for query in ("day", "week", "month"):
        await memo.answer(query, 0, lambda query=query: query)
    assert await memo.answer("day", 0, lambda: "again") == b'"again"'  # the oldest went first
    assert await memo.answer("month", 0, lambda: "not again") == b'"month"'


async def test_answers_are_computed_off_the_event_loop_thread():
    memo = AnswerMemo()
    threads: list[int] = []
    await memo.answer("week", 0, lambda: threads.append(threading.get_ident()))
    assert threads and threads[0] != threading.get_ident()
