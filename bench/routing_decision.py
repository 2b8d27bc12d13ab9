"""How much routing adds to a request: `decide()`, the task classifier, and the per-call
observers (routing's live stats and the Prometheus metrics), timed in-process (no network).

    .venv/bin/python bench/routing_decision.py

Prints microseconds per call: the CPU time of this thread (so other load on the machine,
which preempts it, does not count), best of several rounds, on the default policy and on the multi-provider example, with live
stats warmed up as a running gateway would have them; then the observers' cost for one
successful streamed call, with and without Redis sharing, and (when redis-server is
installed) the CPU the background sync to Redis spends per call.
"""

from __future__ import annotations

import os
import random
import sys
import time
import timeit
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config.loader import load_config  # noqa: E402
from gateway.config.snapshot import ConfigSnapshot  # noqa: E402
from gateway.metrics import Metrics  # noqa: E402
from gateway.protocol.chat import parse_chat_request  # noqa: E402
from gateway.proxy.outcome import Attempt, CallOutcome  # noqa: E402
from gateway.proxy.usage import Usage  # noqa: E402
from gateway.routing.classify import classify  # noqa: E402
from gateway.routing.facts import request_facts  # noqa: E402
from gateway.routing.live import LiveState  # noqa: E402
from gateway.routing.pipeline import decide  # noqa: E402

for var in (
    "OPENROUTER_API_KEY",
    "DEEPSEEK_API_KEY",
    "MOONSHOT_API_KEY",
    "ZHIPU_API_KEY",
    "DASHSCOPE_API_KEY",
    "MINIMAX_API_KEY",
    "GROQ_API_KEY",
    "TOGETHER_API_KEY",
):
    os.environ.setdefault(var, "sk-bench")  # every backend enabled: the most candidates to weigh

ROUNDS = 7


def best_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=ROUNDS, timer=time.thread_time)) / number * 1e6


def warmed_live(snapshot: ConfigSnapshot) -> LiveState:
    live = LiveState(lambda: snapshot, rng=random.Random(1))
    for offers in snapshot.offers.values():
        for offer in offers:
            for _ in range(5):
                live.stats.record_ttft(offer.key, random.uniform(0.1, 1.0), 0.3, 0)
                live.stats.record_throughput(offer.key, random.uniform(20, 200), 0.3, 0)
    return live


