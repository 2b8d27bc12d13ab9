"""The proxy path's HTTP/1.1 client (gateway/backends/http1.py) against real local servers.

Each test scripts a raw asyncio server that reads requests off the socket and answers with
exact bytes, so the edge cases (a kept-alive connection closed under the client, 1xx
heads, bodies until close, oversized heads, stalls) are what the client really meets; the
server records connections, requests and when it saw a connection end.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.backends import http1
from gateway.backends.errors import (
    FirstByteTimeout,
    StreamBroken,
    StreamIdleTimeout,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnreachable,
)
from gateway.backends.http1 import Http1Client, Target
from gateway.backends.openai_compat import OpenAICompatBackend
from tests.backends.wire import backend_at, request_for
from tests.support.ports import free_port

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@dataclass
class Req:
    conn: int  # which of the server's connections carried it (1, 2, ...)
    head: bytes
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.encode():
                return value.strip().decode()
        return None


# What the server does after writing an answer: "keep" (read the next request), "close",
# "stall" (hold the connection, reading nothing more), "watch" (wait for the client to end it),
# or a coroutine function given the writer (to write more, then keep the connection).
Script = Callable[["Req"], Awaitable[tuple[bytes, Any]]]


@dataclass
class Upstream:
    script: Script
    host: str = "127.0.0.1"
    connections: int = 0
    requests: list[Req] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)  # connections the server saw the client end
    active: int = 0  # requests being answered right now
    most_active: int = 0
    read_delay_s: float = 0.0  # before reading each request (a slow reader of large bodies)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    async def start(self, tls: ssl.SSLContext | None = None) -> Upstream:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=tls)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                if self.read_delay_s:
                    await asyncio.sleep(self.read_delay_s)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                request = Req(conn, head, body)
                self.requests.append(request)
                self.active += 1
                self.most_active = max(self.most_active, self.active)
                try:
                    answer, then = await self.script(request)
                finally:
                    self.active -= 1
                writer.write(answer)
                await writer.drain()
                if callable(then):
                    await then(writer)
                elif then == "close":
                    break
                if then == "stall":
                    await asyncio.sleep(3600)
                if then == "watch":
                    if await reader.read() == b"":
                        self.ended.append(conn)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended.append(conn)
        finally:
            writer.close()


def answering(*answers: bytes | tuple[bytes, Any]) -> Script:
    """Answers in turn (the last one repeated); bytes alone keep the connection."""

    async def script(request: Req) -> tuple[bytes, Any]:
        n = min(len(script.seen), len(answers) - 1)  # type: ignore[attr-defined]
        script.seen.append(request)  # type: ignore[attr-defined]
        answer = answers[n]
        return answer if isinstance(answer, tuple) else (answer, "keep")

    script.seen = []  # type: ignore[attr-defined]
    return script


@pytest.fixture
async def upstreams():
    started: list[Upstream] = []

    async def start(script: Script, **kwargs) -> Upstream:
        server = await Upstream(script, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def clients():
    made: list[Http1Client] = []

    def make(url: str, **kwargs) -> Http1Client:
        kwargs.setdefault("max_connections", 8)
        kwargs.setdefault("connect_timeout_s", 2.0)
        kwargs.setdefault("read_timeout_s", 5.0)
        headers = kwargs.pop("headers", {"content-type": "application/json"})
        client = Http1Client("b", url, headers, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


async def fetch(client: Http1Client, body: bytes = b"{}", path: str = "/chat/completions", **kw) -> bytes:
    response = await client.post(path, body, kw.pop("extra", None), kw.pop("max_bytes", 1 << 25))
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


# -- the request on the wire --


async def test_request_is_one_write_of_line_host_static_and_extra_headers(upstreams, clients):
    server = await upstreams(answering(OK))
    client = clients(server.url + "/api/paas/v4/", headers={"content-type": "application/json", "X-Title": "a"})
    await fetch(client, b'{"a":1}')
    conn = client.idle[-1]
    writes: list[int] = []
    transport = conn.transport
    original_write, original_writelines = transport.write, transport.writelines
    transport.write = lambda data: (writes.append(1), original_write(data))[1]  # type: ignore[method-assign]
    transport.writelines = lambda data: (writes.append(1), original_writelines(data))[1]  # type: ignore[method-assign]
    # per-call headers: a name the static ones have replaces it; one with a line break is dropped
    await fetch(client, b'{"b":2}', extra={"x-request-id": "r1", "x-title": "b", "x-bad": "v\r\nx: y"})
    assert writes == [1]
    first, second = server.requests
    port = server.url.rsplit(":", 1)[1]
    assert first.head == (
        b"POST /api/paas/v4/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:" + port.encode() + b"\r\n"
        b"content-type: application/json\r\nX-Title: a\r\ncontent-length: 7\r\n\r\n"
    )
    assert (first.body, second.body) == (b'{"a":1}', b'{"b":2}')
    assert second.header("x-title") == "b" and second.head.count(b"X-Title") + second.head.count(b"x-title") == 1
    assert second.header("x-request-id") == "r1" and second.header("x-bad") is None and second.header("x") is None


@pytest.mark.parametrize(
    ("url", "host", "port", "host_header", "prefix", "tls"),
    [
        ("https://api.deepseek.com/v1", "api.deepseek.com", 443, "api.deepseek.com", "/v1", True),
        ("https://open.bigmodel.cn/api/paas/v4/", "open.bigmodel.cn", 443, "open.bigmodel.cn", "/api/paas/v4", True),
        ("http://vllm:8000", "vllm", 8000, "vllm:8000", "", False),
        ("http://[::1]:9000/v1", "::1", 9000, "[::1]:9000", "/v1", False),
        ("https://[2001:db8::1]/v1", "2001:db8::1", 443, "[2001:db8::1]", "/v1", True),
    ],
)
def test_base_url_is_parsed_once_into_where_calls_go(url, host, port, host_header, prefix, tls):
    target = Target(url)
    assert (target.host, target.port, target.host_header, target.prefix, target.tls) == (
        host,
        port,
        host_header,
        prefix,
        tls,
    )


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 loopback")
async def test_ipv6_literal_host(upstreams, clients):
    server = await upstreams(answering(OK), host="::1")
    assert await fetch(clients(server.url + "/v1")) == b"{}"
    assert server.requests[0].line == b"POST /v1/chat/completions HTTP/1.1"
    assert server.requests[0].header("host") == server.url.removeprefix("http://")


async def test_large_body_waits_for_a_slow_reader_and_arrives_whole(upstreams, clients):
    server = await upstreams(answering(OK), read_delay_s=0.3)
    client = clients(server.url)
    paused: list[bool] = []
    original = http1.Connection.pause_writing

    def spy(self):
        paused.append(True)
        original(self)

    http1.Connection.pause_writing = spy  # type: ignore[method-assign]
    try:
        body = b"x" * (8 * 1024 * 1024)
        assert await fetch(client, body) == b"{}"
    finally:
        http1.Connection.pause_writing = original  # type: ignore[method-assign]
    assert server.requests[0].body == body
    assert paused  # the transport's buffer filled: the exchange waited for it to drain


# -- the response --


async def test_body_by_length_chunks_and_until_close_and_1xx_skipped(upstreams, clients):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    until_close = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: x\n\n", "close")
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    server = await upstreams(answering(OK, chunked, until_close, interim))
    client = clients(server.url)
    assert await fetch(client) == b"{}"
    assert await fetch(client) == b"abcde"
    response = await client.post("/chat/completions", b"{}", None, 1 << 20)
    assert (response.status, response.media_type) == (200, "text/event-stream")
    assert await response.aread() == b"data: x\n\n"  # the end of the connection ended the body
    assert await fetch(client) == b"{}"
    # length and chunks: one connection; until close: that one ended, the next call opened another
    assert [r.conn for r in server.requests] == [1, 1, 1, 2]


async def test_status_and_the_headers_read(upstreams, clients):
    server = await upstreams(
        answering(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
    )
    response = await clients(server.url).post("/chat/completions", b"{}", None, 100)
    assert (response.status, response.media_type, response.retry_after, response.content_length) == (
        429,
        "application/json",
        "7",
        2,
    )
    assert await response.aread() == b"{}"


@pytest.mark.parametrize(
    ("head", "ok"),
    [
        (b"".join(b"x-h%d: v\r\n" % i for i in range(99)), True),  # 99 + content-length: 100 headers
        (b"".join(b"x-h%d: v\r\n" % i for i in range(100)), False),  # 101
        (b"x-big: " + b"v" * (70 * 1024) + b"\r\n", False),  # one header over 64 KiB
    ],
)
async def test_response_head_is_bounded(upstreams, clients, head, ok):
    server = await upstreams(answering(b"HTTP/1.1 200 OK\r\n" + head + b"content-length: 2\r\n\r\n{}"))
    client = clients(server.url)
    if ok:
        assert await fetch(client) == b"{}"
        return
    with pytest.raises(UpstreamProtocolError) as caught:
        await fetch(client)
    assert type(caught.value) is UpstreamProtocolError
    assert "response head" in caught.value.message or "response headers" in caught.value.message
    await until(lambda: server.ended == [1])  # refused: the connection is dropped
    assert client.open_count == 0


async def test_a_head_that_never_ends_is_refused_once_past_the_bound(upstreams, clients):
    async def dribble(request: Req) -> tuple[bytes, str]:
        return b"HTTP/1.1 200 OK\r\n" + b"x-h: v\r\n" * 20_000, "stall"  # 160 KB, no blank line

    server = await upstreams(dribble)
    with pytest.raises(UpstreamProtocolError):
        await fetch(clients(server.url))
    assert len(server.requests) == 1


# -- the pool --


async def test_idle_connections_are_reused_last_in_first_out(upstreams, clients):
    async def script(request: Req) -> tuple[bytes, str]:
        if request.body == b"slow":
            await asyncio.sleep(0.2)
        return OK, "keep"

    server = await upstreams(script)
    client = clients(server.url)
    await asyncio.gather(fetch(client, b"slow"), fetch(client, b"fast"))
    assert (server.connections, client.open_count, client.idle_count) == (2, 2, 2)
    slow_conn = next(r.conn for r in server.requests if r.body == b"slow")
    await fetch(client, b"next")
    await fetch(client, b"after")
    # the connection released last (the slow one's) serves the next calls
    assert [r.conn for r in server.requests[2:]] == [slow_conn, slow_conn]
    assert server.connections == 2


async def test_max_connections_queues_callers_first_in_first_out(upstreams, clients):
    async def script(request: Req) -> tuple[bytes, str]:
        await asyncio.sleep(0.02)
        return OK, "keep"

    server = await upstreams(script)
    client = clients(server.url, max_connections=2)
    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(fetch(client, b"%d" % i)))
        await asyncio.sleep(0)  # each caller queues in turn
    assert await asyncio.gather(*tasks) == [b"{}"] * 8
    assert (server.connections, server.most_active, client.open_count) == (2, 2, 2)
    assert [r.body for r in server.requests] == [b"%d" % i for i in range(8)]  # served in the order they came


async def test_a_cancelled_waiter_leaves_the_queue_and_a_handed_connection_is_passed_on(upstreams, clients):
    gate = asyncio.Event()

    async def script(request: Req) -> tuple[bytes, str]:
        if request.body == b"hold":
            await gate.wait()
        return OK, "keep"

    server = await upstreams(script)
    client = clients(server.url, max_connections=1)
    holder = asyncio.create_task(fetch(client, b"hold"))
    await until(lambda: len(server.requests) == 1)
    left = asyncio.create_task(fetch(client, b"left"))
    await asyncio.sleep(0.01)
    left.cancel()  # cancelled while queued
    with pytest.raises(asyncio.CancelledError):
        await left
    assert client.waiting == 0
    gate.set()
    assert await holder == b"{}"
    # A waiter handed the connection just as it is cancelled passes it to the next one.
    conn = await client.acquire()
    handed = asyncio.create_task(fetch(client, b"handed"))
    after = asyncio.create_task(fetch(client, b"after"))
    await asyncio.sleep(0.01)
    client.release(conn)  # to `handed`'s waiter...
    handed.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert await after == b"{}"
    assert [r.body for r in server.requests] == [b"hold", b"after"]
    assert (server.connections, client.open_count, client.idle_count) == (1, 1, 1)


async def test_a_caller_cancelled_after_its_answer_arrived_leaves_the_next_callers_connection_alone(
    upstreams, clients, monkeypatch
):
    async def script(request: Req) -> tuple[bytes, str]:
        await asyncio.sleep(0.05)
        return OK, "keep"

    server = await upstreams(script)
    client = clients(server.url)
    go = asyncio.Event()

    async def next_caller() -> bytes:
        await go.wait()
        return await fetch(client, b"C")

    other = asyncio.create_task(next_caller())
    first = asyncio.create_task(client.post("/chat/completions", b"A", None, 100))
    original = http1.Connection.data_received

    def data_received(self: http1.Connection, data: bytes) -> None:
        if go.is_set():
            return original(self, data)
        go.set()  # the next caller's wake-up is queued ahead of the first caller's
        original(self, data)  # the first answer arrives whole: the connection back to the pool
        first.cancel()  # and its caller leaves in the same loop pass (client gone, deadline)

    monkeypatch.setattr(http1.Connection, "data_received", data_received)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await other == b"{}"  # on the connection the first caller gave back, untouched
    assert [(r.conn, r.body) for r in server.requests] == [(1, b"A"), (1, b"C")]
    assert (client.attempts, client.open_count, client.idle_count) == (1, 1, 1)


async def test_an_answer_before_a_large_body_is_sent_drops_the_connection_and_ends_the_wait(upstreams, clients):
    """A 401 to a large body, from its head (the server reads the body later, as RFC 9112 9.3
    allows): the connection is not the pool's while the body still goes out, and the caller
    waiting for the body to drain gets its answer."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(v for v in head.split(b"\r\n") if v.lower().startswith(b"content-length")).split(b":")[1]
                )
                if length > 1_000_000:
                    seen.append(b"large")
                    writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}")
                    await writer.drain()
                    await asyncio.sleep(0.3)
                    await reader.readexactly(length)
                    continue
                seen.append(await reader.readexactly(length))
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        client = clients(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", max_connections=1)

        async def call(body: bytes) -> tuple[int, bytes]:
            response = await client.post("/chat/completions", body, None, 100)
            try:
                return response.status, await response.aread()
            finally:
                await response.aclose()

        large = asyncio.create_task(call(b"x" * (32 << 20)))  # more than the socket buffers take
        await until(lambda: seen == [b"large"])
        small = asyncio.create_task(call(b"{}"))
        async with asyncio.timeout(20):  # generous: it hung forever before
            assert await large == (401, b"{}")
            assert await small == (200, b"{}")
        assert seen == [b"large", b"{}"] and client.attempts == 2  # the first connection was not reused
    finally:
        server.close()


async def test_a_slot_freed_by_a_closed_connection_goes_to_the_first_waiter(upstreams, clients, monkeypatch):
    async def script(request: Req) -> tuple[bytes, str]:
        await asyncio.sleep(0.05)
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}", "close"

    server = await upstreams(script)
    client = clients(server.url, max_connections=1)
    go = asyncio.Event()

    async def newcomer() -> bytes:
        await go.wait()
        return await fetch(client, b"N")

    late = asyncio.create_task(newcomer())
    holder = asyncio.create_task(fetch(client, b"H"))
    await until(lambda: len(server.requests) == 1)
    queued = [asyncio.create_task(fetch(client, b"W1"))]
    await until(lambda: client.waiting == 1)
    queued.append(asyncio.create_task(fetch(client, b"W2")))
    await until(lambda: client.waiting == 2)
    original = http1.Connection.data_received

    def data_received(self: http1.Connection, data: bytes) -> None:
        go.set()  # a call arriving in the same loop pass as the answer that closes the connection
        original(self, data)

    monkeypatch.setattr(http1.Connection, "data_received", data_received)
    assert await asyncio.gather(holder, *queued, late) == [b"{}"] * 4
    assert [r.body for r in server.requests] == [b"H", b"W1", b"W2", b"N"]  # in the order they came
    assert server.connections == 4 and client.open_count == 0


