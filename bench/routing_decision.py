"""How much the routing decision adds to a request: `decide()` and the task classifier,
timed in-process on the multi-provider example policy (no network involved).

    .venv/bin/python bench/routing_decision.py

Prints microseconds per call (best of several rounds, so other load on the machine does
not inflate the figures) for a short prompt, a code prompt, a 10k-token prompt and a request
with provider preferences, with live stats warmed up as a running gateway would have them.
"""

from __future__ import annotations

import os
import random
import sys
import timeit
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config.loader import load_config  # noqa: E402
from gateway.config.snapshot import ConfigSnapshot  # noqa: E402
from gateway.protocol.chat import parse_chat_request  # noqa: E402
from gateway.routing.classify import classify  # noqa: E402
from gateway.routing.facts import request_facts  # noqa: E402
from gateway.routing.live import LiveState  # noqa: E402
from gateway.routing.pipeline import decide  # noqa: E402

for var in ("OPENROUTER_API_KEY", "DEEPSEEK_API_KEY", "MOONSHOT_API_KEY", "ZHIPU_API_KEY", "DASHSCOPE_API_KEY",
            "MINIMAX_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY"):
    os.environ.setdefault(var, "sk-bench")  # every backend enabled: the most candidates to weigh


def main() -> None:
    config, _ = load_config(ROOT / "policies/examples/multi-provider.yaml")
    snapshot = ConfigSnapshot.build(config)
    live = LiveState(lambda: snapshot, rng=random.Random(1))
    for offers in snapshot.offers.values():
        for offer in offers:
            for _ in range(5):
                live.stats.record_ttft(offer.key, random.uniform(0.1, 1.0), 0.3, 0)
                live.stats.record_throughput(offer.key, random.uniform(20, 200), 0.3, 0)
    words = "the quick brown fox jumps over the lazy dog while the report covers quarterly revenue".split()
    rng = random.Random(2)
    long_text = " ".join(rng.choice(words) for _ in range(7500)) + "\nSummarize the document above."
    cases = {
        "short chat": {"model": "auto", "messages": [{"role": "user", "content": "What is the capital of Australia?"}]},
        "code": {"model": "auto", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                               {"role": "user", "content": "Write a Python function that merges two sorted lists."}]},
        "10k-token prompt": {"model": "auto", "messages": [{"role": "user", "content": long_text}]},
        "latency route": {"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
        "provider prefs": {"model": "deepseek/deepseek-v3.2", "models": ["moonshotai/kimi-k2.5"],
                           "provider": {"order": ["deepseek"], "max_price": {"prompt": 1, "completion": 3}},
                           "messages": [{"role": "user", "content": "hi"}]},
    }
    print(f"{'request':18s} {'decide':>10s} {'classify':>10s}  candidates  (us per call, best of 7)")
    for name, body in cases.items():
        chat = parse_chat_request(orjson.dumps(body))
        facts = request_facts(chat, config.gateway)
        decision = decide(chat, {}, snapshot, live)
        n = 2000
        t_decide = min(timeit.repeat(lambda: decide(chat, {}, snapshot, live), number=n, repeat=7)) / n * 1e6
        t_classify = min(timeit.repeat(lambda: classify(chat, {}, facts, config.gateway.classifier), number=n, repeat=7)) / n * 1e6
        tokens = f"~{facts.prompt_tokens:,} tokens"
        print(f"{name:18s} {t_decide:10.1f} {t_classify:10.1f}  {len(decision.candidates):10d}  {decision.task}, {tokens}")


if __name__ == "__main__":
    main()
