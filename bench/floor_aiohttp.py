"""The Python floor without ASGI: aiohttp server and aiohttp client, bytes passed through (JSON and SSE)."""

import os

import aiohttp
from aiohttp import web

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:18001")


async def on_startup(app):
    app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session: aiohttp.ClientSession = request.app["client"]
    async with session.post(
        UPSTREAM + "/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    ) as up:
        ctype = up.headers.get("content-type", "")
        if ctype.startswith("text/event-stream"):
            resp = web.StreamResponse(status=up.status, headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        data = await up.read()
        return web.Response(body=data, status=up.status, content_type="application/json")


app = web.Application()
app.on_startup.append(on_startup)
app.router.add_post("/v1/chat/completions", chat)

if __name__ == "__main__":
    import uvloop

    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "18120")), access_log=None, print=None)
