"""Issue 11, items 1, 4, 7 and 16, against real gateway processes and real HTTP upstreams:
client request ids that cannot grow the ledger, clients that leave, upstream answers too
large to hold, and every way an upstream connection breaks."""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.usage_helpers import gateway_cli
from tests.support.poll import poll
from tests.support.ports import free_port
from tests.support.scrape import scrape

CONFIG = """
backends:
  first:
    type: openai
    base_url: {a}
    timeout_s: 10
    models: {{m/x: {{upstream_id: up-x}}, m/e: {{upstream_id: up-e, kind: embedding}}}}
  second:
    type: openai
    base_url: {b}
    timeout_s: 10
    models: {{m/x: {{upstream_id: up-x}}, m/e: {{upstream_id: up-e, kind: embedding}}}}
routes:
  auto: {{strategy: ordered, models: [m/x]}}
  embed: {{strategy: ordered, models: [m/e]}}
gateway:
  max_response_bytes: 1048576
  fallback: {{backoff_base_s: 0}}
"""

FRESH_ID = re.compile(r"req-[0-9a-f]{22}")


@pytest.fixture
def gw(start_gateway, upstream, upstream_b):
    return start_gateway(CONFIG.format(a=upstream.base_url, b=upstream_b.base_url))


def ask(**extra) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}], **extra}


def ledger_request_ids(data_dir: Path, count: int) -> list[str]:
    """The request ids of the ledger's rows, once it holds `count` of them (oldest first)."""

    def rows():
        path = data_dir / "usage.sqlite3"
        if not path.exists():
            return None
        with sqlite3.connect(path) as db:
            found = [r[0] for r in db.execute("SELECT request_id FROM events ORDER BY timestamp")]
        return found if len(found) >= count else None

    return poll(rows, what=f"{count} ledger rows", ignore=(sqlite3.OperationalError,))


def recorded_as_failed(gw, result: str) -> list[tuple[int, str]]:
    """The one call as metrics and the ledger hold it: a 502 (no 200), its attempt on the first
    backend labelled `result`; returns the ledger's (status, error) rows."""
    metrics = poll(
        lambda: (m := scrape(gw.url)).total("gateway_requests_total", status="502") == 1 and m, what="the 502"
    )
    assert metrics.total("gateway_requests_total", status="200") == 0
    assert metrics.total("gateway_backend_attempts_total", backend="first", result=result) == 1
    path = gw.dir / "data" / "usage.sqlite3"

    def rows():
        with sqlite3.connect(path) as db:
            return [tuple(r) for r in db.execute("SELECT status, error FROM events")] or None

    return poll(rows, what="the ledger row", ignore=(sqlite3.OperationalError,))


def peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


# -- item 1: x-request-id -------------------------------------------------------------------