async def test_a_caller_needing_a_new_connection_is_not_handed_a_reused_one(upstreams, clients):
    server = await upstreams(answering(OK))
    client = clients(server.url, max_connections=1)
    assert await fetch(client) == b"{}"
    held = await client.acquire()
    fresh = asyncio.create_task(client.acquire(fresh=True))
    await until(lambda: client.waiting == 1)
    client.release(held)
    got = await fresh
    assert got is not held and not got.reused and held.closed  # the slot passed, the old one closed
    assert (client.attempts, client.open_count) == (2, 1)
    await until(lambda: server.ended == [1])
    client.release(got)


async def test_a_connection_lost_while_it_opens_gives_its_slot_back(upstreams, clients, monkeypatch):
    server = await upstreams(answering(OK))
    client = clients(server.url, max_connections=1)
    loop = asyncio.get_running_loop()
    real = loop.create_connection

    async def dies_as_it_opens(factory: Any, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await real(factory, *args, **kwargs)
        transport.abort()
        await until(lambda: protocol.closed)  # connection_lost ran before create_connection returned
        return transport, protocol

    monkeypatch.setattr(loop, "create_connection", dies_as_it_opens)
    with pytest.raises(UpstreamError):
        await fetch(client)
    assert client.open_count == 0
    monkeypatch.setattr(loop, "create_connection", real)
    assert await fetch(client) == b"{}"  # the one slot is still there
    assert len(server.requests) == 1


async def test_a_context_given_for_tls_leaves_an_http_url_plain(upstreams, clients):
    server = await upstreams(answering(OK))
    client = clients(server.url, ssl_context=ssl.create_default_context())
    assert await fetch(client) == b"{}"
    assert server.requests[0].line == b"POST /chat/completions HTTP/1.1"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 2\r\n\r\n{}",
    ],
)
async def test_connection_close_and_http_1_0_answers_are_not_reused(upstreams, clients, answer):
    server = await upstreams(answering((answer, "watch")))
    client = clients(server.url)
    assert await fetch(client) == b"{}"
    await until(lambda: server.ended == [1])  # the client ended it at once, as asked
    assert await fetch(client) == b"{}"
    assert [r.conn for r in server.requests] == [1, 2]


