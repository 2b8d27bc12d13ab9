"""Headless Chromium driven over the DevTools protocol, for page tests that must act (type a
key, submit a form) or look at the page while a request is still pending, which a one-shot
`--dump-dom` cannot."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.support.poll import poll
from tests.support.services import require_binary


class Browser:
    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="gw-chromium-"))
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0",  # Chromium picks one and writes it to DevToolsActivePort
            "--window-size=1280,1400",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            [require_binary("chromium"), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        active = self.profile / "DevToolsActivePort"
        port = poll(lambda: active.exists() and active.read_text().split("\n")[0], what="Chromium's DevTools port")
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self._exit = ExitStack()
        self.ws = self._exit.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None, proxy=None))
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """The expression's value once it is truthy (page scripts may not have run yet: errors are retried)."""
        return poll(
            lambda: self.evaluate(expression), what=expression, timeout=timeout, interval=0.05, ignore=(RuntimeError,)
        )

    def close(self) -> None:
        try:
            self._exit.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)
