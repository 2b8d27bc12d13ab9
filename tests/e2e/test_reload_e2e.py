"""Hot reload of the routing YAML in a running gateway, with one and with several workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.support.ports import free_port
from tests.support.services import REPO


def policy(base_url: str, model: str = "m/one", broken: bool = False) -> str:
    """Route `auto` over one of two models; `broken`: a strategy no gateway knows."""
    route = {"strategy": "cheapest" if broken else "cost", "models": [model]}
    return one_backend_policy(base_url, api_key=None, models=["m/one", "m/two"], routes={"auto": route})


def broken_strategy_line(base_url: str) -> int:
    """Where the broken policy names its strategy: the error messages point there."""
    return policy(base_url, broken=True).splitlines().index("    strategy: cheapest") + 1


def ask(gw) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    )


def validate_output(path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", str(path)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 1
    return [line.strip() for line in result.stderr.splitlines()[1:] if line.strip()]


def test_an_edit_takes_effect_without_restart_and_a_broken_edit_changes_nothing(start_gateway, upstream):
    gw = start_gateway(policy(upstream.base_url))
    assert ask(gw).headers["x-gateway-model"] == "m/one"
    pid = gw.proc.pid
    gw.write_config(policy(upstream.base_url, "m/two"))
    poll(lambda: ask(gw).headers["x-gateway-model"] == "m/two", what="the edited route", context=gw.log)
    version = httpx.get(gw.url + "/admin/status").json()["config"]["version"]

    gw.write_config(policy(upstream.base_url, "m/one", broken=True))
    status = poll(
        lambda: (s := httpx.get(gw.url + "/admin/status").json())["config"]["last_reload_error"] and s,
        what="the rejection",
        context=gw.log,
    )
    errors = status["config"]["last_reload_error"]
    line = broken_strategy_line(upstream.base_url)
    assert errors == [
        f"routes.auto.strategy (line {line}): Input should be 'cost', 'latency', 'throughput', 'ordered' or 'weighted'"
    ]
    assert status["config"]["version"] == version and status["config"]["reloads_failed"] == 1
    assert errors == validate_output(gw.config_path)  # `gateway validate` says exactly the same
    response = ask(gw)
    assert response.status_code == 200 and response.headers["x-gateway-model"] == "m/two"  # still the last good file
    assert "config reload rejected" in gw.log() and f"routes.auto.strategy (line {line})" in gw.log()

    gw.write_config(policy(upstream.base_url, "m/one"))
    poll(lambda: ask(gw).headers["x-gateway-model"] == "m/one", what="the repaired file", context=gw.log)
    assert httpx.get(gw.url + "/admin/status").json()["config"]["last_reload_error"] is None
    assert gw.proc.pid == pid and gw.proc.poll() is None


def test_admin_reload_answers_with_the_result(start_gateway, upstream):
    gw = start_gateway(policy(upstream.base_url), env={"GATEWAY_RELOAD_POLL_S": "3600"})
    gw.config_path.write_text(
        policy(upstream.base_url, broken=True)
    )  # in place: the watcher may or may not see it first
    r = httpx.post(gw.url + "/admin/reload")
    assert r.status_code == 422 and r.json()["reloaded"] is False
    assert r.json()["config"]["last_reload_error"][0].startswith(
        f"routes.auto.strategy (line {broken_strategy_line(upstream.base_url)})"
    )
    gw.config_path.write_text(policy(upstream.base_url, "m/two"))
    r = httpx.post(gw.url + "/admin/reload")
    assert r.status_code == 200 and r.json()["reloaded"] is True
    assert ask(gw).headers["x-gateway-model"] == "m/two"


def worker_views(gw, want: int, condition, timeout: float = 30.0) -> dict[int, dict]:
    """Poll /admin/status over fresh connections until `want` workers each satisfy `condition`."""
    seen: dict[int, dict] = {}

    def enough_workers() -> dict[int, dict] | None:
        status = httpx.get(gw.url + "/admin/status", headers={"connection": "close"}).json()
        if condition(status):
            seen[status["worker_pid"]] = status
        else:
            seen.pop(status["worker_pid"], None)
        return seen if len(seen) >= want else None

    return poll(
        enough_workers,
        what=f"{want} workers to get there",
        timeout=timeout,
        interval=0.02,
        context=lambda: f"workers there: {sorted(seen)}\n{gw.log()}",
    )


def test_every_worker_reloads_and_every_worker_rejects_a_broken_file(start_gateway, upstream):
    gw = start_gateway(policy(upstream.base_url), workers=2)
    first = worker_views(gw, 2, lambda s: True)
    pids = set(first)
    gw.write_config(policy(upstream.base_url, "m/two"))
    edited = worker_views(gw, 2, lambda s: s["config"]["reloads_ok"] >= 1 and not s["config"]["last_reload_error"])
    versions = {s["config"]["version"] for s in edited.values()}
    assert len(versions) == 1 and versions != {s["config"]["version"] for s in first.values()}
    for _ in range(10):
        assert ask(gw).headers["x-gateway-model"] == "m/two"

    gw.write_config(policy(upstream.base_url, broken=True))
    rejected = worker_views(gw, 2, lambda s: bool(s["config"]["last_reload_error"]))
    for status in rejected.values():
        assert status["config"]["version"] in versions  # still serving the last good file
        assert status["config"]["last_reload_error"][0].startswith(
            f"routes.auto.strategy (line {broken_strategy_line(upstream.base_url)})"
        )
    for _ in range(10):
        response = ask(gw)
        assert response.status_code == 200 and response.headers["x-gateway-model"] == "m/two"
    assert set(rejected) == pids  # nobody restarted


def test_sighup_reloads_every_worker_without_restarting_them(start_gateway, upstream):
    gw = start_gateway(policy(upstream.base_url), workers=2, env={"GATEWAY_RELOAD_POLL_S": "3600"})
    before = worker_views(gw, 2, lambda s: True)
    gw.signal(signal.SIGHUP)
    after = worker_views(gw, 2, lambda s: s["config"]["reloads_ok"] >= 1)
    assert set(after) == set(before)  # forwarded as a reload, not a rolling restart
    assert "asking 2 workers to reload the config" in gw.log()


@pytest.mark.parametrize("path", ["policies/default.yaml", "policies/examples/multi-provider.yaml"])
def test_the_shipped_policies_validate(path):
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", path], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: valid")


def test_a_sighup_during_startup_does_not_end_the_gateway(tmp_path):
    """Hostile testing: SIGHUP's default action ended `gateway serve` (exit 129, nothing
    logged) when it came before the gateway served, as a config tool's reload right after a
    deploy does. Here it comes every few milliseconds from the moment `serve` reads its
    settings until the gateway answers: it must come up and keep serving."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("backends:\n  mock: {type: mock, models: {m/one: {}}}\nroutes:\n  auto: {models: [m/one]}\n")
    log = tmp_path / "gateway.log"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(policy), "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        poll(lambda: "open-file limit" in log.read_text(), what="serve to start", interval=0.005)

        def serving_despite_hangups() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the gateway exited with {proc.returncode}:\n{log.read_text()}")
            proc.send_signal(signal.SIGHUP)
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200

        poll(serving_despite_hangups, what="the gateway to serve", interval=0.01, ignore=(httpx.HTTPError,))
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
