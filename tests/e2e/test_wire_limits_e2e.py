"""The HTTP front door of a real gateway (gateway/api/wire.py), driven over raw sockets:
header limits, head and body timeouts, the connection cap, the open-file limit, JSON errors."""

from __future__ import annotations

import resource
import socket

import httpx
import orjson
import pytest

from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.support.scrape import scrape

# Generous against the 1 s timeouts the tests configure: only a gateway that never closes fails.
PATIENCE_S = 30.0
CHAT = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})


def connect(gw) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=PATIENCE_S)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the gateway closes (socket.timeout if it never does)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def exchange(gw, data: bytes) -> bytes:
    sock = connect(gw)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered and closed before taking it all
        return read_all(sock)
    finally:
        sock.close()


def error_answer(status: int, reason: str, message: str, code: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


TOO_LARGE = error_answer(
    431,
    "Request Header Fields Too Large",
    "Request headers too large: at most 100 headers and 65536 bytes of request line and headers.",
    "request_header_fields_too_large",
)
HEAD_TIMEOUT = error_answer(408, "Request Timeout", "The request head did not arrive in time.", "request_timeout")
BODY_TIMEOUT = error_answer(408, "Request Timeout", "The request body stopped arriving.", "request_timeout")


def rejected(gw, reason: str) -> float:
    return scrape(gw.url).value("gateway_http_rejected_total", reason=reason)


def head(path: str = "/health", headers: list[tuple[str, str]] = (), method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: gw", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def gw(start_gateway, upstream):
    return start_gateway(one_backend_policy(upstream.base_url))


def test_header_count_and_size_are_bounded_with_a_431(gw, upstream):
    ok = exchange(gw, head(headers=[("connection", "close"), *((f"x-h{i}", "v") for i in range(98))]))
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")  # host + connection + 98 = 100 headers: the limit, allowed
    assert exchange(gw, head(headers=[(f"x-h{i}", "v") for i in range(100)])) == TOO_LARGE  # 101
    assert exchange(gw, head(headers=[(f"x-h{i}", "v") for i in range(20_000)])) == TOO_LARGE
    assert exchange(gw, head(headers=[("x-title", "a" * 10_000_000)])) == TOO_LARGE  # refused early, not parsed
    big = head(headers=[("connection", "close"), ("x-title", "a" * 60_000)])
    assert exchange(gw, big).startswith(b"HTTP/1.1 200 OK\r\n")  # under 64 KiB in all: allowed
    over = head(method="POST", path="/v1/chat/completions", headers=[(f"x-k{i}", "b" * 700) for i in range(95)])
    assert exchange(gw, over + CHAT) == TOO_LARGE  # 95 headers, 66 KB together
    assert upstream.received == []
    assert rejected(gw, "headers_too_large") == 4
    assert httpx.get(gw.url + "/health").status_code == 200


def test_the_header_limits_are_settings(start_gateway, upstream):
    gw = start_gateway(
        one_backend_policy(upstream.base_url), env={"GATEWAY_MAX_HEADERS": "5", "GATEWAY_MAX_HEADER_BYTES": "2048"}
    )
    answer = exchange(gw, head(headers=[(f"x-h{i}", "v") for i in range(5)]))
    assert answer.startswith(b"HTTP/1.1 431 ") and b"at most 5 headers and 2048 bytes" in answer
    assert exchange(gw, head(headers=[("x-a", "a" * 3000)])).startswith(b"HTTP/1.1 431 ")
    assert exchange(gw, head(headers=[("connection", "close")])).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /he alth HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nbad header\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
        b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    ],
)
def test_malformed_requests_get_a_json_400(gw, upstream, request_bytes):
    answer = exchange(gw, request_bytes)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.split(b"\r\n")
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http_request"
    assert error["message"].startswith("Invalid HTTP request received: ") and error["param"] is None
    assert upstream.received == []


def test_slowloris_connections_are_closed_after_the_head_timeout(start_gateway, upstream):
    gw = start_gateway(one_backend_policy(upstream.base_url), env={"GATEWAY_HEADER_TIMEOUT_S": "1"})
    partial = [connect(gw) for _ in range(50)]
    silent = [connect(gw) for _ in range(50)]
    try:
        for sock in partial:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-slow: ")
        assert [read_all(s) for s in partial] == [HEAD_TIMEOUT] * 50
        assert [read_all(s) for s in silent] == [b""] * 50  # nothing asked: closed without an answer
    finally:
        for sock in partial + silent:
            sock.close()
    assert upstream.received == []
    assert rejected(gw, "head_timeout") == 50 and rejected(gw, "idle_connection") == 50


