"""`make bench`: what the gateway costs, measured against the Python floor on the same machine.

Starts a near-zero-cost fake upstream (nginx, fixed JSON and SSE answers), the two floor
proxies (floor_asgi_aiohttp.py: a raw ASGI app on uvicorn with one pooled aiohttp client;
floor_aiohttp.py: aiohttp server and client), a bare Starlette + httpx proxy (bare_proxy.py),
and the gateway with a routing policy, usage recording and metrics as users run it
(`make run`'s configuration: SQLite ledger through the writer process, no Redis).
wrk drives each in turn (rounds interleaved so drift hits all alike). The upstream and wrk
share core 0; each proxy gets core 1 to itself (the gateway's usage writer process gets
core 0: see GATEWAY_USAGE_WRITER_CPUS below). Prints req/s, p50, p99 and errors per target,
the added p50 over direct, the gateway's req/s and added-p50 ratios against the floor, each
proxy process's CPU time per request, and the spread of req/s over the rounds (a difference
smaller than that spread is not a measured one). The machine is shared and noisy: compare
ratios within one run only.

Long streams (on by default, `--no-long-stream` skips them): 200 concurrent streams whose
events come 20 ms apart, as a model generates them (paced_upstream.py), relayed by the floor
and by the gateway: CPU per relayed event. With redis-server installed (`--no-redis` skips
it), the gateway with a Redis store (shared stats, rate limits, usage) is measured beside
the others, without a target.

    python bench/bench.py [--duration 5] [--conc 1 16 64] [--rounds 2] [--no-stream] [--scale]
                          [--recording-ab] [--litellm] [--no-long-stream] [--no-redis] [--port-offset N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
# Ports, shifted by --port-offset so two runs on one machine do not collide.
JSON_PORT, SSE_PORT, PACED_PORT = 18001, 18002, 18003
BARE_JSON, BARE_SSE, GATEWAY, GATEWAY_NOREC, LITELLM = 18110, 18111, 18300, 18310, 18200
FLOOR_JSON, FLOOR_SSE, FLOOR_PACED, FLOOR_AIO_JSON, FLOOR_AIO_SSE = 18120, 18121, 18122, 18130, 18131
GATEWAY_REDIS, REDIS = 18320, 18379
LONG_STREAM_EVENTS = 50  # content events per paced stream (plus role, finish and usage chunks)

POLICY = """
backends:
  bench-json:
    type: openai
    base_url: http://127.0.0.1:{json}/v1
    models:
      bench/json: {{upstream_id: bench-model, context_length: 32768, input_price: 0.1, output_price: 0.2}}
  bench-sse:
    type: openai
    base_url: http://127.0.0.1:{sse}/v1
    models:
      bench/sse: {{upstream_id: bench-model, context_length: 32768, input_price: 0.1, output_price: 0.2}}
  bench-paced:
    type: openai
    base_url: http://127.0.0.1:{paced}/v1
    models:
      bench/paced: {{upstream_id: bench-model, context_length: 32768, input_price: 0.1, output_price: 0.2}}
routes:
  bench: {{strategy: cost, models: [bench/json]}}
  bench-stream: {{strategy: cost, models: [bench/sse]}}
  bench-paced: {{strategy: cost, models: [bench/paced]}}