async def test_an_abandoned_body_ends_the_connection_upstream(upstreams, clients):
    stream = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    server = await upstreams(answering((stream, "watch"), OK))
    client = clients(server.url)
    response = await client.post("/chat/completions", b"{}", None, 1 << 20)
    assert await anext(response.aiter_bytes()) == b"first"
    await response.aclose()  # the client left mid-answer
    await until(lambda: server.ended == [1])
    assert await fetch(client) == b"{}"
    assert [r.conn for r in server.requests] == [1, 2]


async def test_an_answer_over_the_cap_ends_the_connection_upstream(upstreams, clients):
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 1000
    server = await upstreams(answering((big, "watch")))
    client = clients(server.url)
    with pytest.raises(UpstreamError) as caught:
        await fetch(client, max_bytes=50_000)
    assert caught.value.reason == "response_too_large"
    await until(lambda: server.ended == [1])
    assert client.open_count == 0


async def test_a_broken_answer_drops_the_connection(upstreams, clients):
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}"
    server = await upstreams(answering((cut, "close"), OK))
    client = clients(server.url)
    with pytest.raises(StreamBroken):
        await fetch(client)
    assert client.open_count == 0
    assert await fetch(client) == b"{}"
    assert [r.conn for r in server.requests] == [1, 2]


