import asyncio
import time

import pytest
from pydantic import ValidationError

from gateway.backends.errors import (
    AuthRejected,
    BackendMisconfigured,
    ClientRejected,
    ContextTooLong,
    FirstByteTimeout,
    MalformedAnswer,
    RateLimited,
    ServerError,
    StreamIdleTimeout,
    UpstreamProtocolError,
    UpstreamUnreachable,
)
from gateway.backends.pool import BackendPool
from gateway.config.schema import CircuitConfig
from gateway.proxy.outcome import Attempt
from gateway.routing.health import (
    CircuitBoard,
    CircuitState,
    HealthBoard,
    HealthProber,
    cooldown_for,
    counts_as_failure,
)
from tests.routing.support import POLICY, Clock, live_for, snapshot_from
from tests.support.fake_upstream import FakeUpstream
from tests.support.fault_upstream import FaultUpstream

KEY = ("b", "m/x")


@pytest.mark.parametrize(
    "error, counts",
    [
        (None, False),
        (ContextTooLong("too long", 400), False),
        (RateLimited("slow", 429, retry_after=2), False),
        (ClientRejected("bad", 400), False),
        (ClientRejected("no such endpoint", 404), False),
        (AuthRejected("bad key", 401), False),
        (ServerError("boom", 500), True),
        (ServerError("down", 503), True),
        (ServerError("timeout", 408), True),
        (BackendMisconfigured("no such model", 404), True),
        (UpstreamUnreachable("refused"), True),
        (FirstByteTimeout("silent"), True),
        (StreamIdleTimeout("stalled"), True),
        (UpstreamProtocolError("reset"), True),
        (MalformedAnswer("garbage"), True),
    ],
    ids=lambda e: type(e).__name__ if e is not None else "answered",
)
def test_which_errors_count_against_a_backend(error, counts):
    # Read from the error class's `backend_fault`, as the fallback loop records it on the attempt.
    offer = snapshot_from(POLICY).offer("pricey", "big/long")
    attempt = Attempt.failed(offer, error, 0.1) if error is not None else Attempt("pricey", "big/long", None, 200)
    assert counts_as_failure(attempt) is counts
    # The labels metrics and the ledger show are unchanged by the classes.
    if error is not None:
        assert attempt.error == {
            ContextTooLong: "context_length",
            RateLimited: "rate_limited",
            BackendMisconfigured: "misconfigured",
            UpstreamUnreachable: "connect",
            FirstByteTimeout: "timeout",
            StreamIdleTimeout: "timeout",
            UpstreamProtocolError: "protocol",
            MalformedAnswer: "malformed",
        }.get(type(error), f"http_{error.status}")


FIXED_30 = CircuitConfig(failure_threshold=3, cooldown_s=30, cooldown_max_s=30)


def test_circuit_opens_at_the_threshold_then_half_opens_after_the_cooldown():
    board = CircuitBoard()
    now = 100.0
    board.failure(KEY, now, FIXED_30)
    board.failure(KEY, now, FIXED_30)
    record = board.get(KEY)
    assert record.state(now, FIXED_30) is CircuitState.CLOSED and record.admits(now, FIXED_30)[0]
    board.failure(KEY, now, FIXED_30)
    assert record.state(now, FIXED_30) is CircuitState.OPEN
    admitted, reason = record.admits(now + 10, FIXED_30)
    assert not admitted and "half-open in 20.0s" in reason
    assert record.state(now + 30, FIXED_30) is CircuitState.HALF_OPEN
    assert record.admits(now + 30, FIXED_30) == (True, "half-open: this request probes the backend")


def test_half_open_lets_one_probe_through_and_its_result_decides():
    board = CircuitBoard()
    t = 1000.0
    for _ in range(3):
        board.failure(KEY, t, FIXED_30)
    board.started(KEY, t + 31)  # the probe
    record = board.get(KEY)
    admitted, reason = record.admits(t + 32, FIXED_30)
    assert not admitted and "probe" in reason
    assert record.admits(t + 62, FIXED_30)[0]  # a probe that never reported does not block forever
    board.failure(KEY, t + 33, FIXED_30)  # probe failed: open again, from then
    assert record.state(t + 33 + 29, FIXED_30) is CircuitState.OPEN
    board.started(KEY, t + 64)
    board.success(KEY)
    assert record.state(t + 64, FIXED_30) is CircuitState.CLOSED and record.failures == 0


