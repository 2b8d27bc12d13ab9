"""SIGTERM as Kubernetes and docker send it: stop accepting, let in-flight streams finish
up to GATEWAY_SHUTDOWN_GRACE_S, run the shutdown steps (usage flush), exit 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.support.services import REPO

CONFIG = """
backends:
  up:
    type: openai
    base_url: {base_url}
    api_key: sk-upstream
    timeout_s: 60
    models:
      qwen/qwen3-32b: {{}}
routes:
  auto: {{models: [qwen/qwen3-32b]}}
"""
WORDS = "one two three four five six seven eight nine ten"


class StreamReader(threading.Thread):
    """Reads one streamed answer in the background; `first` is set at the first content byte."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.first = threading.Event()
        self.body = b""
        self.error: Exception | None = None

    def run(self) -> None:
        body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Count."}]}
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=30) as response:
                for chunk in response.iter_bytes():
                    self.body += chunk
                    if b"one" in self.body:
                        self.first.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.first.set()


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def poll(condition, timeout: float = 15.0) -> bool:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_streams_then_exits_zero(start_gateway, upstream, workers):
    upstream.reset(content=WORDS, chunk_delay_s=0.25)  # a stream of about three seconds
    gw = start_gateway(CONFIG.format(base_url=upstream.base_url), workers=workers, env={"GATEWAY_SHUTDOWN_GRACE_S": "20"})
    reader = StreamReader(gw.url)
    reader.start()
    assert reader.first.wait(10) and reader.error is None
    gw.signal(signal.SIGTERM)
    assert poll(lambda: refuses_connections(gw.url)), "still accepting new connections after SIGTERM"
    assert reader.is_alive(), "the in-flight stream was cut instead of drained"
    reader.join(20)
    assert reader.error is None
    assert WORDS.split()[-1].encode() in reader.body and reader.body.rstrip().endswith(b"data: [DONE]")
    assert gw.proc.wait(20) == 0
    assert gw.log().count("gateway stopped after") == workers  # each worker ran its shutdown steps


def test_streams_longer_than_the_grace_period_are_cut_and_the_gateway_still_exits_zero(start_gateway, upstream):
    upstream.reset(content=" ".join(["word"] * 200), chunk_delay_s=0.2)  # forty seconds
    gw = start_gateway(CONFIG.format(base_url=upstream.base_url), env={"GATEWAY_SHUTDOWN_GRACE_S": "1"})
    reader = StreamReader(gw.url)
    reader.start()
    assert poll(lambda: b"word" in reader.body, 10)
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0
    reader.join(10)
    assert not reader.body.rstrip().endswith(b"data: [DONE]")
    assert "timeout graceful shutdown exceeded" in gw.log()
    assert "gateway stopped after" in gw.log()


def test_a_gateway_that_cannot_start_exits_non_zero(tmp_path):
    """uvicorn reports a failed start (here: the port is taken) only through the exit code."""
    config = tmp_path / "policy.yaml"
    config.write_text((REPO / "policies" / "default.yaml").read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
                                cwd=REPO, env={**os.environ, "GATEWAY_DATA_DIR": str(tmp_path / "data")},
                                capture_output=True, text=True, timeout=30)
    assert result.returncode != 0, result.stderr