def test_a_short_plain_client_request_id_is_kept_everywhere(gw, upstream):
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask(), headers={"x-request-id": "trace-42:a.b_C"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-42:a.b_C"
    assert upstream.received[-1].headers["x-request-id"] == "trace-42:a.b_C"
    assert ledger_request_ids(gw.dir / "data", 1) == ["trace-42:a.b_C"]


@pytest.mark.parametrize(
    "client_id",
    ["x" * (60 * 1024), "a" * 129, "tab\tinside", "semi;colon", "caf\u00e9"],
    ids=["60KB", "129-chars", "tab", "semicolon", "non-ascii"],
)
def test_a_long_or_odd_client_request_id_is_replaced_by_a_fresh_one(gw, upstream, client_id):
    r = httpx.post(
        gw.url + "/v1/chat/completions", json=ask(), headers=[(b"x-request-id", client_id.encode("latin-1"))]
    )
    assert r.status_code == 200
    given = r.headers["x-request-id"]
    assert FRESH_ID.fullmatch(given), given
    assert upstream.received[-1].headers["x-request-id"] == given
    assert ledger_request_ids(gw.dir / "data", 1) == [given]


def test_a_5mb_client_request_id_is_refused_before_anything_is_called_or_stored(gw, upstream):
    # Past the header size limit (64 KiB by default) the HTTP layer answers 431 itself.
    r = httpx.post(
        gw.url + "/v1/chat/completions", json=ask(), headers={"x-request-id": "x" * (5 * 1024 * 1024)}, timeout=10
    )
    assert r.status_code == 431 and r.json()["error"]["code"] == "request_header_fields_too_large"
    assert upstream.received == []
    assert httpx.post(gw.url + "/v1/chat/completions", json=ask()).status_code == 200
    assert len(ledger_request_ids(gw.dir / "data", 1)) == 1  # only the second call is in the ledger


def test_an_odd_client_request_id_is_replaced_on_errors_too(gw):
    r = httpx.post(
        gw.url + "/v1/chat/completions", content=b"{not json", headers={"x-request-id": "y" * 50_000}, timeout=10
    )
    assert r.status_code == 400
    assert FRESH_ID.fullmatch(r.headers["x-request-id"])


# -- item 4: the client leaves before a non-streamed answer ---------------------------------


def test_clients_leaving_are_counted_as_499_and_logged_without_traceback(gw, upstream):
    upstream.reset(delay_s=1.5)
    leaving = 4
    for _ in range(leaving):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(gw.url + "/v1/chat/completions", json=ask(), timeout=httpx.Timeout(10, read=0.3))

    def left() -> float | None:
        count = scrape(gw.url).total("gateway_requests_total", status="499")
        return count if count >= leaving else None

    assert poll(left, what="the 499s") == leaving
    upstream.reset()
    assert httpx.post(gw.url + "/v1/chat/completions", json=ask()).status_code == 200
    metrics = scrape(gw.url)
    assert metrics.total("gateway_requests_total", status="499") == leaving
    assert metrics.total("gateway_requests_total", status="200") == 1
    log = gw.log()
    assert "Traceback" not in log and "CancelledError" not in log and " ERROR " not in log, log[-3000:]
    # The abandoned upstream calls were cancelled, not counted against the backend.
    assert metrics.total("gateway_backend_attempts_total", backend="first", result="cancelled") == leaving


def test_a_client_leaving_mid_stream_is_a_499_without_traceback(gw, upstream):
    upstream.reset(chunk_delay_s=0.3, content="one two three four five six")
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=ask(stream=True), timeout=10) as r:
        for line in r.iter_lines():
            if '"content":"one' in line:
                break
    assert poll(lambda: scrape(gw.url).total("gateway_requests_total", status="499") == 1, what="the 499")
    assert poll(lambda: upstream.streams_aborted == 1, what="the upstream stream to be closed")
    assert "Traceback" not in gw.log()


# -- item 7: upstream answers too large to hold ---------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_answer_over_max_response_bytes_fails_over_without_being_held(gw, upstream, upstream_b, chunked):
    assert httpx.post(gw.url + "/v1/chat/completions", json=ask()).status_code == 200  # warm
    upstream.reset(content_bytes=40 * 1024 * 1024, chunked=chunked)
    before = peak_rss_kb(gw.proc.pid)
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask(), timeout=30)
    assert r.status_code == 200
    assert r.headers["x-gateway-backend"] == "second"
    assert r.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert len(upstream.received) == 1 and len(upstream_b.received) == 1  # reset() cleared the warm-up
    metrics = scrape(gw.url)
    assert metrics.total("gateway_backend_attempts_total", backend="first", result="response_too_large") == 1
    assert metrics.total("gateway_fallbacks_total", from_backend="first", reason="response_too_large") == 1
    # Holding the 40 MB body (or most of it) would raise the process's peak by that much.
    assert peak_rss_kb(gw.proc.pid) - before < 16 * 1024


def test_answers_too_large_for_the_gateway_never_open_the_backends_circuit(gw, upstream, upstream_b):
    """Hostile testing: a batch of 2,048 float embeddings answers about 66 MB: three such
    requests from one client opened the backend's circuit for every client. The size is the
    request's doing: each fails over, and no circuit counts it."""
    upstream.reset(content_bytes=2 * 1024 * 1024)  # twice this gateway's max_response_bytes
    for _ in range(4):  # past the default failure_threshold (3)
        r = httpx.post(gw.url + "/v1/chat/completions", json=ask(), timeout=30)
        assert r.status_code == 200 and r.headers["x-gateway-backend"] == "second"
    assert len(upstream.received) == 4  # each request tried the first backend again
    circuits = {(c["backend"], c["model"]): c["state"] for c in httpx.get(gw.url + "/admin/status").json()["circuits"]}
    assert circuits.get(("first", "m/x")) == "closed", circuits