def _half_open_moments(policy: CircuitConfig, probes: int, t: float = 1000.0) -> list[float]:
    """Open the circuit at `t`, then let `probes` half-open probes fail, each the moment it
    is allowed; return the cooldown before each probe (checking it is open until then)."""
    board = CircuitBoard()
    for _ in range(policy.failure_threshold):
        board.failure(KEY, t, policy)
    record = board.get(KEY)
    cooldowns = []
    for _ in range(probes):
        half_open = record.half_open_at(policy)
        assert record.state(half_open - 0.01, policy) is CircuitState.OPEN
        assert record.admits(half_open, policy) == (True, "half-open: this request probes the backend")
        cooldowns.append(round(half_open - t, 6))
        board.started(KEY, half_open)
        t = half_open + 0.5  # the probe fails half a second later
        board.failure(KEY, t, policy)
    return cooldowns


def test_cooldown_doubles_with_each_failed_probe_up_to_the_cap():
    policy = CircuitConfig(failure_threshold=3, cooldown_s=2, cooldown_max_s=30)
    assert _half_open_moments(policy, 7) == [2, 4, 8, 16, 30, 30, 30]


def test_default_cooldown_is_two_then_four_seconds():
    # The defaults keep a recovered backend's return within 5 s: no cooldown is longer than 4 s.
    assert _half_open_moments(CircuitConfig(), 5) == [2, 4, 4, 4, 4]


def test_a_policy_with_only_a_long_cooldown_keeps_it_fixed():
    # Written before the cap existed: `cooldown_s: 30` alone still means 30 s every time.
    assert _half_open_moments(CircuitConfig(cooldown_s=30), 3) == [30, 30, 30]
    assert [cooldown_for(CircuitConfig(cooldown_s=30), trips) for trips in (1, 2, 10, 10_000)] == [30] * 4


def test_cap_below_the_first_cooldown_is_a_config_error():
    with pytest.raises(ValidationError, match=r"cooldown_max_s \(1\) must be at least cooldown_s \(5\)"):
        CircuitConfig(cooldown_s=5, cooldown_max_s=1)


def test_a_close_resets_the_cooldown_to_its_start():
    policy = CircuitConfig(failure_threshold=1, cooldown_s=2, cooldown_max_s=60)
    board = CircuitBoard()
    board.failure(KEY, 100.0, policy)  # opened: 2 s
    for t in (102.0, 106.0, 114.0):  # three failed probes: 4, 8, 16 s
        board.started(KEY, t)
        board.failure(KEY, t, policy)
    record = board.get(KEY)
    assert record.half_open_at(policy) == 114.0 + 16
    board.started(KEY, 130.0)
    board.success(KEY)
    assert record.state(130.0, policy) is CircuitState.CLOSED and record.trips == 0
    board.failure(KEY, 140.0, policy)
    assert record.half_open_at(policy) == 142.0


def test_a_failure_while_open_restarts_the_cooldown_without_doubling_it():
    # Calls that started before the circuit opened and fail after it are not failed probes.
    policy = CircuitConfig(failure_threshold=2, cooldown_s=2, cooldown_max_s=60)
    board = CircuitBoard()
    board.failure(KEY, 10.0, policy)
    board.failure(KEY, 10.0, policy)
    board.failure(KEY, 11.0, policy)
    record = board.get(KEY)
    assert record.trips == 1 and record.half_open_at(policy) == 13.0


def test_a_passing_health_check_ends_the_cooldown_of_that_backends_open_circuits():
    policy = CircuitConfig(failure_threshold=1, cooldown_s=30, cooldown_max_s=30)
    board = CircuitBoard()
    other = ("other", "m/x")
    sibling = ("b", "m/y")
    board.health_passed("b", 99.0)  # nothing open yet: nothing to do
    for key in (KEY, sibling, other):
        board.failure(key, 100.0, policy)
    board.health_passed("b", 99.5)  # a check from before the opening says nothing about it
    assert board.get(KEY).state(105.0, policy) is CircuitState.OPEN
    board.health_passed("b", 105.0)
    assert board.get(KEY).admits(105.0, policy) == (True, "half-open: this request probes the backend")
    assert board.get(sibling).state(105.0, policy) is CircuitState.HALF_OPEN
    assert board.get(other).state(105.0, policy) is CircuitState.OPEN  # another backend's
    # Half-open, not closed: the next request still probes, and its failure re-opens it.
    board.started(KEY, 105.0)
    board.failure(KEY, 106.0, policy)
    assert board.get(KEY).state(107.0, policy) is CircuitState.OPEN


