"""Real processes tests run: the gateway itself (uvicorn, as users run it) and redis-server.

Each instance gets a free port and a temporary directory and is stopped by its fixture, so
tests stay hermetic and can run in parallel. A missing binary skips the test locally; with
GATEWAY_TEST_STRICT=1 (set by .ci/run) it fails instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = f"`{name}` is not installed (run `make system-deps`)"
    if os.environ.get("GATEWAY_TEST_STRICT") == "1":
        pytest.fail(message + "; GATEWAY_TEST_STRICT=1 forbids skipping")
    pytest.skip(message)


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class GatewayProcess:
    """`python -m gateway serve` in a subprocess, with its own config file and data dir."""

    def __init__(self, config_text: str, *, workers: int = 1, env: dict[str, str] | None = None, workdir: Path | None = None,
                 config_path: Path | None = None) -> None:
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="gw-test-"))
        # config_path: serve a file the test laid out itself (e.g. a ConfigMap-style symlink).
        self.config_path = config_path or self.dir / "policy.yaml"
        if config_path is None:
            self.config_path.write_text(config_text)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "gateway.log"

    def start(self) -> "GatewayProcess":
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "GATEWAY_DATA_DIR": str(self.dir / "data"),
            "GATEWAY_RELOAD_POLL_S": "0.5",
            **self.env,
        }
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path), "--port", str(self.port)]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(self.url + "/health", proc=self.proc)
        except RuntimeError:
            self.stop()
            raise RuntimeError("gateway did not start:\n" + self.log())
        return self

    def write_config(self, text: str) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()


class RedisServer:
    """A private redis-server on a free port with its own dir (persistence optional)."""

    def __init__(self, persist: bool = False) -> None:
        self.binary = require_binary("redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="gw-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.persist = persist
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log"), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        import redis

        while time.time() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
