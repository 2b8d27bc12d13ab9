"""Real processes tests run: the gateway itself (uvicorn, as users run it) and redis-server.

Each instance gets a free port and a temporary directory and is stopped by its fixture, so
tests stay hermetic and can run in parallel. A missing binary skips the test locally; with
GATEWAY_TEST_STRICT=1 (set by .ci/run) it fails instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.support.poll import poll
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


PORT_ATTEMPTS = 3  # a server (gateway, redis-server) whose port was taken before it bound it starts again on another


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Return once `url` answers below 500; raise RuntimeError if `proc` exits first or time runs out."""

    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        return httpx.get(url, timeout=1.0).status_code < 500

    try:
        poll(answers, what=f"{url} to answer", timeout=timeout, ignore=(httpx.HTTPError,))
    except AssertionError as exc:
        raise RuntimeError(str(exc)) from None


class GatewayProcess:
    """`python -m gateway serve` in a subprocess, with its own config file and data dir.

    The temporary directory it makes for itself (config, data, log) is removed by `stop`;
    a `workdir` the caller passed stays theirs. The log's text outlives the directory
    (`log()` still answers after `stop`), and the start_gateway fixture adds it to the
    report of a failed test.
    """

    def __init__(
        self,
        config_text: str,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.owns_dir = workdir is None
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
        self._log = None
        self._final_log: str | None = None  # the log's text once the directory is gone

    def start(self) -> GatewayProcess:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "GATEWAY_DATA_DIR": str(self.dir / "data"),
            "GATEWAY_RELOAD_POLL_S": "0.5",
            # Rankings read fresh on every request, not kept 5 s: a test polls until its calls
            # show. The tests of the kept answer set their own interval.
            "GATEWAY_RANKINGS_REFRESH_S": "0",
            **self.env,
        }
        self._log = open(self.log_path, "ab")
        for attempt in range(PORT_ATTEMPTS):
            if attempt:  # another process took the port between `free_port` and the bind
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
            cmd = [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
            ]
            if self.workers > 1:
                cmd += ["--workers", str(self.workers)]
            logged = self.log_path.stat().st_size
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
            try:
                self._wait_serving(logged)
                return self
            except RuntimeError as exc:
                taken = "address already in use" in self._log_since(logged).lower()
                if taken and attempt + 1 < PORT_ATTEMPTS:
                    continue
                self.stop()
                raise RuntimeError(f"gateway did not start ({exc}):\n{self.log()}") from None
        raise AssertionError("unreachable")

    def _wait_serving(self, logged: int) -> None:
        """Until this process says it listens on its port (uvicorn's line, written once the bind
        succeeded) and answers there. Another process holding the port for a moment (a port
        handed out again between `free_port` and the bind) could answer /health first: its
        answer alone proves nothing."""
        assert self.proc is not None
        proc = self.proc
        # uvicorn's "Uvicorn running on http://HOST:PORT (Press CTRL+C ...)" (logged at info) or
        # the gateway's banner "... is serving on http://HOST:PORT" (printed at any log level).
        bound = re.compile(rf"(?:running|serving) on https?://\S+:{self.port}\b")

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before it listened on {self.port}")
            return bound.search(self._log_since(logged)) is not None

        try:
            poll(listening, what=f"the gateway to listen on port {self.port}", timeout=30)
        except AssertionError as exc:
            raise RuntimeError(str(exc)) from None
        wait_http(self.url + "/health", proc=proc)

    def _log_since(self, offset: int) -> str:
        return _log_since(self.log_path, offset)

    def write_config(self, text: str) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (SIGKILL after `timeout`), then remove the directory this instance made."""
        try:
            return self._terminate(timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            if self.owns_dir and self.dir.exists():
                self._final_log = self.log()
                shutil.rmtree(self.dir, ignore_errors=True)

    def _terminate(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _log_since(log: Path, offset: int) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _redis_ready(proc: subprocess.Popen, log: Path, offset: int) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"redis-server exited with {proc.returncode}")
    return "Ready to accept connections" in _log_since(log, offset)


class RedisServer:
    """A private redis-server on a free port with its own dir (persistence optional)."""

    def __init__(self, persist: bool = False) -> None:
        self.binary = require_binary("redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="gw-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.persist = persist
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        import redis

        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
            "--save",
            "",
        ]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        log = self.dir / "redis.log"
        for attempt in range(PORT_ATTEMPTS):
            if attempt:  # another process took the port between `free_port` and the bind
                self.port = free_port()
                self.url = f"redis://127.0.0.1:{self.port}/0"
                args[args.index("--port") + 1] = str(self.port)
            offset = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                # Its own word that it listens (another redis-server answering PING on the
                # port, for a moment, would prove nothing).
                ready = partial(_redis_ready, self.proc, log, offset)
                poll(ready, what=f"redis-server on port {self.port}", timeout=20)
            except RuntimeError:
                text = _log_since(log, offset)
                if "Address already in use" in text and attempt + 1 < PORT_ATTEMPTS:
                    continue
                raise RuntimeError(f"redis-server did not start:\n{text}") from None
            break
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        try:
            poll(client.ping, what=f"redis-server on port {self.port}", timeout=20, ignore=(redis.RedisError,))
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self, seconds: float) -> None:
        """Every client's commands wait `seconds` (CLIENT PAUSE ALL): a Redis that hangs for a
        while and then answers again. Not undone early: CLIENT UNPAUSE itself would wait."""
        import redis

        admin = redis.Redis(port=self.port, socket_timeout=5)
        try:
            admin.client_pause(int(seconds * 1000), all=True)
        finally:
            admin.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def pool_in_use(client) -> int:
    """Connections of a redis-py client's pool lent out and not returned (its own count)."""
    _idle, (in_use, _attributes) = client.connection_pool.get_connection_count()
    return in_use