def test_an_answer_too_large_on_every_candidate_is_named_so_and_left_out_of_uptime(gw, upstream, upstream_b):
    """A new user's test: the 502 said `upstream_error` and the ledger's final row too, so the
    rankings counted the backend down for what the request had asked."""
    for server in (upstream, upstream_b):
        server.reset(content_bytes=2 * 1024 * 1024)  # twice this gateway's max_response_bytes
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask(), timeout=30)
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "response_too_large"
    assert error["message"] == (
        "The upstream's answer is too large to relay (the upstream's answer is larger than 1048576 bytes); "
        "ask for less in one request (tried: first/m/x (response_too_large), second/m/x (response_too_large))."
    )
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)
    path = gw.dir / "data" / "usage.sqlite3"

    def rows():
        with sqlite3.connect(path) as db:
            found = db.execute("SELECT backend, status, error, final FROM events ORDER BY attempt").fetchall()
        return found if len(found) == 2 else None

    assert poll(rows, what="both rows", ignore=(sqlite3.OperationalError,)) == [
        ("first", 502, "response_too_large", 0),
        ("second", 502, "response_too_large", 1),
    ]
    done = gateway_cli("rankings", "--json", "--data-dir", str(gw.dir / "data"))
    assert done.returncode == 0, done.stderr
    throughput = orjson.loads(done.stdout)["throughput"]
    # Neither attempt counts for or against its provider: no uptime to show (it was 0%).
    # The table lists the offer the call ended on (the final row's), with no attempts counted.
    assert [(t["backend"], t["requests"], t["attempts"], t["uptime"]) for t in throughput] == [
        ("second", 1, 0, None)
    ], throughput


def test_a_large_float_embeddings_batch_is_held_in_proportion_to_what_it_asked(gw, upstream, upstream_b):
    """A new user's test: 1,100 float vectors of 1,536 dimensions (about 33 MB of JSON, as
    OpenAI sends them) failed with a 502 on every candidate over the 32 MB default. Here 2,048
    inputs of 100 dimensions (about 2 MB) against this gateway's 1 MiB: an answer that size is
    what the request asked for, held up to its own bound."""
    inputs = [f"text {i}" for i in range(2048)]
    body = {"model": "embed", "input": inputs, "dimensions": 100, "encoding_format": "float"}
    r = httpx.post(gw.url + "/v1/embeddings", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.content) > 1024 * 1024
    data = r.json()["data"]
    assert (len(data), len(data[-1]["embedding"]), r.headers["x-gateway-backend"]) == (2048, 100, "first")
    assert (len(upstream.received), len(upstream_b.received)) == (1, 0)
    # A chat answer of the same size still fails over (its bound is the configured one).
    upstream.reset(content_bytes=2 * 1024 * 1024)
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask(), timeout=30)
    assert (r.status_code, r.headers["x-gateway-backend"]) == (200, "second")


def test_a_sub_second_retry_after_from_every_backend_reaches_the_client_rounded_up(gw, upstream, upstream_b):
    """Hostile testing: every candidate answering 429 with `Retry-After: 0.5` gave the client
    `retry-after: 0` (int() of it), telling it to retry at once."""
    for server in (upstream, upstream_b):
        server.reset(status=429, headers={"retry-after": "0.5"}, error_body={"error": {"message": "slow down"}})
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask(), timeout=30)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["retry-after"] == "1"


# -- item 16: transport failures ------------------------------------------------------------