async def test_garbage_after_a_whole_answer_drops_the_connection_not_the_answer(upstreams, clients):
    server = await upstreams(answering((OK + b"HTTP/1.1 200 OK\r\n", "watch"), OK))
    client = clients(server.url)
    assert await fetch(client) == b"{}"
    await until(lambda: server.ended == [1])
    assert await fetch(client) == b"{}"
    assert [r.conn for r in server.requests] == [1, 2]


async def test_a_request_lost_after_its_write_on_a_kept_connection_is_not_sent_again(upstreams, clients):
    """The upstream may have read it and acted on it (billed the tokens) before the connection
    died: the failure goes to the fallback loop, the request is not resent here."""

    async def script(request: Req) -> tuple[bytes, str]:
        if len([r for r in server.requests if r.conn == request.conn]) == 2:
            return b"", "close"  # the second request on a connection: read, then the connection dies
        return OK, "keep"

    server = await upstreams(script)
    client = clients(server.url)
    assert await fetch(client, b"1") == b"{}"
    with pytest.raises(UpstreamProtocolError) as caught:
        await fetch(client, b"2")
    assert caught.value.reason == "protocol"
    assert [(r.conn, r.body) for r in server.requests] == [(1, b"1"), (1, b"2")]  # exactly once
    assert client.attempts == 1
    await until(lambda: client.open_count == 0)


