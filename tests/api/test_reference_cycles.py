"""No call leaves the gateway's frames in reference cycles, however it ends.

The gateway serves with a high young-generation threshold (gateway/api/app.py): what is
freed by reference count goes at once, what sits in a cycle waits for a collection that
may be 50,000 allocations away. A frame of the request path kept in a cycle keeps the
request with it (its body, the parsed payload: a megabyte for a long agent prompt), so a
failure that ties its error to the frames its traceback holds would hold every failed
request's body until then. Each way a call can end is driven here through the real app
(in-process, message by message) against real HTTP upstreams that fail on cue, with the
collector saving what it finds unreachable: none of it may be a frame of `gateway/`.
"""

from __future__ import annotations

import asyncio
import gc
from types import FrameType

import orjson
import pytest

from gateway.api.app import create_app
from gateway.settings import Settings
from tests.support import fault_upstream as F
from tests.support.inprocess import lifespan, post

POLICY = """
backends:
  a:
    type: openai
    base_url: {a}
    circuit: {{failure_threshold: 1000}}
    models:
      a/m: {{upstream_id: m, context_length: 131072}}
  b:
    type: openai
    base_url: {b}
    circuit: {{failure_threshold: 1000}}
    models:
      b/m: {{upstream_id: m, context_length: 131072}}
  small:
    type: openai
    base_url: {b}
    models:
      small/m: {{upstream_id: m, context_length: 4096}}
  emb:
    type: openai
    base_url: {b}
    models:
      emb/m: {{upstream_id: m, kind: embedding}}
routes:
  two: {{models: [a/m, b/m]}}
  one: {{models: [a/m]}}
"""


def _ask(model: str = "two", stream: bool = False, **fields) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "x" * 100_000}], "stream": stream}
    return orjson.dumps(body | fields)


def _messages(stream: bool = False) -> bytes:
    body = {"model": "two", "max_tokens": 64, "messages": [{"role": "user", "content": "x" * 100_000}]}
    return orjson.dumps(body | {"stream": stream})


def _responses(stream: bool = False) -> bytes:
    return orjson.dumps({"model": "two", "input": "x" * 100_000, "stream": stream, "store": False})


MESSAGES, RESPONSES, COUNT = "/v1/messages", "/v1/responses", "/v1/messages/count_tokens"

# case -> (upstream a's step, upstream b's step, request body, the client leaves mid-answer[, path])
CASES = {
    "answered": (F.ok(), F.ok(), _ask(), False),
    "streamed": (F.ok(), F.ok(), _ask(stream=True), False),
    "failed over": (F.status(503), F.ok(), _ask(), False),
    "failed over before a stream": (F.reset(), F.ok(), _ask(stream=True), False),
    "every candidate failed": (F.status(503), F.status(500), _ask(), False),
    "a 400 from the upstream": (F.status(400), F.ok(), _ask(model="one"), False),
    "stream cut and continued": (F.cut(after=5), F.ok(), _ask(stream=True), False),
    "stream cut, nowhere to continue": (F.cut(after=5), F.ok(), _ask(model="one", stream=True), False),
    "unknown model": (F.ok(), F.ok(), _ask(model="nope"), False),
    "no candidate fits the prompt": (F.ok(), F.ok(), _ask(model="small/m"), False),
    "malformed body": (F.ok(), F.ok(), b'{"model": "two", "messages": 3}', False),
    "client left mid-stream": (F.stall(after=5), F.ok(), _ask(model="one", stream=True), True),
    "messages: every candidate failed": (F.status(503), F.status(500), _messages(), False, MESSAGES),
    "messages: stream cut and continued": (F.cut(after=5), F.ok(), _messages(stream=True), False, MESSAGES),
    "responses: every candidate failed": (F.status(503), F.status(500), _responses(), False, RESPONSES),
    "responses: stream cut and continued": (F.cut(after=5), F.ok(), _responses(stream=True), False, RESPONSES),
    "count_tokens of an embedding model": (F.ok(), F.ok(), _messages().replace(b'"two"', b'"emb/m"'), False, COUNT),
}


@pytest.fixture(scope="module")
def upstreams():
    a, b = F.FaultUpstream("a").start(), F.FaultUpstream("b").start()
    yield a, b
    a.stop()
    b.stop()


def _gateway_frames_in_cycles() -> list[str]:
    """What a collection now finds unreachable that is a frame of the gateway's code."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sorted(
            f"{o.f_code.co_qualname} ({o.f_code.co_filename.rpartition('gateway/')[2]})"
            for o in gc.garbage
            if isinstance(o, FrameType) and "/gateway/" in o.f_code.co_filename
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("case", list(CASES))
async def test_a_call_leaves_no_frame_of_the_gateway_in_a_reference_cycle(case, upstreams, tmp_path):
    a, b = upstreams
    step_a, step_b, body, leaves, *path = CASES[case]
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(a=a.base_url, b=b.base_url))
    app = create_app(Settings(config=policy, data_dir=tmp_path / "data", usage_recording=False))
    async with lifespan(app) as state:
        statuses = []
        for warm in (True, False):  # the first call builds what lives on (pools, metric series)
            gc.collect()
            for _ in range(1 if warm else 3):
                a.always(step_a)
                b.always(step_b)
                left = asyncio.Event()
                if leaves:
                    asyncio.get_running_loop().call_later(0.1, left.set)
                sent = await post(app, state, body, left=left, path=path[0] if path else "/v1/chat/completions")
                statuses.append(sent[0]["status"] if sent else None)
            found = _gateway_frames_in_cycles()
        assert found == [], f"{case}: the call's frames wait for the collector: {found}"
    expected = {
        "failed over": 200,
        "failed over before a stream": 200,
        "every candidate failed": 502,
        "messages: every candidate failed": 502,
        "responses: every candidate failed": 502,
        "count_tokens of an embedding model": 400,
        "a 400 from the upstream": 400,
        "unknown model": 404,
        "no candidate fits the prompt": 400,
        "malformed body": 400,
    }.get(case, 200)
    assert statuses == [expected] * 4, statuses  # the ending each case names, every time
