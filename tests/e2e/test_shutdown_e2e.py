"""SIGTERM as Kubernetes and docker send it: stop accepting, let in-flight streams finish
up to GATEWAY_SHUTDOWN_GRACE_S, run the shutdown steps (usage flush), exit 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.support import fault_upstream as fault
from tests.support.fault_upstream import FaultUpstream
from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.support.services import REPO

WORDS = " ".join(f"word{i}" for i in range(1, 17))


def policy(base_url: str) -> str:
    return one_backend_policy(base_url, timeout_s=60)


class StreamReader(threading.Thread):
    """Reads one streamed answer in the background; `first` is set at the first content byte."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.first = threading.Event()
        self.body = b""
        self.error: Exception | None = None

    def run(self) -> None:
        body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Count."}]}
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=30) as response:
                for chunk in response.iter_bytes():
                    self.body += chunk
                    if b"word1 " in self.body:
                        self.first.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.first.set()


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_streams_then_exits_zero(start_gateway, upstream, workers):
    # Sixteen words 0.25 s apart: a four-second stream, well inside the grace period. How
    # long the gateway takes to stop accepting does not matter: the stream was unfinished
    # when SIGTERM came (uvicorn found its connection open), and it must arrive whole.
    upstream.reset(content=WORDS, chunk_delay_s=0.25)
    gw = start_gateway(policy(upstream.base_url), workers=workers, env={"GATEWAY_SHUTDOWN_GRACE_S": "60"})
    reader = StreamReader(gw.url)
    reader.start()
    assert reader.first.wait(30) and reader.error is None
    before_sigterm = reader.body
    gw.signal(signal.SIGTERM)
    assert b"[DONE]" not in before_sigterm
    poll(lambda: refuses_connections(gw.url), what="new connections to be refused after SIGTERM", context=gw.log)
    reader.join(60)
    assert not reader.is_alive() and reader.error is None, reader.error
    text = reader.body.decode()
    assert [w for w in WORDS.split() if f'"{w} "' in text] == WORDS.split(), (
        "the in-flight stream was cut instead of drained"
    )
    assert reader.body.rstrip().endswith(b"data: [DONE]")
    poll(lambda: upstream.streams_completed == 1, what="the upstream to finish its stream")
    assert upstream.streams_aborted == 0
    assert gw.proc.wait(30) == 0
    assert "Waiting for connections to close" in gw.log()  # uvicorn's word for "shut down with this stream in flight"
    assert gw.log().count("gateway stopped after") == workers  # each worker ran its shutdown steps


def test_workers_refuse_new_connections_while_draining_once_their_usage_writers_run(start_gateway, upstream):
    """Hostile testing: each worker's usage writer process (started at the first recorded
    call) inherited the listening socket, since uvloop's subprocess spawn closes no inherited
    descriptor, and outlives its worker's drain: during a rolling restart new connections
    were accepted by the kernel, never served, then reset (3 s here; up to the grace period)."""
    upstream.reset(content=WORDS, chunk_delay_s=0.5)  # an eight-second stream
    env = {"GATEWAY_SHUTDOWN_GRACE_S": "60", "GATEWAY_USAGE_FLUSH_S": "0.05"}
    gw = start_gateway(policy(upstream.base_url), workers=2, env=env)
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(4):  # a recorded call or two for each worker: their writers start
        assert httpx.post(gw.url + "/v1/chat/completions", json=ask, timeout=30).status_code == 200

    def writers() -> list[str]:
        found = subprocess.run(["pgrep", "-f", "gateway.usage.writer"], capture_output=True, text=True).stdout.split()
        return [pid for pid in found if _descends_from(int(pid), gw.proc.pid)]

    poll(lambda: len(writers()) >= 1, what="a usage writer process to start")
    upstream.reset(content=WORDS, chunk_delay_s=0.5)
    reader = StreamReader(gw.url)
    reader.start()
    assert reader.first.wait(30) and reader.error is None
    gw.signal(signal.SIGTERM)
    poll(lambda: refuses_connections(gw.url), what="new connections to be refused after SIGTERM", context=gw.log)
    assert reader.is_alive(), "refused only once the drain had ended"
    reader.join(60)
    assert reader.error is None and reader.body.rstrip().endswith(b"data: [DONE]")
    assert gw.proc.wait(30) == 0


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def test_streams_longer_than_the_grace_period_are_cut_with_an_error_event_and_the_gateway_still_exits_zero(
    start_gateway, upstream
):
    upstream.reset(content=" ".join(["word"] * 300), chunk_delay_s=0.2)  # a minute
    gw = start_gateway(policy(upstream.base_url), env={"GATEWAY_SHUTDOWN_GRACE_S": "1"})
    reader = StreamReader(gw.url)
    reader.start()
    poll(lambda: b"word" in reader.body, what="the stream's first word")
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(30) == 0
    reader.join(30)
    assert not reader.is_alive()
    # The client's stream ends cleanly (no cut chunked body) with the error event a stream that
    # breaks mid-answer ends with, saying why: an SDK raises rather than taking a cut answer as whole.
    assert reader.error is None, reader.error
    chunks = chunks_before_the_shutdown_event(reader.body)
    assert chunks and all(c["choices"] for c in chunks)
    log = gw.log()
    assert "timeout graceful shutdown exceeded" in log
    assert "gateway stopped after" in log
    # One warning says what happened; the cancellation is not logged as a crash.
    warnings = [line.split(" WARNING ", 1)[1] for line in log.splitlines() if " WARNING gateway.proxy: " in line]
    assert warnings == ["gateway.proxy: stream from up cut mid-answer: The gateway is shutting down."]
    assert "Traceback" not in log and "CancelledError" not in log and "Exception in ASGI application" not in log
    # In the ledger as cut by the shutdown, not as a client that left (it had not), with the
    # part of the answer the client got: its prompt and one token per chunk it read (estimated).
    with sqlite3.connect(Path(gw.dir) / "data" / "usage.sqlite3") as db:
        rows = db.execute(
            "SELECT status, error, final, prompt_tokens, completion_tokens, estimated FROM events"
        ).fetchall()
    assert len(rows) == 1
    status, error, final, prompt_tokens, completion_tokens, estimated = rows[0]
    assert (status, error, final, estimated) == (503, "shutdown", 1, 1)
    assert prompt_tokens > 0 and completion_tokens == len(chunks)