async def test_a_kept_connection_found_closing_before_the_write_is_replaced(upstreams, clients, monkeypatch):
    server = await upstreams(answering(OK))
    client = clients(server.url)
    assert await fetch(client, b"1") == b"{}"
    # The upstream's end arrived in the same loop pass as the call: the transport is closing,
    # its connection_lost not yet run. Nothing is written to it; the call goes to a new one.
    conn = client.idle[-1]
    monkeypatch.setattr(conn.transport, "is_closing", lambda: True)
    assert await fetch(client, b"2") == b"{}"
    assert conn.closed and client.attempts == 2
    # The same, found by the exchange itself (after the pool's check): refused before the
    # write, its slot freed at once, and post() sends the request on a new connection.
    acquire = client.acquire

    async def closing_after_acquire(fresh: bool = False) -> http1.Connection:
        conn = await acquire(fresh)
        if not fresh:
            monkeypatch.setattr(conn.transport, "is_closing", lambda: True)
        return conn

    monkeypatch.setattr(client, "acquire", closing_after_acquire)
    assert await fetch(client, b"3") == b"{}"
    assert [(r.conn, r.body) for r in server.requests] == [(1, b"1"), (2, b"2"), (3, b"3")]
    assert (client.attempts, client.open_count) == (3, 1)