class GarbageUpstream:
    """Answers every connection with bytes that are not HTTP, then closes it (in a thread)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                self.connections += 1
                conn.recv(65536)
                conn.sendall(self.reply)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def test_an_upstream_answering_garbage_fails_over_and_counts_against_it(start_gateway, upstream_b):
    """aiohttp.ClientResponseError (no HTTP status line) was not mapped: the client got a 500
    and the attempt was labelled `cancelled`, neither counted nor failed over."""
    garbage = GarbageUpstream(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    try:
        gw = start_gateway(CONFIG.format(a=garbage.base_url, b=upstream_b.base_url))
        r = httpx.post(gw.url + "/v1/chat/completions", json=ask())
    finally:
        garbage.stop()
    assert r.status_code == 200 and r.headers["x-gateway-backend"] == "second"
    assert garbage.connections == 1 and len(upstream_b.received) == 1
    metrics = scrape(gw.url)
    assert metrics.total("gateway_backend_attempts_total", backend="first", result="protocol") == 1
    assert metrics.total("gateway_backend_attempts_total", backend="first", result="cancelled") == 0
    assert "Traceback" not in gw.log()


def test_a_body_cut_short_before_any_byte_reached_the_client_fails_over(gw, upstream, upstream_b):
    upstream.reset(cut_body_after=20)
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask())
    assert r.status_code == 200 and r.headers["x-gateway-backend"] == "second"
    assert len(upstream.received) == 1 and len(upstream_b.received) == 1
    metrics = scrape(gw.url)
    assert metrics.total("gateway_backend_attempts_total", backend="first", result="protocol") == 1
    assert metrics.total("gateway_backend_attempts_total", backend="second", result="ok") == 1


def test_a_stream_cut_mid_answer_ends_with_an_error_event_and_is_recorded_as_failed(gw, upstream, upstream_b):
    upstream.reset(break_after_events=3, content="one two three four five")
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=ask(stream=True), timeout=10) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert len(upstream_b.received) == 0  # content had reached the client: no fallback
    contents = [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert contents == ["", "one ", "two "]
    assert orjson.loads(events[-1]) == {
        "error": {
            "message": "The upstream stream broke off.",
            "type": "upstream_error",
            "param": None,
            "code": "protocol",
        }
    }
    assert recorded_as_failed(gw, "protocol") == [(502, "protocol")]


def test_an_error_event_after_content_is_relayed_and_recorded_as_failed(gw, upstream, upstream_b):
    """Hostile testing: a stream whose upstream sent content, then its own error event, was
    relayed (the error redacted) but recorded as a 200 with no error, and not counted
    against the backend; a stream that broke is a 502. Now both are."""
    head = {"id": "chatcmpl-e", "object": "chat.completion.chunk", "created": 1, "model": "up-x"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "Half an"}, "finish_reason": None}]},
        {"error": {"message": "worker died (key sk-a-123456)", "type": "server_error", "code": 500}},
    ]
    raw = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
    upstream.reset(raw_stream=raw)
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=ask(stream=True), timeout=10) as r:
        assert r.status_code == 200
        events = [orjson.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["", "Half an"]
    assert events[-1]["error"]["message"] == "worker died (key [redacted])"  # a key-shaped secret, redacted
    assert len(upstream_b.received) == 0  # content had reached the client: no fallback
    assert recorded_as_failed(gw, "upstream_error") == [(502, "upstream_error")]


# -- a stream the client read to its end ------------------------------------------------------


@pytest.mark.parametrize("include_usage", [False, True], ids=["plain", "usage-asked"])
def test_a_client_closing_after_done_is_a_complete_call_not_499(gw, upstream, openai_client, include_usage):
    """The openai SDK closes the connection as soon as it reads `[DONE]`. An upstream that keeps
    its connection open a moment longer must not turn that finished call into a client leaving."""
    upstream.reset(linger_after_stream_s=1.0)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(openai_client(gw).chat.completions.create(**ask(stream=True, **extra)))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()

    def ledger_rows():
        with sqlite3.connect(gw.dir / "data" / "usage.sqlite3") as db:
            rows = db.execute("SELECT status, completion_tokens, estimated FROM events").fetchall()
        return rows or None

    assert poll(ledger_rows, what="the call in the ledger", ignore=(sqlite3.OperationalError,)) == [(200, 7, 0)]
    metrics = scrape(gw.url)
    assert metrics.total("gateway_requests_total", status="200") == 1
    assert metrics.total("gateway_requests_total", status="499") == 0
