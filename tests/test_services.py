"""The test harness's own conduct where a flaw would make other tests lie: a server started
for a test (gateway, redis-server, Prometheus) is the one the test talks to, even when its port was taken meanwhile."""

from __future__ import annotations

import http.server
import threading

import httpx

from tests.support.policies import one_backend_policy
from tests.support.prometheus import PrometheusServer
from tests.support.services import GatewayProcess, RedisServer


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Another server that answers anything with 200 (as another test's gateway would)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def test_a_gateway_whose_port_was_taken_starts_on_another_and_is_the_one_reached():
    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    taken = impostor.server_address[1]
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    gw = GatewayProcess(one_backend_policy("http://127.0.0.1:9/v1"))
    gw.port, gw.url = taken, f"http://127.0.0.1:{taken}"  # as if handed out to both
    try:
        gw.start()
        assert gw.port != taken
        assert "address already in use" in gw.log().lower()  # the first try, on the taken port
        models = httpx.get(gw.url + "/v1/models", timeout=5)
        assert models.status_code == 200 and models.json()["object"] == "list"  # the gateway's answer
    finally:
        gw.stop()
        impostor.shutdown()
        impostor.server_close()


def test_a_redis_server_whose_port_was_taken_starts_on_another():
    import redis

    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    taken = impostor.server_address[1]
    server = RedisServer()
    server.port = taken  # as if handed out to both
    try:
        server.start()
        assert server.port != taken
        client = redis.Redis(port=server.port)
        assert client.set("k", "v") and client.get("k") == b"v"  # a redis-server, and ours
        client.close()
    finally:
        server.cleanup()
        impostor.server_close()


def test_a_prometheus_whose_port_was_taken_starts_on_another_and_is_the_one_queried():
    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    taken = impostor.server_address[1]
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    prometheus = PrometheusServer(["127.0.0.1:9"])
    prometheus.port, prometheus.url = taken, f"http://127.0.0.1:{taken}"  # as if handed out to both
    try:
        prometheus.start()
        assert prometheus.port != taken
        assert prometheus.query("vector(7)")["result"][0]["value"][1] == "7"  # a Prometheus, and ours
    finally:
        prometheus.stop()
        impostor.shutdown()
        impostor.server_close()