async def test_a_new_connection_closed_unanswered_is_not_retried(upstreams, clients):
    server = await upstreams(answering((b"", "close")))
    with pytest.raises(UpstreamProtocolError):
        await fetch(clients(server.url))
    assert len(server.requests) == 1


async def test_an_idle_connection_the_server_closes_leaves_the_pool(upstreams, clients):
    server = await upstreams(answering((OK, "close")))  # no `connection: close` said, then closed
    client = clients(server.url)
    assert await fetch(client) == b"{}"
    await until(lambda: client.open_count == 0)
    assert await fetch(client) == b"{}"
    assert [r.conn for r in server.requests] == [1, 2] and client.attempts == 2  # no stale retry needed


async def test_an_idle_connection_is_closed_after_the_keepalive(upstreams, clients, monkeypatch):
    monkeypatch.setattr(http1, "KEEPALIVE_PLAIN_S", 0.2)  # the server is plain http
    server = await upstreams(answering(OK))
    client = clients(server.url)
    assert await fetch(client) == b"{}"
    await until(lambda: server.ended == [1])
    assert client.open_count == 0


async def test_an_idle_connection_is_reused_within_the_keepalive_and_not_after(upstreams, clients, monkeypatch):
    monkeypatch.setattr(http1, "KEEPALIVE_PLAIN_S", 0.3)
    server = await upstreams(answering(OK, OK))
    client = clients(server.url)
    assert await fetch(client) == b"{}"
    await asyncio.sleep(0.1)
    assert await fetch(client) == b"{}"  # within the keep-alive: the same connection
    await until(lambda: server.ended == [1])  # closed by the client 0.3 s after its last use
    assert await fetch(client) == b"{}"
    assert [r.conn for r in server.requests] == [1, 1, 2]


