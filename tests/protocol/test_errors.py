"""How much of a client's name or id an error message quotes."""

from __future__ import annotations

from gateway.protocol.errors import ECHO_LIMIT, echoed


def test_a_name_up_to_the_limit_is_quoted_whole_and_a_longer_one_cut_with_an_ellipsis():
    assert echoed("qwen/qwen3-coder") == "qwen/qwen3-coder"
    assert echoed("a" * ECHO_LIMIT) == "a" * ECHO_LIMIT
    assert echoed("a" * ECHO_LIMIT + "b") == "a" * ECHO_LIMIT + "…"
    assert echoed(5) == "5"  # a model of the wrong type is quoted as its text
