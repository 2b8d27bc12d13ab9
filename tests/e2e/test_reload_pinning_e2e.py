"""Issue 11, item 17: a request in flight across a hot reload keeps the adapters of the config
it started with (its fallbacks too), and a replaced adapter is closed as soon as its last
user is done, not after a fixed drain time."""

from __future__ import annotations

import socket
import threading

import httpx
import orjson

from tests.support.poll import poll
from tests.support.ports import free_port

CONFIG = """
backends:
  first:
    type: openai
    base_url: {a}
    timeout_s: 20
    models: {{m/x: {{upstream_id: up-x}}}}
  second:
    type: openai
    base_url: {b}
    timeout_s: 20
    models: {{m/x: {{upstream_id: up-x}}}}
routes:
  auto: {{strategy: ordered, models: [m/x]}}
gateway:
  fallback: {{backoff_base_s: 0}}
"""

ANSWER = orjson.dumps(
    {
        "id": "c-keepalive",
        "object": "chat.completion",
        "created": 1,
        "model": "up-x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "kept"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)


class KeepAliveUpstream:
    """A minimal HTTP/1.1 upstream that never closes an idle connection itself, so the only
    way a connection ends is the gateway closing it; counts calls and client closes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.calls = 0
        self.closed_by_client = 0
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        self.closed_by_client += 1
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.calls += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(ANSWER)}\r\n\r\n".encode()
                    + ANSWER
                )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def ask() -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}


def config_version(gw) -> str:
    return httpx.get(gw.url + "/admin/status").json()["config"]["version"]


def test_an_in_flight_request_falls_back_through_the_adapters_it_started_with(start_gateway, upstream, upstream_b):
    old = KeepAliveUpstream()
    try:
        gw = start_gateway(CONFIG.format(a=upstream.base_url, b=old.base_url))
        upstream.reset(status=500, delay_s=2.0)  # the first candidate fails, slowly
        result: dict = {}
        request = threading.Thread(
            target=lambda: result.update(r=httpx.post(gw.url + "/v1/chat/completions", json=ask(), timeout=30))
        )
        request.start()
        poll(lambda: len(upstream.received) == 1, what="the request to reach the first backend")
        version = config_version(gw)
        gw.write_config(CONFIG.format(a=upstream.base_url, b=upstream_b.base_url))  # `second` moves
        poll(lambda: config_version(gw) != version, what="the reload", context=gw.log)
        request.join()

        r = result["r"]
        assert r.status_code == 200 and r.headers["x-gateway-backend"] == "second"
        assert r.json()["choices"][0]["message"]["content"] == "kept"
        assert old.calls == 1  # the fallback used the adapter of the request's own config
        assert len(upstream_b.received) == 0
        # Its last user is done: the replaced adapter closes its pooled connection now (the
        # upstream above never closes one itself), not minutes later.
        poll(lambda: old.closed_by_client == 1, what="the old adapter to close its connection", timeout=15)

        upstream.reset(status=500)
        r = httpx.post(gw.url + "/v1/chat/completions", json=ask())
        assert r.status_code == 200 and r.headers["x-gateway-backend"] == "second"
        assert len(upstream_b.received) == 1 and old.calls == 1  # new requests: the new adapter
    finally:
        old.stop()
