"""A fake OpenAI-compatible upstream that streams like a model generates: EVENTS content
events SPACING_MS apart (default 50 events, 20 ms), then the finish chunk, a usage chunk and
`data: [DONE]`. For the long-stream case of `make bench`, where hundreds of concurrent streams
are relayed and what matters is the proxy's CPU per relayed event; nginx cannot space events.

    PORT=18003 EVENTS=50 SPACING_MS=20 python bench/paced_upstream.py
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

EVENTS = int(os.environ.get("EVENTS", "50"))
SPACING_S = float(os.environ.get("SPACING_MS", "20")) / 1000
HEAD = b'data: {"id":"chatcmpl-paced","object":"chat.completion.chunk","created":1767225600,"model":"bench-model","choices":['
ROLE = HEAD + b'{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
TOKEN = HEAD + b'{"index":0,"delta":{"content":" token"},"finish_reason":null}]}\n\n'
END = (
    HEAD
    + b'{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    + HEAD
    + b'],"usage":{"prompt_tokens":9,"completion_tokens":%d,"total_tokens":%d}}\n\ndata: [DONE]\n\n'
    % (EVENTS, EVENTS + 9)
)


async def chat(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    await response.write(ROLE)
    for _ in range(EVENTS):
        await asyncio.sleep(SPACING_S)
        await response.write(TOKEN)
    await response.write(END)
    await response.write_eof()
    return response


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "18003")), access_log=None, print=None)


if __name__ == "__main__":
    main()
