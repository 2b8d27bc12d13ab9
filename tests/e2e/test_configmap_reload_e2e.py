"""Hot reload of a Kubernetes ConfigMap mount: the kubelet never edits the file, it writes
a new timestamped directory and flips the `..data` symlink; `policy.yaml` is a symlink
through `..data`. A running gateway must pick the new config up, and reject a broken one
while it keeps serving the old."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import httpx

from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.support.scrape import scrape
from tests.support.services import GatewayProcess


def policy(base_url: str, route: str) -> str:
    return one_backend_policy(base_url, routes={route: ["qwen/qwen3-32b"]})


class ConfigMapDir:
    """The layout and atomic update the kubelet's AtomicWriter produces."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.generation = 0

    def publish(self, text: str) -> None:
        self.generation += 1
        version = self.root / f"..2026_01_01_00_00_0{self.generation}.00000000{self.generation}"
        version.mkdir()
        (version / "policy.yaml").write_text(text)
        data = self.root / "..data"
        old = Path(os.readlink(data)) if data.is_symlink() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        os.rename(tmp, data)  # the atomic flip
        if not (self.root / "policy.yaml").is_symlink():
            (self.root / "policy.yaml").symlink_to("..data/policy.yaml")
        if old is not None:
            shutil.rmtree(self.root / old)


def routes(gw: GatewayProcess) -> set[str]:
    return {m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]} - {"qwen/qwen3-32b"}


def test_a_configmap_symlink_swap_reloads_the_running_gateway(tmp_path, upstream):
    mount = ConfigMapDir(tmp_path / "etc-gateway")
    mount.publish(policy(upstream.base_url, "first"))
    gw = GatewayProcess("", workdir=tmp_path, config_path=mount.root / "policy.yaml").start()
    try:
        assert routes(gw) == {"first"}
        mount.publish(policy(upstream.base_url, "second"))
        poll(lambda: routes(gw) == {"second"}, what="the swapped ConfigMap", context=gw.log)
        assert scrape(gw.url).value("gateway_config_reloads_total", result="success") == 1

        mount.publish("backends: {up: {type: nonsense}}\n")
        poll(
            lambda: scrape(gw.url).value("gateway_config_reloads_total", result="failure") == 1,
            what="the broken ConfigMap to be rejected",
            context=gw.log,
        )
        assert routes(gw) == {"second"}  # the broken file changed nothing
        r = httpx.post(
            gw.url + "/v1/chat/completions", json={"model": "second", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert r.status_code == 200
    finally:
        gw.stop()


def test_a_worker_restarted_while_the_configmap_is_broken_serves_the_last_good_copy(tmp_path, upstream):
    """Hostile testing: the last good copy was named after the policy's fully resolved path,
    which on a ConfigMap mount runs through `..data` into the timestamped directory of that
    generation. A worker that `--workers N` restarted after the ConfigMap turned broken looked
    for the copy of the broken generation, found none, failed to start, and uvicorn stopped
    the whole gateway with it."""
    mount = ConfigMapDir(tmp_path / "etc-gateway")
    mount.publish(policy(upstream.base_url, "first"))
    gw = GatewayProcess("", workdir=tmp_path, config_path=mount.root / "policy.yaml", workers=2).start()
    try:
        mount.publish(policy(upstream.base_url, "second"))
        # Both workers serve "second" before the ConfigMap breaks: one that had not reloaded it
        # yet (busy, its two file events a debounce apart) went from "first" to the broken file,
        # rightly kept "first", and failed the check below in a loaded CI run.
        swapped = set()

        def both_swapped() -> bool:
            status = httpx.get(gw.url + "/admin/status", headers={"connection": "close"}).json()
            if status["routes"] == ["second"]:
                swapped.add(status["worker_pid"])
            return len(swapped) == 2

        poll(both_swapped, what="both workers to serve the swapped ConfigMap", context=gw.log)
        mount.publish("backends: {up: {type: nonsense}}\n")
        # Both workers have seen the broken generation (each rejects it), so both kept "second".
        rejected = {}

        def both_rejected() -> bool:
            status = httpx.get(gw.url + "/admin/status", headers={"connection": "close"}).json()
            if status["config"]["last_reload_error"]:
                rejected[status["worker_pid"]] = status
            return len(rejected) == 2

        poll(both_rejected, what="both workers to reject the broken ConfigMap", context=gw.log)
        victim = min(rejected)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            status = httpx.get(gw.url + "/admin/status", headers={"connection": "close"}).json()
            return status["worker_pid"] not in rejected

        poll(replaced, what="a new worker to answer", ignore=(httpx.HTTPError,), context=gw.log)
        assert gw.proc.poll() is None  # the gateway still runs
        assert "serving the last good copy" in gw.log()
        for _ in range(10):  # both workers, the new one included, route on the last good copy
            assert routes(gw) == {"second"}
    finally:
        gw.stop()