def test_a_stalled_body_gets_a_408_and_nothing_is_forwarded(start_gateway, upstream):
    gw = start_gateway(one_backend_policy(upstream.base_url), env={"GATEWAY_BODY_TIMEOUT_S": "1"})
    request = head(method="POST", path="/v1/chat/completions", headers=[("content-length", "1000")])
    assert exchange(gw, request + b'{"model": "auto", ') == BODY_TIMEOUT
    assert upstream.received == []
    assert rejected(gw, "body_timeout") == 1
    # A body that arrives in pieces, none late, is served.
    sock = connect(gw)
    try:
        sock.sendall(head(method="POST", path="/v1/chat/completions", headers=[("content-length", str(len(CHAT)))]))
        sock.sendall(CHAT[:10])
        sock.sendall(CHAT[10:])
        status = sock.recv(65536).split(b"\r\n", 1)[0]
    finally:
        sock.close()
    assert status == b"HTTP/1.1 200 OK" and len(upstream.received) == 1


def test_past_the_connection_cap_requests_get_a_json_503_probes_answer_and_it_recovers(start_gateway, upstream):
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_MAX_CONNECTIONS": "10", "GATEWAY_HEADER_TIMEOUT_S": "3"},
    )
    statuses = []

    def models_status() -> int:
        statuses.append(httpx.get(gw.url + "/v1/models").status_code)
        return statuses[-1]

    idle = [connect(gw) for _ in range(30)]
    try:
        poll(lambda: models_status() == 503, what="the cap to be reached")
        busy = httpx.get(gw.url + "/v1/models")
        statuses.append(busy.status_code)
        assert busy.json() == {
            "error": {
                "message": "The gateway is at its connection limit; retry shortly.",
                "type": "service_unavailable",
                "param": None,
                "code": "too_many_connections",
            }
        }
        assert httpx.get(gw.url + "/health").status_code == 200  # probes still reach it
        # Readiness too: a busy replica is not one to take out of the load balancer (its
        # neighbours would get its share and saturate in turn).
        assert httpx.get(gw.url + "/ready").json() == {"status": "ready"}
        # And Prometheus's scrape: a replica at its cap is up (not GatewayDown), and these
        # refusals are what its dashboard must show while they happen.
        assert rejected(gw, "too_many_connections") == statuses.count(503)
        assert [read_all(s) for s in idle] == [b""] * 30  # the head timeout frees them
    finally:
        for sock in idle:
            sock.close()
    poll(lambda: models_status() == 200, what="recovery once they are closed")
    assert set(statuses) == {200, 503} or set(statuses) == {503}
    assert rejected(gw, "too_many_connections") == statuses.count(503)  # each 503 counted, the probes not


def test_the_open_file_limit_is_raised_to_the_hard_limit(start_gateway, upstream):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 512:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the gateway
    try:
        gw = start_gateway(one_backend_policy(upstream.base_url))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = (open(f"/proc/{gw.proc.pid}/limits").read()).splitlines()
    row = next(line for line in limits if line.startswith("Max open files")).split()
    assert (int(row[3]), int(row[4])) == (hard, hard)
    assert f"open-file limit: {hard}" in gw.log()


def test_idle_sockets_beyond_the_file_limit_are_shed_and_the_gateway_recovers(start_gateway, upstream):
    """The issue's case: 400 idle sockets against a 300-descriptor gateway used to fail every
    /health check and hot reload until the clients left; now they are closed by the head timeout."""
    gw = start_gateway(one_backend_policy(upstream.base_url), env={"GATEWAY_HEADER_TIMEOUT_S": "1"})
    resource.prlimit(gw.proc.pid, resource.RLIMIT_NOFILE, (300, 300))
    idle = []
    try:
        for i in range(400):
            sock = connect(gw)
            if i % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nhost:")
            idle.append(sock)
        answers = [read_all(s) for s in idle]
    finally:
        for sock in idle:
            sock.close()
    # Every socket was closed by the gateway (read_all returned). The silent ones without an
    # answer; the partial ones with a 408, or without one when libuv shed them at accept
    # while the process was out of descriptors (it accepts and closes, rather than stall).
    assert answers[0::2] == [b""] * 200
    assert set(answers[1::2]) <= {HEAD_TIMEOUT, b""} and HEAD_TIMEOUT in answers[1::2]
    assert httpx.get(gw.url + "/health").status_code == 200
    gw.write_config(one_backend_policy(upstream.base_url, models=["qwen/qwen3-32b", "m/two"]))
    poll(lambda: "m/two" in httpx.get(gw.url + "/v1/models").text, what="a reload after the burst", context=gw.log)


def test_a_websocket_upgrade_is_answered_as_plain_http(start_gateway, upstream):
    """The gateway serves no WebSocket route. uvicorn's default (`ws="auto"`) imported the
    `websockets` package into every worker and took an upgrade request down its WebSocket
    path, which the gateway's HTTP protocol answered with a 400 ("`on_message_complete`
    callback error"); with `ws="none"` the request is read as the HTTP request it also is,
    and answered like any other."""
    gw = start_gateway(one_backend_policy(upstream.base_url))
    head = (
        b"GET /health HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    sock = connect(gw)
    try:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK", answer
    assert orjson.loads(rest.partition(b"\r\n\r\n")[2]) == {"status": "ok"}