def test_shared_view_resets_the_doubling_when_the_circuit_closed_elsewhere():
    policy = CircuitConfig(failure_threshold=1, cooldown_s=2, cooldown_max_s=60)
    board = CircuitBoard()
    board.failure(KEY, 10.0, policy)
    board.started(KEY, 12.0)
    board.failure(KEY, 12.0, policy)
    assert board.get(KEY).trips == 2
    board.replace(KEY, failures=0, opened_at=0.0, blocked_until=0.0)  # another replica's probe passed
    assert board.get(KEY).trips == 0
    board.replace(KEY, failures=1, opened_at=50.0, blocked_until=0.0)  # opened by another replica
    assert board.get(KEY).trips == 1 and board.get(KEY).half_open_at(policy) == 52.0


def test_success_resets_consecutive_failures():
    board = CircuitBoard()
    board.failure(KEY, 1000, FIXED_30)
    board.failure(KEY, 1000, FIXED_30)
    board.success(KEY)
    board.failure(KEY, 1000, FIXED_30)
    assert board.get(KEY).state(1000, FIXED_30) is CircuitState.CLOSED


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


async def test_prober_ends_the_cooldown_of_open_circuits_once_the_backend_passes_again():
    upstream = FaultUpstream("probe").start()
    upstream.down_for(1.0)  # health checks fail for a second, then pass
    snapshot = snapshot_from(
        f"""
        backends:
          local:
            type: vllm
            base_url: {upstream.base_url}
            health_check: {{enabled: true, interval_s: 0.05, timeout_s: 0.5, unhealthy_threshold: 5}}
            circuit: {{failure_threshold: 1, cooldown_s: 600}}
            models: {{m/x: {{}}}}
        """
    )
    policy = snapshot.backends["local"].circuit
    pool = BackendPool()
    pool.apply(snapshot)
    circuits = CircuitBoard()
    health = HealthBoard(on_pass=circuits.health_passed)  # as LiveState wires them
    circuits.failure(("local", "m/x"), time.time(), policy)  # opened by failed calls: 10 minutes
    prober = HealthProber(health, lambda: snapshot, pool, tick_s=0.02)
    task = asyncio.create_task(prober.run())
    record = circuits.get(("local", "m/x"))
    try:
        # Failed checks leave it open (read in the same step as the probe's record: atomic).
        failing = await _until_value(lambda: health.get("local") and health.get("local").failures >= 2)
        assert failing and record.state(time.time(), policy) is CircuitState.OPEN
        await _until(lambda: record.state(time.time(), policy) is CircuitState.HALF_OPEN)
        assert record.admits(time.time(), policy) == (True, "half-open: this request probes the backend")
        assert record.opened_at and record.trips == 1  # half-open, not closed: a call confirms it
    finally:
        task.cancel()
        upstream.stop()
        await pool.aclose()


async def _until_value(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return value


def test_live_state_doubles_the_cooldown_of_a_failing_backend_and_a_health_pass_ends_it():
    # Through LiveState as the proxy drives it (attempt_started / attempt_finished), with the
    # default circuit settings and a clock moved by hand.
    snapshot = snapshot_from(POLICY)
    offer = snapshot.offer("pricey", "big/long")
    clock = Clock()
    live = live_for(snapshot, clock)
    failed = Attempt("pricey", "big/long", "http_503", 503, 0.1, backend_fault=True)

    def fail_once() -> None:
        live.attempt_started(offer)
        live.attempt_finished(offer, failed, None)

    for _ in range(3):
        fail_once()
    waits = []
    for _ in range(4):
        admission = live.admission(offer, clock())
        assert admission.state is CircuitState.OPEN and not admission.admitted
        opened = clock()
        while not live.admission(offer, clock()).admitted:
            clock.advance(0.5)
        waits.append(clock() - opened)
        assert live.admission(offer, clock()).state is CircuitState.HALF_OPEN
        fail_once()  # the probe fails
    assert waits == [2.0, 4.0, 4.0, 4.0]

    clock.advance(0.5)
    assert not live.admission(offer, clock()).admitted  # 3.5 s of its cooldown to go
    live.health.record("pricey", True, clock(), threshold=2)  # an active check passes
    assert live.admission(offer, clock()).reason == "half-open: this request probes the backend"
    live.attempt_started(offer)
    live.attempt_finished(offer, Attempt("pricey", "big/long", None, 200, 0.1), 0.05)
    assert live.admission(offer, clock()).state is CircuitState.CLOSED
    for _ in range(3):
        fail_once()
    assert live.circuits.get(offer.key).half_open_at(CircuitConfig()) == clock() + 2.0  # started over