def test_plain_http_connections_are_let_go_before_local_servers_close_them():
    """A local server (vLLM and SGLang on uvicorn, this gateway) closes a connection idle for
    its keep-alive timeout; a request written on it as it closes is lost (never resent).
    So the client lets plain-http connections go first; https ones (hosted APIs, which keep
    idle connections far longer, and cost a TLS handshake to reopen) it keeps longer."""
    import uvicorn

    from gateway.settings import Settings

    uvicorn_default = uvicorn.Config(app=None).timeout_keep_alive  # 5 s
    gateway_default = Settings.model_fields["keepalive_timeout_s"].default  # a gateway behind a gateway
    assert min(uvicorn_default, gateway_default) > http1.KEEPALIVE_PLAIN_S
    assert http1.KEEPALIVE_S > http1.KEEPALIVE_PLAIN_S


# -- flow control and timeouts --


async def test_reading_pauses_while_the_reader_is_behind_and_its_silence_is_not_a_timeout(upstreams, clients):
    piece = b"y" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(40)) + b"0\r\n\r\n"  # 2.5 MiB
    server = await upstreams(answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body))
    client = clients(server.url, read_timeout_s=0.3)
    response = await client.post("/chat/completions", b"{}", None, 1 << 25)
    conn = response.connection  # the connection still carrying this answer
    assert conn is not None
    await until(lambda: conn.reading_paused)
    assert response.buffered <= http1.READ_HIGH_WATER + 256 * 1024  # one read past the bound at most
    await asyncio.sleep(0.6)  # longer than the read limit, while the client does not read
    assert len(await response.aread()) == 40 * 65536
    assert not conn.reading_paused and client.idle_count == 1