"""


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(
        self, cmd: list[str], env: dict | None = None, core: int | None = None, log: Path | None = None
    ) -> subprocess.Popen:
        if core is not None:
            cmd = ["taskset", "-c", str(core), *cmd]
        out = open(log, "ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def export(rev: str, into: Path) -> None:
    """Another commit's `gateway/` package, written under `into` (for `--base REV` comparisons)."""
    archive = subprocess.run(["git", "archive", rev, "gateway"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def wait_up(url: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def wrk(url: str, model: str, stream: bool, conc: int, duration: float, pid: int | None = None) -> dict[str, float]:
    """One measured wrk run (after a 1 s warm-up); with `pid`, also that process's CPU
    microseconds per request over the measured run (`cpu_us`)."""
    env = {**os.environ, "BENCH_MODEL": model, "BENCH_STREAM": "1" if stream else "0"}
    base = [
        "taskset",
        "-c",
        "0",
        "wrk",
        "-t1",
        f"-c{conc}",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "post.lua"),
        url + "/v1/chat/completions",
    ]
    subprocess.run([*base[:5], "-d1s", *base[5:]], env=env, capture_output=True)  # warm-up
    cpu = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run([*base[:5], f"-d{duration:g}s", *base[5:]], env=env, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pid) - cpu if pid else 0.0
    for line in out.splitlines():
        if line.startswith("RESULT"):
            result = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
            if pid and result["requests"]:
                result["cpu_us"] = cpu / result["requests"] * 1e6
            return result
    return {"rps": 0, "p50_ms": 0, "p99_ms": 0, "requests": 0, "non2xx": 0, "sockerr": -1}


def table(title: str, rows: dict, targets: list[str], concs: list[int], reference: str = "floor") -> str:
    """Medians per target; `vs floor`: req/s ratio and added-p50 ratio against `reference`."""
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    lines = [
        f"\n## {title}",
        f"{'conc':>4} {'target':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'+p50 ms':>8} "
        f"{'req/s vs ' + reference:>16} {'+p50 vs ' + reference:>15} {'cpu us/req':>10} {'req/s min-max':>14}",
    ]
    for c in concs:
        direct, ref = rows.get((c, "direct")), rows.get((c, reference))
        ref_added = med(ref, "p50_ms") - med(direct, "p50_ms") if ref and direct else float("nan")
        for t in targets:
            xs = rows.get((c, t))
            if not xs:
                continue
            added = med(xs, "p50_ms") - med(direct, "p50_ms") if direct else float("nan")
            ratio = med(xs, "rps") / med(ref, "rps") if ref and med(ref, "rps") else float("nan")
            added_ratio = added / ref_added if ref_added and ref_added > 0 else float("nan")
            errors = sum(x["non2xx"] + max(x["sockerr"], 0) for x in xs)
            cpu = f"{med(xs, 'cpu_us'):>10.0f}" if all("cpu_us" in x for x in xs) else f"{'':>10}"
            spread = f"{min(x['rps'] for x in xs):.0f}-{max(x['rps'] for x in xs):.0f}"
            lines.append(
                f"{c:>4} {t:<12} {med(xs, 'rps'):>8.0f} {med(xs, 'p50_ms'):>8.2f} {med(xs, 'p99_ms'):>8.2f} "
                f"{errors:>7.0f} {added:>8.2f} {ratio:>16.3f} {added_ratio:>15.2f} {cpu} {spread:>14}"
            )
    return "\n".join(lines)


def long_stream_table(rows: dict, targets: list[str], conc: int, events: int) -> str:
    """CPU per relayed event: the proxy process's CPU per stream over the events it carried
    (content events plus role, finish, usage and [DONE])."""
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    per_stream = events + 4
    lines = [
        f"\n## long streams: {conc} concurrent, {events} content events 20 ms apart",
        f"{'target':<12} {'streams/s':>9} {'events/s':>9} {'p50 ms':>8} {'errors':>7} {'cpu us/event':>12} {'vs floor':>9}",
    ]
    floor = rows.get("floor")
    floor_cpu = med(floor, "cpu_us") / per_stream if floor and all("cpu_us" in x for x in floor) else None
    for t in targets:
        xs = rows.get(t)
        if not xs or not all("cpu_us" in x for x in xs):
            continue
        cpu = med(xs, "cpu_us") / per_stream
        ratio = cpu / floor_cpu if floor_cpu else float("nan")
        errors = sum(x["non2xx"] + max(x["sockerr"], 0) for x in xs)
        lines.append(
            f"{t:<12} {med(xs, 'rps'):>9.0f} {med(xs, 'rps') * per_stream:>9.0f} {med(xs, 'p50_ms'):>8.0f} "
            f"{errors:>7.0f} {cpu:>12.1f} {ratio:>9.2f}"
        )
    return "\n".join(lines)


def recording_ab(rows: dict, concs: list[int]) -> str:
    """Recording on vs off, paired by round (each round runs the two back to back, so drift
    between rounds cancels): the median of the per-round ratios and differences, with their
    range. A range that spans 1.0 (or 0) is a difference this machine cannot measure."""
    lines = []
    for c in concs:
        pairs = list(zip(rows.get((c, "gateway"), []), rows.get((c, "gw-norec"), [])))
        if not pairs:
            continue
        rps = sorted(g["rps"] / n["rps"] for g, n in pairs if n["rps"])
        p50 = sorted(g["p50_ms"] - n["p50_ms"] for g, n in pairs)
        cpu = sorted(g.get("cpu_us", 0) - n.get("cpu_us", 0) for g, n in pairs)
        lines.append(
            f"  c={c}: req/s ratio {statistics.median(rps):.3f} (rounds {rps[0]:.3f}-{rps[-1]:.3f}), "
            f"p50 {statistics.median(p50):+.2f} ms ({p50[0]:+.2f} to {p50[-1]:+.2f}), "
            f"proxy CPU {statistics.median(cpu):+.0f} µs/req ({cpu[0]:+.0f} to {cpu[-1]:+.0f}), {len(pairs)} rounds"
        )
    return "recording on/off, paired by round:\n" + "\n".join(lines) if lines else ""


def writer_report(pid: int, url: str) -> str:
    """What the gateway's usage writer process spent per recorded call (its CPU is moved off
    the proxy's core, not made free), and how many calls the ledger holds."""
    time.sleep(2.5)  # the recorder flushes every second: let the last batch land
    writers = children(pid)
    cpu = sum(cpu_seconds(child) for child in writers)
    rankings = httpx.get(f"{url}/v1/rankings", params={"window": "day"}, timeout=30).json()
    recorded = sum(m["requests"] for m in rankings["models"])
    per_call = f"{cpu / recorded * 1e6:.1f} µs CPU per call" if recorded else "no calls recorded"
    return (
        f"\n## usage writer process\n{len(writers)} process(es), {cpu:.2f} s CPU for {recorded} recorded calls "
        f"(warm-ups included): {per_call}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--conc", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-stream", action="store_true")
    ap.add_argument("--scale", action="store_true", help="also compare 1 vs 2 gateway workers, unpinned")
    ap.add_argument("--recording-ab", action="store_true", help="also run a gateway with usage recording off")
    ap.add_argument("--litellm", action="store_true", help="also run the LiteLLM proxy if installed (LITELLM_BIN)")
    ap.add_argument(
        "--long-stream", action=argparse.BooleanOptionalAction, default=True, help="relay paced streams (CPU per event)"
    )
    ap.add_argument("--long-stream-conc", type=int, default=200)
    ap.add_argument(
        "--redis",
        action=argparse.BooleanOptionalAction,
        default=bool(shutil.which("redis-server")),
        help="also a gateway with a Redis store (default: when redis-server is installed)",
    )
    ap.add_argument("--port-offset", type=int, default=0, help="shift every port (two runs on one machine)")
    ap.add_argument(
        "--gateway-env", nargs="*", default=[], help="extra KEY=VALUE for the gateway (e.g. to compare settings)"
    )
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset", *(["redis-server"] if args.redis else [])):
        if not shutil.which(tool):
            raise SystemExit(f"needs `{tool}`: run `make system-deps`")
    o = args.port_offset
    json_port, sse_port, paced_port = JSON_PORT + o, SSE_PORT + o, PACED_PORT + o

    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    procs = Procs()
    try:
        conf = (HERE / "upstream.conf.tmpl").read_text()
        conf = (
            conf.replace("__DIR__", str(tmp))
            .replace("__JSON_PORT__", str(json_port))
            .replace("__SSE_PORT__", str(sse_port))
        )
        (tmp / "nginx.conf").write_text(conf)
        procs.start(
            ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")], core=0
        )
        wait_up(f"http://127.0.0.1:{json_port}/health")
        if args.long_stream:
            procs.start(
                [sys.executable, str(HERE / "paced_upstream.py")],
                env={"PORT": str(paced_port), "EVENTS": str(LONG_STREAM_EVENTS), "SPACING_MS": "20"},
                core=0,
            )
            wait_up(f"http://127.0.0.1:{paced_port}/health")

        def uvicorn(app: str, port: int, upstream: int) -> subprocess.Popen:
            cmd = [str(BIN / "uvicorn"), app, "--app-dir", str(HERE), "--loop", "uvloop", "--http", "httptools"]
            cmd += ["--no-access-log", "--log-level", "warning", "--port", str(port + o)]
            return procs.start(cmd, env={"UPSTREAM": f"http://127.0.0.1:{upstream}"}, core=1)

        def floor_aio(port: int, upstream: int) -> subprocess.Popen:
            env = {"UPSTREAM": f"http://127.0.0.1:{upstream}", "PORT": str(port + o)}
            return procs.start([sys.executable, str(HERE / "floor_aiohttp.py")], env=env, core=1)

        # (process, port) per target and mode; each proxy process has one upstream.
        proxies = {
            ("bare", False): (uvicorn("bare_proxy:app", BARE_JSON, json_port), BARE_JSON),
            ("bare", True): (uvicorn("bare_proxy:app", BARE_SSE, sse_port), BARE_SSE),
            ("floor", False): (uvicorn("floor_asgi_aiohttp:app", FLOOR_JSON, json_port), FLOOR_JSON),
            ("floor", True): (uvicorn("floor_asgi_aiohttp:app", FLOOR_SSE, sse_port), FLOOR_SSE),
            ("floor-aio", False): (floor_aio(FLOOR_AIO_JSON, json_port), FLOOR_AIO_JSON),
            ("floor-aio", True): (floor_aio(FLOOR_AIO_SSE, sse_port), FLOOR_AIO_SSE),
        }
        if args.long_stream:
            proxies[("floor", "paced")] = (uvicorn("floor_asgi_aiohttp:app", FLOOR_PACED, paced_port), FLOOR_PACED)
        (tmp / "policy.yaml").write_text(POLICY.format(json=json_port, sse=sse_port, paced=paced_port))
        # The gateway's usage writer process runs on core 0 (beside wrk and nginx, which leave
        # most of it idle), as in a deployment it runs on whichever core is free: core 1 is the
        # proxy's. Its CPU time is reported below, so the cost is moved, not hidden.
        gw_env = {
            # The gateway of this tree: the `gateway` script imports the package the venv has
            # installed (an editable install of another checkout, when the venv is shared).
            "PYTHONPATH": str(REPO),
            "GATEWAY_DATA_DIR": str(tmp / "data"),
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_USAGE_WRITER_CPUS": "0",
            **dict(kv.split("=", 1) for kv in args.gateway_env),
        }
        gw_cmd = [str(BIN / "gateway"), "serve", "--config", str(tmp / "policy.yaml")]
        gateway = procs.start([*gw_cmd, "--port", str(GATEWAY + o)], env=gw_env, core=1, log=tmp / "gateway.log")
        ports = [port + o for _, port in proxies.values()] + [GATEWAY + o]
        gateways = {"gateway": (gateway, GATEWAY + o)}
        if args.recording_ab:
            # The same gateway with usage recording off: the difference is what recording costs.
            norec_env = {**gw_env, "GATEWAY_DATA_DIR": str(tmp / "data-norec"), "GATEWAY_USAGE_RECORDING": "false"}
            norec = procs.start(
                [*gw_cmd, "--port", str(GATEWAY_NOREC + o)], env=norec_env, core=1, log=tmp / "gateway-norec.log"
            )
            gateways["gw-norec"] = (norec, GATEWAY_NOREC + o)
            ports.append(GATEWAY_NOREC + o)
        if args.redis:
            # Shared stats, rate-limit counters and the usage ledger in Redis, as replicas run.
            procs.start(
                ["redis-server", "--port", str(REDIS + o), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                core=0,
            )
            redis_env = {**gw_env, "GATEWAY_DATA_DIR": str(tmp / "data-redis")}
            redis_env["GATEWAY_REDIS_URL"] = f"redis://127.0.0.1:{REDIS + o}/0"
            gw_redis = procs.start(
                [*gw_cmd, "--port", str(GATEWAY_REDIS + o)], env=redis_env, core=1, log=tmp / "gateway-redis.log"
            )
            gateways["gw-redis"] = (gw_redis, GATEWAY_REDIS + o)
            ports.append(GATEWAY_REDIS + o)
        litellm = os.environ.get("LITELLM_BIN", "/tmp/litellm-venv/bin/litellm")
        use_litellm = args.litellm and Path(litellm).exists()
        if use_litellm:
            procs.start(
                [
                    litellm,
                    "--config",
                    str(HERE / "litellm_config.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(LITELLM + o),
                    "--num_workers",
                    "1",
                ],
                env={"LITELLM_MASTER_KEY": "sk-bench", "LITELLM_LOG": "ERROR"},
                core=1,
                log=tmp / "litellm.log",
            )
            ports.append(LITELLM + o)
        for port in ports:
            wait_up(f"http://127.0.0.1:{port}/health", timeout=120)

        modes = [(False, "non-streaming")] + ([] if args.no_stream else [(True, "streaming (SSE)")])
        report = [
            f"# make bench: {args.duration:g}s per run, medians of {args.rounds} rounds, one process per proxy pinned to core 1"
        ]
        for stream, title in modes:
            targets = {"direct": (f"http://127.0.0.1:{sse_port if stream else json_port}", "bench-model", None)}
            for name in ("floor", "floor-aio", "bare"):
                proc, port = proxies[(name, stream)]
                targets[name] = (f"http://127.0.0.1:{port + o}", "bench-model", proc.pid)
            for name, (proc, port) in gateways.items():
                targets[name] = (f"http://127.0.0.1:{port}", "bench-stream" if stream else "bench", proc.pid)
            if use_litellm:
                targets["litellm"] = (
                    f"http://127.0.0.1:{LITELLM + o}",
                    "bench-model-stream" if stream else "bench-model",
                    None,
                )
            rows: dict = {}
            for c in args.conc:
                for _ in range(args.rounds):
                    for name, (url, model, pid) in targets.items():
                        rows.setdefault((c, name), []).append(wrk(url, model, stream, c, args.duration, pid))
            section = table(title, rows, list(targets), args.conc)
            if args.recording_ab:
                section += "\n" + recording_ab(rows, args.conc)
            print(section, flush=True)
            report.append(section)

        if args.long_stream:
            floor_paced, port = proxies[("floor", "paced")]
            targets = {"floor": (f"http://127.0.0.1:{port + o}", "bench-model", floor_paced.pid)}
            for name, (proc, gw_port) in gateways.items():
                targets[name] = (f"http://127.0.0.1:{gw_port}", "bench-paced", proc.pid)
            rows = {}
            for _ in range(args.rounds):
                for name, (url, model, pid) in targets.items():
                    rows.setdefault(name, []).append(
                        wrk(url, model, True, args.long_stream_conc, max(args.duration, 5), pid)
                    )
            section = long_stream_table(rows, list(targets), args.long_stream_conc, LONG_STREAM_EVENTS)
            print(section, flush=True)
            report.append(section)

        section = writer_report(gateway.pid, f"http://127.0.0.1:{GATEWAY + o}")
        print(section, flush=True)
        report.append(section)

        if args.scale:
            procs.stop(gateway)
            rows = {}
            for workers in (1, 2):
                port = GATEWAY + o + workers
                proc = procs.start(
                    [*gw_cmd, "--port", str(port), "--workers", str(workers)],
                    env=gw_env,
                    log=tmp / f"gateway-{workers}.log",
                )
                wait_up(f"http://127.0.0.1:{port}/health")
                time.sleep(1)
                for _ in range(args.rounds):
                    rows.setdefault((64, f"{workers} worker"), []).append(
                        wrk(f"http://127.0.0.1:{port}", "bench", False, 64, args.duration)
                    )
                procs.stop(proc)
            section = table(
                "gateway workers, unpinned (wrk and nginx share the 2 cores), non-streaming",
                rows,
                ["1 worker", "2 worker"],
                [64],
                reference="1 worker",
            )
            print(section, flush=True)
            report.append(section)
        (REPO / "bench" / "last-run.txt").write_text("\n".join(report) + "\n")
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
