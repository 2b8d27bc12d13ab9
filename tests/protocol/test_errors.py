"""How much of a client's name or id an error message quotes."""

from __future__ import annotations

import orjson
import pytest

from gateway.protocol.chat import parse_chat_request
from gateway.protocol.embeddings import parse_embeddings_request
from gateway.protocol.errors import ECHO_LIMIT, GatewayError, echoed
from gateway.protocol.responses import responses_to_chat
from gateway.routing.classify import classify


def test_a_name_up_to_the_limit_is_quoted_whole_and_a_longer_one_cut_with_an_ellipsis():
    assert echoed("qwen/qwen3-coder") == "qwen/qwen3-coder"
    assert echoed("a" * ECHO_LIMIT) == "a" * ECHO_LIMIT
    assert echoed("a" * ECHO_LIMIT + "b") == "a" * ECHO_LIMIT + "…"
    assert echoed(5) == "5"  # a model of the wrong type is quoted as its text


# Every error that quotes a value the client sent, with a 100,000-character value: each
# quoted at most ECHO_LIMIT characters, not sent back whole (nor into the logs and proxies
# that keep bodies). Found by a hostile pass: these five quoted it whole.
_HUGE = "x" * 100_000


def _refusal(call) -> GatewayError:
    with pytest.raises(GatewayError) as refused:
        call()
    return refused.value


@pytest.mark.parametrize(
    "call",
    [
        lambda: responses_to_chat({"model": "m", "input": [{"type": _HUGE}]}),
        lambda: responses_to_chat({"model": "m", "input": "hi", "tools": [{"type": _HUGE}]}),
        lambda: responses_to_chat({"model": "m", "input": "hi", "tool_choice": {"type": _HUGE}}),
        lambda: parse_embeddings_request(orjson.dumps({"model": "e", "input": "hi", "encoding_format": _HUGE})),
        lambda: classify(
            parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'),
            {"x-gateway-task": _HUGE},
            None,  # type: ignore[arg-type]  # the header is judged before any fact is read
            None,  # type: ignore[arg-type]
        ),
    ],
    ids=["input-item-type", "tool-type", "tool-choice", "encoding-format", "task-header"],
)
def test_a_refused_client_value_is_quoted_at_most_the_echo_limit(call):
    error = _refusal(call)
    assert error.status == 400
    assert len(error.message) < ECHO_LIMIT + 300, error.message[:300]
    assert "x" * ECHO_LIMIT + "…" in error.message
