"""An ASGI app served by uvicorn in a background thread: how the fake upstreams run."""

from __future__ import annotations

import threading

import uvicorn

from tests.support.poll import poll


class ThreadedServer:
    def __init__(self, app, port: int, name: str) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        poll(lambda: self._server.started, what=f"{name} on port {port}", interval=0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=5)
