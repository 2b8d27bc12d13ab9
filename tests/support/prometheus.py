"""A real Prometheus (Debian's `prometheus` binary) on a free port, for tests.

Scrapes the given targets every second and evaluates the given rule files every second,
with its own temporary TSDB; `query` talks to its HTTP API as Grafana would.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import yaml

from tests.support.poll import poll
from tests.support.ports import free_port
from tests.support.services import PORT_ATTEMPTS, require_binary


class PrometheusServer:
    def __init__(self, targets: list[str], rule_files: list[Path] = ()) -> None:
        self.binary = require_binary("prometheus")
        self.dir = Path(tempfile.mkdtemp(prefix="gw-prom-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.dir / "prometheus.yml"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "gateway", "static_configs": [{"targets": targets}]}],
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen | None = None

    def start(self) -> PrometheusServer:
        self._log = open(self.dir / "prometheus.log", "ab")
        for attempt in range(PORT_ATTEMPTS):
            if attempt:  # another process took the port between `free_port` and the bind
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
            offset = self._log.seek(0, 2)  # its log from here on is this attempt's
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            try:
                poll(
                    self._ready,
                    what="prometheus to become ready",
                    timeout=30,
                    interval=0.1,
                    ignore=(httpx.HTTPError,),
                    context=self.log,
                )
            except RuntimeError:
                text = (self.dir / "prometheus.log").read_bytes()[offset:].decode(errors="replace")
                if "address already in use" in text.lower() and attempt + 1 < PORT_ATTEMPTS:
                    continue
                raise
            return self
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _ready(self) -> bool:
        """Prometheus's own answer on its port: its process alive and its readiness text (a
        200 from another server that took the port would prove nothing)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("prometheus exited:\n" + self.log())
        r = httpx.get(self.url + "/-/ready", timeout=1)
        return r.status_code == 200 and "Prometheus" in r.text

    def query(self, expr: str) -> dict:
        """An instant query; returns the API's `data` (raises on a parse or evaluation error)."""
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}\n{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def rules(self) -> list[dict]:
        body = httpx.get(self.url + "/api/v1/rules", timeout=5).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict]:
        return httpx.get(self.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]

    def log(self) -> str:
        try:
            return (self.dir / "prometheus.log").read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
