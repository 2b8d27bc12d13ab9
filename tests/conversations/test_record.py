"""What a stored record holds and how it reads back."""

from __future__ import annotations

import orjson

from gateway.conversations.store import StoredResponse

OUTPUT = [{"type": "message", "role": "assistant", "content": "hi"}]


def test_the_input_is_between_the_continued_conversation_and_the_output():
    earlier = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    own = [{"role": "user", "content": "c"}, {"type": "function_call_output", "call_id": "x", "output": "y"}]
    record = StoredResponse({"id": "resp_1", "output": OUTPUT}, earlier + own + OUTPUT, input_from=2)
    assert record.input == own
    assert StoredResponse.decode(record.encode()) == record


def test_a_record_written_before_input_from_existed_reads_as_input_from_the_start():
    data = orjson.dumps(
        {"response": {"id": "resp_1", "output": OUTPUT}, "items": [{"role": "user", "content": "a"}, *OUTPUT]}
    )
    record = StoredResponse.decode(data)
    assert record.input_from == 0 and record.input == [{"role": "user", "content": "a"}]


def test_no_output_and_no_input_is_an_empty_input():
    assert StoredResponse({"id": "r", "output": []}, [], 0).input == []
