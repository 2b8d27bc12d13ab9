"""gateway/supervise.py: a background task that raises is logged, counted and restarted."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.metrics import Metrics
from gateway.supervise import start_supervised, supervise
from gateway.usage.recorder import UsageRecorder
from gateway.usage.sqlite_store import SqliteUsageStore
from tests.support.poll import apoll
from tests.test_metrics import value
from tests.usage.test_recorder import finished_call, requests_that_day


async def test_a_task_that_raises_is_restarted_logged_and_counted(caplog):
    metrics = Metrics()
    runs = []
    forever = asyncio.Event()

    async def loop() -> None:
        runs.append(len(runs) + 1)
        if len(runs) <= 2:
            raise RuntimeError(f"bug #{len(runs)}")
        await forever.wait()

    with caplog.at_level(logging.ERROR, logger="gateway.supervise"):
        task = start_supervised("health_prober", loop, metrics.background_task_restarted, initial_backoff_s=0.01)
        await apoll(lambda: runs == [1, 2, 3], what="the third run")
    assert not task.done() and task.get_name() == "health_prober"
    assert value(metrics, "gateway_background_task_restarts_total", task="health_prober") == 2
    failures = [r for r in caplog.records if r.name == "gateway.supervise"]
    assert [r.exc_info[1].args[0] for r in failures] == ["bug #1", "bug #2"]  # each with its traceback
    assert failures[0].getMessage() == "background task health_prober failed; restarting it in 0.0s"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == [1, 2, 3]  # cancellation ends it: no restart


async def test_the_backoff_doubles_up_to_its_cap(monkeypatch):
    slept = []
    real_sleep = asyncio.sleep

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr("gateway.supervise.asyncio.sleep", record_sleep)
    runs = 0

    async def failing() -> None:
        nonlocal runs
        runs += 1
        if runs < 6:
            raise ValueError("again")

    await supervise("t", failing, initial_backoff_s=1.0, max_backoff_s=5.0)
    assert runs == 6 and slept == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_a_task_that_returns_is_done_and_not_restarted():
    runs = []

    async def once() -> None:
        runs.append(1)

    restarts = []
    await supervise("t", once, on_restart=restarts.append, initial_backoff_s=0.01)
    assert runs == [1] and restarts == []


class FailsOnce(asyncio.Event):
    """The recorder's wake-up event, failing the first wait as a bug in the loop would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def wait(self):
        if not self.failed:
            self.failed = True
            raise RuntimeError("unexpected")
        return await super().wait()


async def test_the_usage_recorder_is_restarted_and_still_writes(tmp_path):
    store = SqliteUsageStore(tmp_path / "usage.sqlite3")
    recorder = UsageRecorder(store, flush_interval_s=0.02)
    recorder._wake = FailsOnce()
    restarts = []
    try:
        recorder.start(restarts.append)
        recorder.call_finished(finished_call())
        await apoll(lambda: recorder.recorded == 1, what="the restarted recorder to write")
        assert restarts == ["usage_recorder"] and recorder._wake.failed
        await recorder.close()
        assert await requests_that_day(store) == 1 and recorder.dropped == 0
    finally:
        await store.aclose()


POLICY = """\
backends:
  mock:
    type: mock
    health_check: {enabled: true, interval_s: 0.05}
    models:
      mock/a: {}
      mock/b: {}
routes:
  auto:
    models: [mock/a]
"""


async def test_the_apps_config_watcher_and_health_prober_are_restarted_and_counted(tmp_path, monkeypatch):
    """The app's own wiring: each loop that dies is restarted and counted under its name."""
    from gateway.api.app import create_app
    from gateway.config.reload import ConfigHolder
    from gateway.routing.health import HealthProber
    from gateway.settings import Settings

    runs = {"watch": 0, "probe": 0}
    real_watch, real_run = ConfigHolder.watch, HealthProber.run

    async def watch(self, poll_s: float = 2.0) -> None:
        runs["watch"] += 1
        if runs["watch"] == 1:
            raise RuntimeError("watcher bug")
        await real_watch(self, poll_s)

    async def run(self) -> None:
        runs["probe"] += 1
        if runs["probe"] == 1:
            raise RuntimeError("prober bug")
        await real_run(self)

    monkeypatch.setattr(ConfigHolder, "watch", watch)
    monkeypatch.setattr(HealthProber, "run", run)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    app = create_app(Settings(config=policy, data_dir=tmp_path / "data", usage_writer="inline", reload_poll_s=0.1))
    async with app.app.router.lifespan_context(app.app) as lifespan_state:
        metrics = lifespan_state["gateway_metrics"]
        state = app.state.gateway
        await apoll(lambda: runs == {"watch": 2, "probe": 2}, what="both tasks to be restarted once")
        restarts = {
            task: value(metrics, "gateway_background_task_restarts_total", task=task)
            for task in ("config_watcher", "health_prober", "circuit_state_export", "usage_recorder")
        }
        assert restarts == {"config_watcher": 1, "health_prober": 1, "circuit_state_export": 0, "usage_recorder": 0}
        policy.write_text(POLICY.replace("models: [mock/a]", "models: [mock/b]"))  # the restarted watcher works
        await apoll(lambda: state.config.current.routes["auto"].models == ["mock/b"], what="the edit to apply")
        assert all(not task.done() for task in state.tasks)
        # Every background task the app keeps runs supervised (start_supervised names it).
        assert [t.get_name() for t in state.tasks if t.get_name().startswith("Task-")] == []
        assert "key_refresh" in {t.get_name() for t in state.tasks}
    assert runs == {"watch": 2, "probe": 2}
