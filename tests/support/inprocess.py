"""The gateway's ASGI app run in-process with its lifespan, for tests that drive it without a
server: through an httpx client, or message by message (to see what was sent when)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

# The built-in mock backend behind one route: what in-process tests route to.
MOCK_POLICY = """
backends:
  mock:
    type: mock
    models:
      mock/mock-small: {context_length: 8192}
routes:
  auto: {models: [mock/mock-small]}
"""


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """Runs the app's lifespan (through its middleware, as a server does) around the block;
    yields the lifespan state, which a server copies into each request's scope."""
    queue: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []
    state: dict[str, Any] = {}
    await queue.put({"type": "lifespan.startup"})

    async def send(message: dict) -> None:
        sent.append(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, queue.get, send))
    while not any(m["type"].startswith("lifespan.startup.") for m in sent):
        await asyncio.sleep(0.01)
    assert sent[-1]["type"] == "lifespan.startup.complete", sent
    try:
        yield state
    finally:
        await queue.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 10)


def post_scope(path: str, body: bytes, state: dict[str, Any]) -> dict[str, Any]:
    """An HTTP/1.1 POST's ASGI scope, as uvicorn builds it, with a JSON body of `body`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": dict(state),
    }


async def post(
    app: Any,
    state: dict[str, Any],
    body: bytes,
    *,
    path: str = "/v1/chat/completions",
    on_send: Callable[[list[dict]], Awaitable[None]] | None = None,
    left: asyncio.Event | None = None,
) -> list[dict]:
    """One POST through the app, message by message; returns what the app sent. `on_send`
    runs after each message with all sent so far; the client leaves when `left` is set (else
    it stays until the answer is complete)."""
    sent: list[dict] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    gone = left or asyncio.Event()

    async def receive() -> dict:
        if pending:
            return pending.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if on_send is not None:
            await on_send(sent)

    await app(post_scope(path, body, state), receive, send)
    return sent
