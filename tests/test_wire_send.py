"""gateway/api/wire.py `send_head_and_body`: an answer's head and first body in one socket
write under the gateway's protocol, exactly what the two ASGI messages would have sent."""

from __future__ import annotations

import asyncio

import uvicorn

from gateway.api.wire import GatewayHttpProtocol, ServeConfig, WireLimits, send_head_and_body
from tests.support.ports import free_port

BODY = b'{"ok":true}'


def _app(sent: list[str]):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["path"] in _ODD:  # what the direct write leaves to uvicorn: the same answer or error
            await send_head_and_body(scope, send, 200, _ODD[scope["path"]], BODY)
        elif scope["path"] == "/once":  # no content-length, all of it in the first body: one chunk and the end
            await send_head_and_body(scope, send, 200, [(b"content-type", b"application/json")], BODY)
        elif scope["path"] == "/stream":
            await send_head_and_body(scope, send, 200, [(b"content-type", b"text/event-stream")], b"data: 1\n\n", True)
            await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            close = [(b"connection", b"close")] if scope["path"] == "/close" else []
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY)), *close]
            await send_head_and_body(scope, send, 201, headers, BODY)
        sent.append(scope["path"])

    return app


_LENGTH = (b"content-length", b"%d" % len(BODY))
_ODD = {
    "/upper": [(b"Content-Type", b"application/json"), _LENGTH],  # uvicorn writes the name lower-cased
    "/newline": [(b"x-bad", b"a\r\nset-cookie: x=1"), _LENGTH],  # uvicorn refuses it: nothing injected
    "/name": [(b"x bad", b"1"), _LENGTH],
    "/short": [(b"content-length", b"%d" % (len(BODY) + 5))],  # uvicorn refuses a body shorter than said
}


async def _serve(app, port: int) -> tuple[uvicorn.Server, asyncio.Task]:
    config = ServeConfig(
        app,
        wire=WireLimits(),
        host="127.0.0.1",
        port=port,
        http=GatewayHttpProtocol,
        lifespan="off",
        log_config=None,
        headers=[("X-Content-Type-Options", "nosniff")],  # a server default header, as `gateway serve` sets
        server_header=False,
        date_header=False,
        access_log=False,  # as `gateway serve` runs (with one, uvicorn writes every answer's start: it logs it)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task


async def _read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head[:-4].split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    else:
        body = b""
        while not body.endswith(b"0\r\n\r\n"):
            body += await asyncio.wait_for(reader.read(65536), 5)
    return status, headers, body


async def test_head_and_body_arrive_whole_and_the_connection_stays_usable(monkeypatch):
    sent: list[str] = []
    written: list[bool] = []  # whether the protocol wrote each answer's start itself
    direct = GatewayHttpProtocol.write_head_and_body

    def spy(self, *args):
        written.append(direct(self, *args))
        return written[-1]

    monkeypatch.setattr(GatewayHttpProtocol, "write_head_and_body", spy)
    port = free_port()
    server, task = await _serve(_app(sent), port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):  # keep-alive: the second request on the same connection is answered too
            writer.write(b"POST /json HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            status, headers, body = await _read_answer(reader)
            assert status == b"HTTP/1.1 201 Created"
            assert headers[b"content-type"] == b"application/json" and body == BODY
            assert b"connection" not in headers
        writer.write(b"POST /stream HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        status, headers, body = await _read_answer(reader)
        assert status == b"HTTP/1.1 200 OK" and headers[b"transfer-encoding"] == b"chunked"
        assert (
            body == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"
        )  # the first chunk framed as uvicorn frames it
        writer.write(b"POST /close HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        status, headers, body = await _read_answer(reader)
        assert (status, headers[b"connection"], body) == (b"HTTP/1.1 201 Created", b"close", BODY)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the server closed it after the answer
        writer.close()
    finally:
        server.should_exit = True
        await task
    assert sent == ["/json", "/json", "/stream", "/close"]
    assert written == [True, True, True, False]  # a `connection` header is uvicorn's to write


async def _ask(port: int, request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes, bytes]:
    """One request on a new connection: the answer's status line, headers and body, and
    whatever the server sent after it before closing (b"" when it closed right after)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        status, headers, body = await _read_answer(reader)
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), 5)
        return status, headers, body, rest
    finally:
        writer.close()


async def test_the_direct_write_answers_as_uvicorn_would():
    sent: list[str] = []
    port = free_port()
    server, task = await _serve(_app(sent), port)
    try:
        # Server default headers come first; a client that asks to close gets `connection: close` and a close.
        status, headers, body, rest = await _ask(
            port, b"POST /json HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
        )
        assert (status, body, rest) == (b"HTTP/1.1 201 Created", BODY, b"")
        assert list(headers) == [b"x-content-type-options", b"content-type", b"content-length", b"connection"]
        assert headers[b"connection"] == b"close"
        # HTTP/1.0: no keep-alive either.
        status, headers, body, rest = await _ask(port, b"POST /json HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}")
        assert (status, headers[b"connection"], body, rest) == (b"HTTP/1.1 201 Created", b"close", BODY, b"")
        # A stream that ends with its first body: one chunk and the last one.
        status, headers, body, _ = await _ask(port, b"POST /upper HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        assert status == b"HTTP/1.1 200 OK" and headers[b"content-type"] == b"application/json" and body == BODY
        for path in ("/newline", "/name"):  # uvicorn refuses the head: the connection closes, nothing sent
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".encode())
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        # A body shorter than its content-length: uvicorn writes both, then closes the connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /short HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer == b"HTTP/1.1 200 OK\r\nx-content-type-options: nosniff\r\ncontent-length: 16\r\n\r\n" + BODY
        writer.close()
        # HEAD: no body, as uvicorn writes it.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /json HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 201 Created") and b"content-length: 11" in head
        writer.close()
    finally:
        server.should_exit = True
        await task
    assert sent[:3] == ["/json", "/json", "/upper"]


async def test_under_another_server_it_is_the_two_asgi_messages():
    messages: list[dict] = []

    async def send(message):
        messages.append(message)

    await send_head_and_body({"type": "http"}, send, 200, [(b"content-length", b"2")], b"{}")
    assert messages == [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
        {"type": "http.response.body", "body": b"{}", "more_body": False},
    ]


async def test_chunked_answers_are_the_bytes_uvicorn_writes_even_on_a_closing_connection(monkeypatch):
    # The same requests answered twice: by the protocol's direct write, then by uvicorn's own
    # two sends (the direct write turned off). Every byte must match, header order included.
    requests = [
        b"POST /once HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        b"POST /once HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        b"POST /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        b"POST /stream HTTP/1.0\r\ncontent-length: 0\r\n\r\n",
    ]
    answers: dict[bool, list[bytes]] = {}
    for direct in (True, False):
        if not direct:
            monkeypatch.setattr(GatewayHttpProtocol, "write_head_and_body", lambda self, *args: False)
        port = free_port()
        server, task = await _serve(_app([]), port)
        try:
            answers[direct] = []
            for request in requests:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                answer = b""
                while not answer.endswith(b"0\r\n\r\n"):
                    answer += await asyncio.wait_for(reader.read(65536), 5)
                answers[direct].append(answer)
                writer.close()
        finally:
            server.should_exit = True
            await task
    assert answers[True] == answers[False]
    assert answers[True][0].endswith(b"\r\n\r\nb\r\n" + BODY + b"\r\n0\r\n\r\n")
    assert b"connection: close\r\ntransfer-encoding: chunked\r\n\r\n" in answers[True][1]
