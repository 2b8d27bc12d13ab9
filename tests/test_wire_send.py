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
        if scope["path"] == "/stream":
            await send_head_and_body(scope, send, 200, [(b"content-type", b"text/event-stream")], b"data: 1\n\n", True)
            await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            close = [(b"connection", b"close")] if scope["path"] == "/close" else []
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY)), *close]
            await send_head_and_body(scope, send, 201, headers, BODY)
        sent.append(scope["path"])

    return app


async def _serve(app, port: int) -> tuple[uvicorn.Server, asyncio.Task]:
    config = ServeConfig(
        app, wire=WireLimits(), host="127.0.0.1", port=port, http=GatewayHttpProtocol, lifespan="off", log_config=None
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


async def test_head_and_body_arrive_whole_and_the_connection_stays_usable():
    sent: list[str] = []
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


async def test_under_another_server_it_is_the_two_asgi_messages():
    messages: list[dict] = []

    async def send(message):
        messages.append(message)

    await send_head_and_body({"type": "http"}, send, 200, [(b"content-length", b"2")], b"{}")
    assert messages == [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
        {"type": "http.response.body", "body": b"{}", "more_body": False},
    ]
