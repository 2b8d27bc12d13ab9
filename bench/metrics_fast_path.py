"""Does `gateway.metric_values` still pay? The metrics observer's CPU for one successful
streamed call (attempt started, attempt finished, call finished: the series a real call
updates), with the resolved adders (`adder`, `observer`) and with prometheus-client's public
`inc`/`observe` in their place, in one process, paired rounds.

    .venv/bin/python bench/metrics_fast_path.py

Prints microseconds per call (CPU time of this thread, best of 5 per round, median over the
rounds) and the difference; compare it with the gateway's CPU per request that `make bench`
prints (README, Performance) to see the share it saves.
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gateway.metrics as metrics_module  # noqa: E402
from gateway.config.loader import load_config  # noqa: E402
from gateway.config.snapshot import ConfigSnapshot  # noqa: E402
from gateway.proxy.outcome import Attempt, CallOutcome  # noqa: E402
from gateway.proxy.usage import Usage  # noqa: E402

ROUNDS = 7


def one_call(metrics: metrics_module.Metrics, snapshot: ConfigSnapshot) -> Callable[[], None]:
    offer = snapshot.offers["mock/mock-small"][0]
    attempt = Attempt(offer.backend, offer.model, None, 200, 0.8)
    outcome = CallOutcome(
        "req-1", "auto", stream=True, route="auto", task="chat", offer=offer, status=200,
        usage=Usage(120, 240), cost_usd=0.00003, latency_s=0.8, ttft_s=0.2, overhead_s=0.0004,
    )  # fmt: skip
    outcome.attempts.append(attempt)

    def call() -> None:
        metrics.attempt_started(offer)
        metrics.attempt_finished(offer, attempt, 0.2)
        metrics.call_finished(outcome)

    return call


def per_call_us(snapshot: ConfigSnapshot) -> float:
    call = one_call(metrics_module.Metrics(), snapshot)
    call()  # series created: what follows is the steady state
    return min(timeit.repeat(call, number=5000, repeat=5, timer=time.thread_time)) / 5000 * 1e6


def main() -> None:
    config, _ = load_config(ROOT / "policies/default.yaml")
    snapshot = ConfigSnapshot.build(config)
    fast = (metrics_module.adder, metrics_module.observer)

    def public_inc(child: Any) -> Callable[[float], None]:
        inc: Callable[[float], None] = child.inc
        return inc

    def public_observe(child: Any) -> Callable[[float], None]:
        observe: Callable[[float], None] = child.observe
        return observe

    resolved, public = [], []
    for _ in range(ROUNDS):
        metrics_module.adder, metrics_module.observer = fast
        resolved.append(per_call_us(snapshot))
        metrics_module.adder, metrics_module.observer = public_inc, public_observe
        public.append(per_call_us(snapshot))
    metrics_module.adder, metrics_module.observer = fast
    a, b = statistics.median(resolved), statistics.median(public)
    print(f"metrics observer, one streamed call (us, median of {ROUNDS} rounds)")
    print(f"  resolved adders (metric_values)   {a:6.2f}")
    print(f"  prometheus-client inc/observe     {b:6.2f}")
    print(f"  saved per call                    {b - a:6.2f}")


if __name__ == "__main__":
    main()
