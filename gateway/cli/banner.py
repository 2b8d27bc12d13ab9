"""What `gateway serve` prints last, once it answers: where to point the SDK, where to look,
what it serves, and one command to try.

Printed after the server is listening (not from the lifespan, which runs before the socket
is bound), so every address in it is one that answers, for whatever host and port it got.
One worker: from uvicorn's startup, once it has bound. Several: the supervisor has bound
the socket itself, and prints once a worker answers `GET /health`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn

from gateway.cli.store import describe_store

if TYPE_CHECKING:
    import socket

    from gateway.config.schema import GatewayConfig
    from gateway.settings import Settings

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def base_url(host: str, port: int) -> str:
    """http://HOST:PORT as a client on this machine reaches it (a wildcard bind via loopback)."""
    host = _WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def banner(settings: Settings, config: GatewayConfig, port: int, virtual_keys: bool = False) -> str:
    """`virtual_keys`: the key store holds keys, so the gateway asks every client for one (as
    it does under GATEWAY_REQUIRE_KEYS before any key exists)."""
    url = base_url(settings.host, port)
    asks_for_key = settings.api_keys or virtual_keys or settings.require_keys
    auth = " -H 'Authorization: Bearer YOUR_KEY'" if asks_for_key else ""
    path, body = _first_call(config)
    rows = [
        ("OpenAI base_url", f"{url}/v1"),
        ("rankings", f"{url}/rankings"),
        ("metrics", f"{url}/metrics"),
        ("policy", str(settings.config.absolute())),
        ("store", describe_store(settings)),
        ("try", f"curl -s {url}{path} -H 'Content-Type: application/json'{auth} -d '{body}'"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"open-model-gateway is serving on {url}"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def _first_call(config: GatewayConfig) -> tuple[str, str]:
    """The path and body of a first call that answers: a chat completion of the
    first route that leads to a chat model (else of a chat model); an embedding when the
    policy serves embeddings only (a chat call would get the wrong endpoint's 400)."""
    chat = [m for b in config.backends.values() for m, offer in b.models.items() if offer.kind == "chat"]
    served = set(chat)
    model = next((name for name, route in config.routes.items() if served.intersection(route.models)), None)
    if model is None and chat:
        model = chat[0]
    if model is not None:
        body = {"model": model, "messages": [{"role": "user", "content": "Say hi"}]}
        path = "/v1/chat/completions"
    else:
        embedding = next(iter(config.routes), None) or next(m for b in config.backends.values() for m in b.models)
        body, path = {"model": embedding, "input": "Say hi"}, "/v1/embeddings"
    return path, json.dumps(body, separators=(",", ":"))


def show(text: str) -> None:
    # stdout, flushed: the log goes to stderr, and a piped stdout would otherwise hold it back.
    print(text, file=sys.stdout, flush=True)


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, printing the banner once startup has bound the socket (one worker)."""

    def __init__(self, config: uvicorn.Config, text: Callable[[int], str]) -> None:
        super().__init__(config)
        self._banner = text

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            bound = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            show(self._banner(bound))  # the bound port: `--port 0` gets one from the kernel


def announce_when_healthy(url: str, text: str) -> threading.Thread:
    """Several workers: print once `url`/health answers 200 (the supervisor holds the socket,
    so nothing else can be answering on it)."""

    def wait() -> None:
        import httpx

        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    show(text)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=wait, name="gateway-banner", daemon=True)
    thread.start()
    return thread
