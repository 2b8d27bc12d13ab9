"""gateway/api/leave.py: a client leaving cancels the handler's work, noticed by the
connection (the gateway's HTTP protocol, no task per request) or by a task on `receive()`."""

from __future__ import annotations

import asyncio

import uvicorn

from gateway.api.leave import ClientWatch, TaskWatch, watch_client
from gateway.api.wire import GatewayHttpProtocol, ServeConfig, WireLimits
from tests.support.ports import free_port


async def _served(app, port: int) -> tuple[uvicorn.Server, asyncio.Task]:
    config = ServeConfig(
        app, wire=WireLimits(), host="127.0.0.1", port=port, http=GatewayHttpProtocol, lifespan="off", log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task


def _recording_app(seen: dict):
    """Arms a watch once the body is read, then works 'forever' (an upstream that never answers)."""

    async def app(scope, receive, send):
        message = await receive()
        assert message["type"] == "http.request" and not message.get("more_body")
        # Told its owner as the ingress tells it (the handler's task, looked up once per request).
        watch = seen["watch"] = watch_client(scope, receive, asyncio.current_task())
        seen["armed"].set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen["cancelled_left"] = watch.left
            seen["done"].set()
            raise
        watch.stop()

    return app


async def test_the_gateway_protocol_cancels_the_handler_when_the_client_leaves():
    seen: dict = {"armed": asyncio.Event(), "done": asyncio.Event()}
    port = free_port()
    server, task = await _served(_recording_app(seen), port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.wait_for(seen["armed"].wait(), 5)
        writer.close()  # the client leaves before any answer
        await asyncio.wait_for(seen["done"].wait(), 5)
    finally:
        server.should_exit = True
        await task
    assert type(seen["watch"]) is ClientWatch  # armed on the connection: no task per request
    assert seen["cancelled_left"] is True  # the handler knows it was the client, not a shutdown


async def test_a_stopped_connection_watch_does_not_cancel():
    loop = asyncio.get_running_loop()
    owner = loop.create_task(asyncio.sleep(5))
    watch = ClientWatch(owner)
    watch.stop()
    watch.client_left()  # the connection went away after the answer was complete
    await asyncio.sleep(0)
    assert not owner.cancelled() and watch.left is False
    owner.cancel()


async def test_without_the_gateway_protocol_a_task_waits_for_the_disconnect():
    left = asyncio.Event()

    async def receive():
        await left.wait()
        return {"type": "http.disconnect"}

    seen: dict = {}

    async def handler():
        watch = seen["watch"] = watch_client({"type": "http"}, receive)  # no protocol offer in the scope
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen["left"] = watch.left
            raise

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    left.set()
    try:
        await asyncio.wait_for(task, 5)
    except asyncio.CancelledError:
        pass
    assert task.cancelled()
    assert type(seen["watch"]) is TaskWatch and seen["left"] is True


async def test_a_stopped_task_watch_leaves_the_handler_alone():
    async def receive():
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def handler():
        watch = watch_client({"type": "http"}, receive)
        watch.stop()
        await asyncio.sleep(0.05)
        return watch.left

    assert await handler() is False