async def test_silences_shorter_than_the_limit_never_time_out(upstreams, clients):
    # 200 chunks at least 5 ms apart: the whole takes at least 1 s, twice the limit, while each
    # silence is a hundredth of it (a loaded machine stretches a 5 ms sleep, not to 0.5 s).
    async def trickle(writer: asyncio.StreamWriter) -> None:
        for _ in range(200):
            await asyncio.sleep(0.005)
            writer.write(b"1\r\nz\r\n")
        writer.write(b"0\r\n\r\n")

    server = await upstreams(answering((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", trickle)))
    client = clients(server.url, read_timeout_s=0.5)
    response = await client.post("/chat/completions", b"{}", None, 1 << 20)
    got = [chunk async for chunk in response.aiter_bytes()]
    assert b"".join(got) == b"z" * 200
    assert client.idle_count == 1 and len(server.requests) == 1


async def test_an_answer_never_read_nor_closed_is_dropped_after_a_bound(upstreams, clients, monkeypatch):
    monkeypatch.setattr(http1, "PAUSED_MAX_S", 0.5)
    piece = b"y" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(40)) + b"0\r\n\r\n"  # 2.5 MiB
    server = await upstreams(answering((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, "watch")))
    client = clients(server.url, read_timeout_s=2.0, max_connections=1)
    response = await client.post("/chat/completions", b"{}", None, 1 << 25)  # then neither read nor closed
    await until(lambda: server.ended == [1], timeout_s=20)  # its slot is not held forever
    assert client.open_count == 0
    with pytest.raises(StreamBroken) as caught:
        await response.aread()  # what was buffered, then the reason
    assert "unread" in caught.value.message


async def test_a_partial_head_then_silence_is_a_first_byte_timeout(upstreams, clients):
    server = await upstreams(answering((b"HTTP/1.1 200 OK\r\ncontent-le", "stall")))
    with pytest.raises(FirstByteTimeout):
        await fetch(clients(server.url, read_timeout_s=0.2))
    assert len(server.requests) == 1


async def test_a_stall_mid_body_is_an_idle_timeout_and_drops_the_connection(upstreams, clients):
    server = await upstreams(answering((b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{", "watch")))
    client = clients(server.url, read_timeout_s=0.2)
    with pytest.raises(StreamIdleTimeout):
        await fetch(client)
    await until(lambda: server.ended == [1])


async def test_connect_refused_or_timed_out_is_unreachable(clients):
    with pytest.raises(UpstreamUnreachable):
        await fetch(clients(f"http://127.0.0.1:{free_port()}"))
    # A listener that accepts nothing, its backlog full: the handshake never completes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            client = clients(f"http://127.0.0.1:{port}", connect_timeout_s=0.2)
            with pytest.raises(UpstreamUnreachable) as caught:
                await asyncio.wait_for(fetch(client), 5)
            assert "connect timeout" in caught.value.message
            assert client.open_count == 0
            # a caller cancelled while connecting gives its slot back
            patient = clients(f"http://127.0.0.1:{port}", connect_timeout_s=30, max_connections=1)
            task = asyncio.create_task(fetch(patient))
            await asyncio.sleep(0.1)
            assert patient.open_count == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (patient.open_count, patient.waiting) == (0, 0)
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize("where", ["head", "body"])
async def test_a_cancelled_caller_ends_the_connection_upstream(upstreams, clients, where):
    if where == "head":
        server = await upstreams(answering((b"", "watch")))
    else:
        server = await upstreams(answering((b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{", "watch")))
    client = clients(server.url)
    task = asyncio.create_task(fetch(client))
    await until(lambda: len(server.requests) == 1)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: server.ended == [1])
    assert client.open_count == 0


# -- TLS --


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_upstream_with_a_trusted_certificate(upstreams, closing, certificate):
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[func-returns-value]
    server = await Upstream(answering(OK)).start(tls=server_tls)
    try:
        port = server.url.rsplit(":", 1)[1]
        trusting = closing(backend_at(OpenAICompatBackend, f"https://localhost:{port}/v1", type="openai"))
        trusting.ssl_context = ssl.create_default_context(cafile=str(cert))
        response = await trusting.send(request_for({"model": "m"}))
        assert await response.aread() == b"{}"
        await response.aclose()
        assert server.requests[0].line == b"POST /v1/chat/completions HTTP/1.1"
        assert server.requests[0].header("host") == f"localhost:{port}"
        assert names == ["localhost"]  # SNI: the name the certificate is checked against
        # the certificate is trusted but names localhost only: reached as 127.0.0.1, it is refused
        elsewhere = closing(backend_at(OpenAICompatBackend, f"https://127.0.0.1:{port}/v1", type="openai"))
        elsewhere.ssl_context = trusting.ssl_context
        with pytest.raises(UpstreamUnreachable) as caught:
            await elsewhere.send(request_for({"model": "m"}))
        assert "SSLCertVerificationError" in caught.value.message
        # the system's CAs do not know this certificate: the upstream is unreachable, not garbage
        untrusting = closing(backend_at(OpenAICompatBackend, f"https://localhost:{port}/v1", type="openai"))
        with pytest.raises(UpstreamUnreachable):
            await untrusting.send(request_for({"model": "m"}))
        assert len(server.requests) == 1
    finally:
        await server.stop()
