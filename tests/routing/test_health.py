import asyncio
import time

import pytest

from gateway.backends.pool import BackendPool
from gateway.routing.health import CircuitBoard, CircuitState, HealthBoard, HealthProber, counts_as_failure
from tests.routing.support import snapshot_from
from tests.support.fake_upstream import FakeUpstream

KEY = ("b", "m/x")


@pytest.mark.parametrize(
    "error, counts",
    [
        (None, False),
        ("context_length", False),
        ("client_disconnected", False),
        ("rate_limited", False),
        ("http_400", False),
        ("http_404", False),
        ("http_401", False),
        ("http_500", True),
        ("http_503", True),
        ("http_408", True),
        ("connect", True),
        ("timeout", True),
        ("protocol", True),
    ],
)
def test_which_errors_count_against_a_backend(error, counts):
    assert counts_as_failure(error) is counts


def test_circuit_opens_at_the_threshold_then_half_opens_after_the_cooldown():
    board = CircuitBoard()
    now = 100.0
    board.failure(KEY, now, threshold=3)
    board.failure(KEY, now, threshold=3)
    record = board.get(KEY)
    assert record.state(now, 30) is CircuitState.CLOSED and record.admits(now, 30)[0]
    board.failure(KEY, now, threshold=3)
    assert record.state(now, 30) is CircuitState.OPEN
    admitted, reason = record.admits(now + 10, 30)
    assert not admitted and "half-open in 20.0s" in reason
    assert record.state(now + 30, 30) is CircuitState.HALF_OPEN
    assert record.admits(now + 30, 30) == (True, "half-open: this request probes the backend")


def test_half_open_lets_one_probe_through_and_its_result_decides():
    board = CircuitBoard()
    t = 1000.0
    for _ in range(3):
        board.failure(KEY, t, threshold=3)
    board.started(KEY, t + 31)  # the probe
    record = board.get(KEY)
    admitted, reason = record.admits(t + 32, 30)
    assert not admitted and "probe" in reason
    assert record.admits(t + 62, 30)[0]  # a probe that never reported does not block forever
    board.failure(KEY, t + 33, threshold=3)  # probe failed: open again, from then
    assert record.state(t + 33 + 29, 30) is CircuitState.OPEN
    board.started(KEY, t + 64)
    board.success(KEY)
    assert record.state(t + 64, 30) is CircuitState.CLOSED and record.failures == 0


def test_success_resets_consecutive_failures():
    board = CircuitBoard()
    board.failure(KEY, 1000, 3)
    board.failure(KEY, 1000, 3)
    board.success(KEY)
    board.failure(KEY, 1000, 3)
    assert board.get(KEY).state(1000, 30) is CircuitState.CLOSED


def test_retry_after_block_only_grows():
    board = CircuitBoard()
    board.block(KEY, 50.0)
    board.block(KEY, 40.0)
    assert board.get(KEY).blocked_until == 50.0


def test_health_board_needs_consecutive_failures_and_one_success_to_recover():
    board = HealthBoard()
    board.record("b", False, 1.0, threshold=2, error="boom")
    assert not board.is_down("b")
    board.record("b", False, 2.0, threshold=2, error="boom")
    assert board.is_down("b") and board.get("b").last_error == "boom"
    board.record("b", True, 3.0, threshold=2)
    assert not board.is_down("b") and board.get("b").failures == 0


async def test_prober_marks_a_backend_down_when_its_server_goes_away_and_up_when_it_returns():
    upstream = FakeUpstream("probe").start()
    port = upstream.port
    snapshot = snapshot_from(
        f"""
        backends:
          local:
            type: vllm
            base_url: {upstream.base_url}
            health_check: {{enabled: true, interval_s: 0.05, timeout_s: 0.5, unhealthy_threshold: 2}}
            models: {{m/x: {{}}}}
          remote:
            type: openai
            base_url: {upstream.base_url}
            models: {{m/y: {{}}}}
        """
    )
    pool = BackendPool()
    pool.apply(snapshot)
    board = HealthBoard()
    prober = HealthProber(board, lambda: snapshot, pool, tick_s=0.02)
    task = asyncio.create_task(prober.run())
    try:
        await _until(lambda: board.get("local") is not None and board.get("local").last_probe_at > 0)
        assert not board.is_down("local")
        assert board.get("remote") is None  # health checks are opt-in per backend
        upstream.stop()
        await _until(lambda: board.is_down("local"))
        upstream = FakeUpstream("probe")
        upstream.port, upstream.base_url = port, f"http://127.0.0.1:{port}/v1"
        upstream.start()
        await _until(lambda: not board.is_down("local"))
    finally:
        task.cancel()
        upstream.stop()
        await pool.aclose()


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