# Two backends, the second continuing a stream the first breaks (gateway.proxy.continuation).
CONTINUED = """
backends:
  flaky:
    type: openai
    base_url: {primary}
    api_key: sk-flaky-123456
    timeout_s: 60
    models: {{test/small: {{}}}}
  steady:
    type: openai
    base_url: {fallback}
    api_key: sk-steady-123456
    timeout_s: 60
    models: {{test/large: {{prefill: continue_final_message}}}}
routes:
  auto:
    strategy: ordered
    models: [test/small, test/large]
"""


@pytest.mark.parametrize(
    "continuing, read, rows",
    [
        # The continuing stream sends 5 tokens, then nothing (its idle limit, 10 s, is far).
        (
            fault.stall(after=5),
            45,
            # Its part estimated from its events (its role delta, its 5 tokens), with the 40
            # the first stream delivered.
            [("flaky", 502, "protocol", 0, 40), ("steady", 503, "shutdown", 1, 46)],
        ),
        # The continuing backend never answers: cut while the candidates are asked.
        (
            fault.hang(),
            40,
            [("steady", 499, "cancelled", 0, 0), ("flaky", 503, "shutdown", 1, 40)],
        ),
    ],
    ids=["while-relayed", "while-asked"],
)
def test_a_continuation_cut_by_the_grace_period_ends_like_any_stream_shutdown_cuts(
    start_gateway, continuing, read, rows
):
    """Review: a stream that broke and was being continued elsewhere when shutdown's grace
    period ran out was recorded as a client that left (a 499, though the client was there),
    its stream stopped without a word, and the cancellation logged with its traceback. It
    ends as the first relay ends a stream shutdown cuts: the shutdown's error event, a 503
    `shutdown` in the ledger, one warning."""
    primary, fallback = FaultUpstream("flaky").start(), FaultUpstream("steady").start()
    try:
        primary.script(fault.cut(after=40))
        fallback.script(continuing)
        config = CONTINUED.format(primary=primary.base_url, fallback=fallback.base_url)
        gw = start_gateway(config, env={"GATEWAY_SHUTDOWN_GRACE_S": "1"})
        reader = StreamReader(gw.url)
        reader.start()
        poll(lambda: len(fallback.seen) == 1 and reader.body.count(b'"t') >= read, what="the continuation under way")
        gw.signal(signal.SIGTERM)
        assert gw.proc.wait(30) == 0
        reader.join(30)
    finally:
        primary.stop()
        fallback.stop()
    assert not reader.is_alive() and reader.error is None, reader.error
    chunks = chunks_before_the_shutdown_event(reader.body)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "".join(f"t{i} " for i in range(read))
    log = gw.log()
    warnings = [line.split(" WARNING ", 1)[1] for line in log.splitlines() if " WARNING gateway.proxy: " in line]
    assert warnings == [
        "gateway.proxy: stream from flaky broke mid-answer: flaky: upstream broke off mid-answer",
        "gateway.proxy: stream from flaky broke after 40 tokens (protocol): continuing it elsewhere",
        f"gateway.proxy: stream from {rows[-1][0]} cut mid-answer: The gateway is shutting down.",
    ]
    assert "Traceback" not in log and "CancelledError" not in log and "Exception in ASGI application" not in log
    with sqlite3.connect(Path(gw.dir) / "data" / "usage.sqlite3") as db:
        query = "SELECT backend, status, error, final, completion_tokens FROM events ORDER BY attempt"
        assert db.execute(query).fetchall() == rows