def messages(text: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def decide_table(policy: str, cases: dict[str, dict]) -> None:
    config, _ = load_config(ROOT / policy)
    snapshot = ConfigSnapshot.build(config)
    live = warmed_live(snapshot)
    print(f"\n{policy}")
    print(f"  {'request':18s} {'decide':>8s} {'classify':>9s}  candidates  (us per call, best of {ROUNDS})")
    for name, body in cases.items():
        chat = parse_chat_request(orjson.dumps(body))
        facts = request_facts(chat, config.gateway)
        decision = decide(chat, {}, snapshot, live)
        t_decide = best_us(lambda chat=chat: decide(chat, {}, snapshot, live), 2000)
        t_classify = best_us(lambda chat=chat, facts=facts: classify(chat, {}, facts, config.gateway.classifier), 2000)
        tokens = f"~{facts.prompt_tokens:,} tokens"
        print(
            f"  {name:18s} {t_decide:8.1f} {t_classify:9.1f}  {len(decision.candidates):10d}  {decision.task}, {tokens}"
        )


def observers_table() -> None:
    """One successful streamed call as the proxy reports it: attempt started, attempt
    finished (with its time to first token), call finished."""
    config, _ = load_config(ROOT / "policies/default.yaml")
    snapshot = ConfigSnapshot.build(config)
    offer = snapshot.offers["mock/mock-small"][0]
    attempt = Attempt(offer.backend, offer.model, None, 200, 0.8)
    outcome = CallOutcome(
        "req-1",
        "auto",
        stream=True,
        route="auto",
        task="chat",
        offer=offer,
        status=200,
        usage=Usage(120, 240),
        cost_usd=0.00003,
        latency_s=0.8,
        ttft_s=0.2,
        overhead_s=0.0004,
    )
    outcome.attempts.append(attempt)

    def one_call(observer):
        def call() -> None:
            observer.attempt_started(offer)
            observer.attempt_finished(offer, attempt, 0.2)
            observer.call_finished(outcome)

        return call

    metrics = Metrics()
    live = LiveState(lambda: snapshot, rng=random.Random(1))
    shared = LiveState(lambda: snapshot, rng=random.Random(1))
    share_locally = getattr(shared, "share_with_replicas", None)
    if share_locally is not None:
        share_locally()
    else:  # before coalescing: an outbox of one entry per observation
        from collections import deque

        shared.outbox = deque(maxlen=20_000)
    print(f"\nobservers, one successful streamed call (us per call, best of {ROUNDS})")
    for name, observer in (("routing live stats", live), ("  + Redis sharing", shared), ("metrics", metrics)):
        t = best_us(one_call(observer), 5000)
        outbox = getattr(observer, "outbox", None)
        if outbox is not None:
            outbox.clear()
        print(f"  {name:20s} {t:6.2f}")
        if observer is shared:
            sync = redis_sync_per_call(snapshot, one_call)
            if sync is not None:
                print(f"  {'  + its Redis sync':20s} {sync:6.2f}   (CPU of the background push and pull, per call)")


def redis_sync_per_call(snapshot: ConfigSnapshot, one_call, calls: int = 2000) -> float | None:
    """The CPU the background sync spends per call: `calls` calls on one offer, then one
    sync round against a private redis-server (skipped when none is installed)."""
    import asyncio
    import shutil
    import socket
    import subprocess
    import tempfile

    binary = shutil.which("redis-server")
    if binary is None:
        return None
    from redis.asyncio import Redis

    from gateway.routing.shared import SharedLiveState

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            async def measure() -> float:
                client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
                for _ in range(100):
                    try:
                        await client.ping()
                        break
                    except Exception:
                        await asyncio.sleep(0.05)
                live = LiveState(lambda: snapshot, rng=random.Random(1))
                sync = SharedLiveState(client, live, interval_s=3600)
                best = float("inf")
                for _ in range(ROUNDS):
                    call = one_call(live)
                    for _ in range(calls):
                        call()
                    started = time.thread_time()
                    assert await sync.sync_once()
                    best = min(best, time.thread_time() - started)
                await client.aclose()
                return best / calls * 1e6

            return asyncio.run(measure())
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "while",
        "the",
        "report",
        "covers",
        "quarterly",
        "revenue",
    ]
    rng = random.Random(2)
    long_text = " ".join(rng.choice(words) for _ in range(7500)) + "\nSummarize the document above."
    short = messages("What is the capital of Australia?")
    code = messages("Write a Python function that merges two sorted lists.", "You are a helpful assistant.")
    decide_table(
        "policies/default.yaml",
        {
            "short chat": {"model": "auto", "messages": short},
            "code": {"model": "auto", "messages": code},
            "10k-token prompt": {"model": "auto", "messages": messages(long_text)},
        },
    )
    decide_table(
        "policies/examples/multi-provider.yaml",
        {
            "short chat": {"model": "auto", "messages": short},
            "code": {"model": "auto", "messages": code},
            "10k-token prompt": {"model": "auto", "messages": messages(long_text)},
            "latency route": {"model": "fast", "messages": messages("hi")},
            "provider prefs": {
                "model": "deepseek/deepseek-v3.2",
                "models": ["moonshotai/kimi-k2.5"],
                "provider": {"order": ["deepseek"], "max_price": {"prompt": 1, "completion": 3}},
                "messages": messages("hi"),
            },
        },
    )
    observers_table()


if __name__ == "__main__":
    main()
