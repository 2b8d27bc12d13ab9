"""What key checks add to a request: authentication and limit admission + settlement,
timed in-process (no HTTP), as gateway CPU per request.

    .venv/bin/python bench/key_checks.py

Each round times the same request path twice: once on an open gateway (no keys: the
baseline) and once with a virtual key that has rpm, tpm and a budget and belongs to a team
with its own budget; the figure is the difference, per request, in this thread's CPU time
(other load on the machine does not count). Median over ROUNDS paired rounds. Then, when
redis-server is installed, the same with the counters in a private Redis: the client CPU
this process spends per request (one admission script call and one settlement call),
measured with process_time so the client's event-loop work counts, not Redis's own: once
through the limiter's own pipelined connection (gateway/tenants/script_client.py, what the
gateway uses) and once through redis-py (what it used before), for comparison. `make bench`
runs this after the HTTP benchmark.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starlette.requests import Request  # noqa: E402

from gateway.api.auth import Authenticator  # noqa: E402
from gateway.config.loader import parse_config  # noqa: E402
from gateway.config.snapshot import ConfigSnapshot  # noqa: E402
from gateway.protocol.chat import parse_chat_request  # noqa: E402
from gateway.proxy.outcome import CallOutcome  # noqa: E402
from gateway.proxy.usage import Usage  # noqa: E402
from gateway.ratelimit import RateLimiter  # noqa: E402
from gateway.routing.pipeline import decide  # noqa: E402
from gateway.tenants.admin import TenantAdmin  # noqa: E402
from gateway.tenants.directory import KeyDirectory  # noqa: E402
from gateway.tenants.keys import Limits  # noqa: E402
from gateway.tenants.store import SqliteTenantStore  # noqa: E402

ROUNDS = 7
N = 3000
POLICY = """
backends:
  up: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk, models: {qwen/qwen3-32b: {input_price: 0.2, output_price: 0.6}}}
routes:
  auto: {models: [qwen/qwen3-32b]}
"""
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 64}


def request(key: str | None) -> Request:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/v1/chat/completions",
            "headers": headers,
            "client": ("10.0.0.1", 5),
        }
    )


async def make_directory(tmp: Path) -> tuple[Authenticator, str]:
    store = SqliteTenantStore(tmp / "keys.sqlite3")
    admin = TenantAdmin(store)
    admin.create_team("platform", actor="bench", limits=Limits(budget_usd=1e6))
    for i in range(999):  # a store of a thousand keys: the lookup is a dict access whatever the size
        admin.create_key(f"other{i}", actor="bench")
    plain = admin.create_key(
        "app", actor="bench", limits=Limits(rpm=10**9, tpm=10**12, budget_usd=1e6), team="platform"
    ).plain
    directory = KeyDirectory(store)
    await directory.refresh()
    return Authenticator({}, directory=directory), plain


async def per_request_cpu(auth: Authenticator, limiter: RateLimiter, key: str | None, snapshot, timer) -> float:
    req = request(key)
    chat = parse_chat_request(orjson.dumps(BODY))
    decision = decide(chat, {}, snapshot, None)
    outcomes = [CallOutcome("r", "auto", False) for _ in range(N)]
    for o in outcomes:
        o.usage, o.cost_usd = Usage(10, 20), 0.00001
    t0 = timer()
    for outcome in outcomes:
        principal = auth.authenticate(req)
        ticket = await limiter.admit(principal, chat, decision, snapshot)
        limiter.track(outcome, ticket)
        limiter.call_finished(outcome)
    await limiter.drain()
    return (timer() - t0) / N * 1e6


async def paired(auth_open, auth_keys, plain, make_limiter, snapshot, timer) -> list[float]:
    deltas = []
    for _ in range(ROUNDS):
        base = await per_request_cpu(auth_open, make_limiter(), None, snapshot, timer)
        keyed = await per_request_cpu(auth_keys, make_limiter(), plain, snapshot, timer)
        deltas.append(keyed - base)
    return deltas


def start_redis() -> tuple[subprocess.Popen, str, Path] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    sys.path.insert(0, str(ROOT))
    from tests.support.ports import free_port

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0", workdir


async def main() -> None:
    config, _ = parse_config(POLICY)
    snapshot = ConfigSnapshot.build(config)
    with tempfile.TemporaryDirectory() as tmp:
        auth_keys, plain = await make_directory(Path(tmp))
        auth_open = Authenticator({})
        local = await paired(auth_open, auth_keys, plain, RateLimiter, snapshot, time.thread_time)
        print(f"key checks, in process (no Redis): {statistics.median(local):.1f} us CPU per request")
        print(f"  (median of {ROUNDS} paired rounds of {N} requests; rounds: {', '.join(f'{d:.1f}' for d in local)})")

        redis = start_redis()
        if redis is None:
            print("key checks with Redis: skipped (no redis-server)")
            return
        proc, url, workdir = redis
        try:
            from redis.asyncio import Redis

            client = Redis.from_url(url)
            for label, lean in (("key checks with Redis", True), ("  the same through redis-py", False)):
                limiters: list[RateLimiter] = []

                def make(lean: bool = lean, made: list[RateLimiter] = limiters) -> RateLimiter:
                    made.append(RateLimiter(redis=client, lean_redis=lean))
                    return made[-1]

                shared = await paired(auth_open, auth_keys, plain, make, snapshot, time.process_time)
                for limiter in limiters:
                    await limiter.aclose()
                print(f"{label}: {statistics.median(shared):.1f} us client CPU per request")
                print(f"  (median of {ROUNDS} paired rounds; rounds: {', '.join(f'{d:.1f}' for d in shared)})")
            await client.aclose()
        finally:
            proc.terminate()
            proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("GATEWAY_LOG_LEVEL", "warning")
    asyncio.run(main())