def test_a_gateway_that_cannot_start_exits_non_zero(tmp_path):
    """uvicorn reports a failed start (here: the port is taken) only through the exit code."""
    config = tmp_path / "policy.yaml"
    config.write_text((REPO / "policies" / "default.yaml").read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
            cwd=REPO,
            env={**os.environ, "GATEWAY_DATA_DIR": str(tmp_path / "data")},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode != 0, result.stderr


def test_a_call_cut_by_shutdown_before_its_answer_is_still_in_the_ledger(start_gateway, upstream):
    # A non-streamed call whose upstream takes longer than the grace period: the server
    # cancels it at shutdown. It must still be accounted (a row, and the key's concurrency
    # ticket settled) rather than vanish.
    # The client is told why in its API's error (it got uvicorn's plain-text 500, and the log
    # a CancelledError traceback), streamed or not, since its stream had not begun.
    upstream.reset(delay_s=30)
    gw = start_gateway(policy(upstream.base_url), env={"GATEWAY_SHUTDOWN_GRACE_S": "1"})
    answers: list[httpx.Response] = []

    def call(stream: bool) -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": "Count."}], "stream": stream}
        answers.append(httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30))

    callers = [threading.Thread(target=call, args=(stream,), daemon=True) for stream in (False, True)]
    for caller in callers:
        caller.start()
    poll(lambda: len(upstream.received) == 2, what="the calls to reach the upstream")
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(30) == 0
    for caller in callers:
        caller.join(10)
    assert [(a.status_code, a.headers["content-type"], a.json()) for a in answers] == [
        (
            503,
            "application/json",
            {
                "error": {
                    "message": "The gateway is shutting down.",
                    "type": "service_unavailable",
                    "param": None,
                    "code": "shutdown",
                }
            },
        )
    ] * 2
    log = gw.log()
    assert "Exception in ASGI application" not in log and "CancelledError" not in log
    assert log.count("cut by the shutdown before its answer: answered 503") == 2
    with sqlite3.connect(Path(gw.dir) / "data" / "usage.sqlite3") as db:
        rows = db.execute("SELECT status, error, final FROM events").fetchall()
    assert rows == [(503, "shutdown", 1)] * 2


def chunks_before_the_shutdown_event(body: bytes) -> list[dict]:
    """The chat chunks of a stream shutdown's grace period cut, once it is checked to end
    with the shutdown's error event (the one a stream that breaks mid-answer ends with,
    saying why) and no `[DONE]`."""
    events = [e for e in body.decode().split("\n\n") if e]
    assert "data: [DONE]" not in events
    assert json.loads(events[-1].removeprefix("data: ")) == {
        "error": {
            "message": "The gateway is shutting down.",
            "type": "service_unavailable",
            "param": None,
            "code": "shutdown",
        }
    }
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


def test_a_second_ctrl_c_still_writes_the_calls_it_served_to_the_ledger(start_gateway, upstream):
    """Hostile testing: a second Ctrl-C while the gateway drained (uvicorn's "CTRL+C to force
    quit") skipped the shutdown steps: the calls still buffered for the ledger were lost, and
    the log showed a CancelledError traceback. Force quitting stops the wait for open
    connections; what was served is still written."""
    gw = start_gateway(policy(upstream.base_url), env={"GATEWAY_USAGE_FLUSH_S": "60"})  # held in the buffer
    body = {"model": "auto", "messages": [{"role": "user", "content": "Count."}]}
    for _ in range(2):
        assert httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    upstream.reset(delay_s=30)
    caller = threading.Thread(
        target=lambda: httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30), daemon=True
    )
    caller.start()
    poll(lambda: len(upstream.received) == 1, what="the third call to reach the upstream")  # reset cleared the list

    gw.signal(signal.SIGINT)
    poll(lambda: "Waiting for connections to close" in gw.log(), what="the gateway to wait for the open call")
    gw.signal(signal.SIGINT)
    assert gw.proc.wait(30) == 130  # as a shell reports an interrupted command
    caller.join(10)

    log = gw.log()
    assert "CancelledError" not in log and "Traceback" not in log
    with sqlite3.connect(Path(gw.dir) / "data" / "usage.sqlite3") as db:
        rows = db.execute("SELECT status, error, final FROM events ORDER BY timestamp").fetchall()
    assert rows == [(200, None, 1), (200, None, 1), (503, "shutdown", 1)]
