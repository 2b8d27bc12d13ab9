"""Benchmark: the chat path's latency while clients poll /v1/rankings, with many distinct apps.

What it does:

1. Starts the fake upstream of `make bench` (nginx, fixed JSON answers) and a private
   redis-server on core 0, and one gateway (Redis usage store) pinned to core 1.
2. Sends --apps chat calls, each with its own `HTTP-Referer` (so --apps distinct apps today),
   and waits until the ledger holds them all.
3. Runs rounds of wrk (non-streaming chat, --conc connections, --duration seconds) against the
   gateway, alternating: chat alone, then chat while --pollers clients each poll
   GET /v1/rankings (the page's default query), back to back or every --poll-interval
   seconds. Prints p50/p99 of each run and the medians per mode, and how many rankings
   answers the pollers got.
4. With --cpu-phase S: for S seconds, a trickle of chat calls (20/s, so the aggregates change
   every flush) while the pollers poll back to back; prints the gateway process's CPU time
   per rankings answer. CPU time is less disturbed than latency by what else runs.

    python bench/rankings_poll.py [--code DIR] [--apps 10000] [--rounds 3] [--duration 10]
                                  [--poll-interval 0]

--code runs another checkout's gateway (e.g. an unpacked older commit) with this driver.
Not part of the test suite; the figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench import Procs, cpu_seconds, wait_up, wrk  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
JSON_PORT, GATEWAY, REDIS = 18401, 18402, 18403

POLICY = f"""
backends:
  bench-json:
    type: openai
    base_url: http://127.0.0.1:{JSON_PORT}/v1
    models:
      bench/json: {{upstream_id: bench-model, context_length: 32768, input_price: 0.1, output_price: 0.2}}
routes:
  bench: {{strategy: cost, models: [bench/json]}}
"""


async def seed(url: str, apps: int, conc: int = 16) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        queue = list(range(apps))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
                r = await client.post(url + "/v1/chat/completions", json=body, headers={"http-referer": f"app-{i}"})
                r.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(conc)))


def recorded(url: str) -> int:
    rankings = httpx.get(url + "/v1/rankings", params={"window": "day"}, timeout=60).json()
    return rankings["totals"]["requests"]


def poll_rankings(url: str, stop: threading.Event, answers: list[float], interval: float) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            t = time.perf_counter()
            client.get(url + "/v1/rankings").raise_for_status()
            answers.append(time.perf_counter() - t)
            stop.wait(interval)


def cpu_phase(url: str, pid: int, seconds: float, pollers: int) -> None:
    stop = threading.Event()
    answers: list[float] = []
    threads = [threading.Thread(target=poll_rankings, args=(url, stop, answers, 0.0)) for _ in range(pollers)]

    def trickle() -> None:
        body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        with httpx.Client(timeout=30) as client:
            while not stop.wait(0.05):
                client.post(url + "/v1/chat/completions", json=body).raise_for_status()

    threads.append(threading.Thread(target=trickle))
    cpu = cpu_seconds(pid)
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    used = cpu_seconds(pid) - cpu
    print(
        f"cpu phase: {seconds:g}s, {len(answers)} rankings answers, gateway CPU {used:.2f}s, "
        f"{used / max(len(answers), 1) * 1000:.2f} ms CPU per answer"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout whose gateway runs")
    ap.add_argument("--apps", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--conc", type=int, default=8)
    ap.add_argument("--pollers", type=int, default=2)
    ap.add_argument("--poll-interval", type=float, default=0.0, help="seconds between one poller's requests")
    ap.add_argument("--cpu-phase", type=float, default=0.0, help="seconds of trickle chat + pollers, for CPU/answer")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-rankings-poll-"))
    procs = Procs()
    try:
        conf = (HERE / "upstream.conf.tmpl").read_text()
        conf = conf.replace("__DIR__", str(tmp)).replace("__JSON_PORT__", str(JSON_PORT))
        conf = conf.replace("__SSE_PORT__", str(JSON_PORT + 100))
        (tmp / "nginx.conf").write_text(conf)
        procs.start(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "nginx.log")], core=0)
        wait_up(f"http://127.0.0.1:{JSON_PORT}/health")
        redis_args = ["redis-server", "--port", str(REDIS), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        procs.start([*redis_args, "--dir", str(tmp)], core=0)
        (tmp / "policy.yaml").write_text(POLICY)
        code = args.code.resolve()
        env = {
            "PYTHONPATH": str(code),
            "GATEWAY_DATA_DIR": str(tmp / "data"),
            "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{REDIS}/0",
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_USAGE_WRITER_CPUS": "0",
        }
        python = os.environ.get("BENCH_PYTHON", str(REPO / ".venv/bin/python"))
        cmd = [python, "-m", "gateway", "serve", "--config", str(tmp / "policy.yaml"), "--port", str(GATEWAY)]
        # Run from the checkout itself: `python -m` puts the working directory first on sys.path.
        with open(tmp / "gateway.log", "ab") as log:
            gateway = subprocess.Popen(
                ["taskset", "-c", "1", *cmd], env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=code
            )
        procs.procs.append(gateway)
        url = f"http://127.0.0.1:{GATEWAY}"
        wait_up(url + "/health", timeout=60)
        t = time.perf_counter()
        asyncio.run(seed(url, args.apps))
        while recorded(url) < args.apps:
            time.sleep(0.5)
        print(f"# {args.apps} distinct apps recorded in {time.perf_counter() - t:.1f}s; code: {code}")
        t = time.perf_counter()
        first = httpx.get(url + "/v1/rankings", params={"limit": 100}, timeout=60).json()
        print(f"# one /v1/rankings (limit=100) after seeding: {(time.perf_counter() - t) * 1000:.1f} ms")
        top = first["apps"]["top"]
        print(f"#   apps shown: {len(top)}, first: {[(a['app'], a['requests']) for a in top[:3]]}")
        runs: dict[str, list[dict]] = {"alone": [], "polled": []}
        polls: list[float] = []
        for _ in range(args.rounds):
            for mode in runs:
                stop = threading.Event()
                answers: list[float] = []
                pollers = [
                    threading.Thread(target=poll_rankings, args=(url, stop, answers, args.poll_interval))
                    for _ in range(args.pollers if mode == "polled" else 0)
                ]
                for p in pollers:
                    p.start()
                cpu = cpu_seconds(gateway.pid)
                result = wrk(url, "bench", False, args.conc, args.duration)
                result["gateway_cpu_s"] = cpu_seconds(gateway.pid) - cpu
                stop.set()
                for p in pollers:
                    p.join()
                result["polls"] = len(answers)
                polls += answers
                runs[mode].append(result)
                print(
                    f"{mode:7} p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                    f"{result['rps']:8.1f} req/s  non2xx {result['non2xx']:.0f}  "
                    f"rankings answers {len(answers)}  gateway CPU {result['gateway_cpu_s']:.1f}s"
                )
        for mode, results in runs.items():
            if not results:
                continue
            p50 = statistics.median(r["p50_ms"] for r in results)
            p99 = statistics.median(r["p99_ms"] for r in results)
            rps = statistics.median(r["rps"] for r in results)
            print(f"median {mode:7} p50 {p50:.2f} ms  p99 {p99:.2f} ms  {rps:.1f} req/s")
        if polls:
            print(f"rankings answers: {len(polls)}, median {statistics.median(polls) * 1000:.1f} ms")
        if args.cpu_phase:
            cpu_phase(url, gateway.pid, args.cpu_phase, args.pollers)
        return 0
    finally:
        procs.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
