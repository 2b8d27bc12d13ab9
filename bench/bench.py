"""`make bench`: what the gateway costs, measured against a bare proxy on the same machine.

Starts a near-zero-cost fake upstream (nginx, fixed JSON and SSE answers), a bare
pass-through proxy (bare_proxy.py: Starlette + httpx over the aiohttp transport, nothing
else), and the gateway with a routing policy, usage recording and metrics as users run it.
wrk drives each in turn (rounds interleaved so drift hits all alike). The upstream and wrk
share core 0; each proxy gets core 1 to itself (the gateway's usage writer process gets
core 0: see GATEWAY_USAGE_WRITER_CPUS below). Prints req/s, p50, p99 and errors per target,
the gateway's added p50 over direct, its req/s ratio against the bare proxy, the proxy
process's CPU time per request, and the spread of req/s over the rounds (a difference
smaller than that spread is not a measured one).

    python bench/bench.py [--duration 5] [--conc 1 16 64] [--rounds 2] [--no-stream] [--scale]
                          [--recording-ab] [--litellm]
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
JSON_PORT, SSE_PORT = 18001, 18002
BARE_JSON, BARE_SSE, GATEWAY, GATEWAY_NOREC, LITELLM = 18110, 18111, 18300, 18310, 18200

POLICY = f"""
backends:
  bench-json:
    type: openai
    base_url: http://127.0.0.1:{JSON_PORT}/v1
    models:
      bench/json: {{upstream_id: bench-model, context_length: 32768, input_price: 0.1, output_price: 0.2}}
  bench-sse:
    type: openai
    base_url: http://127.0.0.1:{SSE_PORT}/v1
    models:
      bench/sse: {{upstream_id: bench-model, context_length: 32768, input_price: 0.1, output_price: 0.2}}
routes:
  bench: {{strategy: cost, models: [bench/json]}}
  bench-stream: {{strategy: cost, models: [bench/sse]}}
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


def table(title: str, rows: dict, targets: list[str], concs: list[int]) -> str:
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    lines = [
        f"\n## {title}",
        f"{'conc':>4} {'target':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'+p50 ms':>8} {'vs bare':>8} {'cpu us/req':>10} {'req/s min-max':>14}",
    ]
    for c in concs:
        direct, bare = rows.get((c, "direct")), rows.get((c, "bare"))
        for t in targets:
            xs = rows.get((c, t))
            if not xs:
                continue
            added = med(xs, "p50_ms") - med(direct, "p50_ms") if direct else float("nan")
            ratio = med(xs, "rps") / med(bare, "rps") if bare and med(bare, "rps") else float("nan")
            errors = sum(x["non2xx"] + max(x["sockerr"], 0) for x in xs)
            cpu = f"{med(xs, 'cpu_us'):>10.0f}" if all("cpu_us" in x for x in xs) else f"{'':>10}"
            spread = f"{min(x['rps'] for x in xs):.0f}-{max(x['rps'] for x in xs):.0f}"
            lines.append(
                f"{c:>4} {t:<10} {med(xs, 'rps'):>8.0f} {med(xs, 'p50_ms'):>8.2f} {med(xs, 'p99_ms'):>8.2f} {errors:>7.0f} {added:>8.2f} {ratio:>8.3f} {cpu} {spread:>14}"
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
        "--gateway-env", nargs="*", default=[], help="extra KEY=VALUE for the gateway (e.g. to compare settings)"
    )
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"needs `{tool}`: run `make system-deps`")

    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    procs = Procs()
    try:
        conf = (HERE / "upstream.conf.tmpl").read_text()
        conf = (
            conf.replace("__DIR__", str(tmp))
            .replace("__JSON_PORT__", str(JSON_PORT))
            .replace("__SSE_PORT__", str(SSE_PORT))
        )
        (tmp / "nginx.conf").write_text(conf)
        procs.start(
            ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")], core=0
        )
        wait_up(f"http://127.0.0.1:{JSON_PORT}/health")
        uvicorn = [
            str(BIN / "uvicorn"),
            "bare_proxy:app",
            "--app-dir",
            str(HERE),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        bare_json = procs.start(
            [*uvicorn, "--port", str(BARE_JSON)], env={"UPSTREAM": f"http://127.0.0.1:{JSON_PORT}"}, core=1
        )
        bare_sse = procs.start(
            [*uvicorn, "--port", str(BARE_SSE)], env={"UPSTREAM": f"http://127.0.0.1:{SSE_PORT}"}, core=1
        )
        (tmp / "policy.yaml").write_text(POLICY)
        # The gateway's usage writer process runs on core 0 (beside wrk and nginx, which leave
        # most of it idle), as in a deployment it runs on whichever core is free: core 1 is the
        # proxy's. Its CPU time is reported below, so the cost is moved, not hidden.
        gw_env = {
            "GATEWAY_DATA_DIR": str(tmp / "data"),
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_USAGE_WRITER_CPUS": "0",
            **dict(kv.split("=", 1) for kv in args.gateway_env),
        }
        gw_cmd = [str(BIN / "gateway"), "serve", "--config", str(tmp / "policy.yaml")]
        gateway = procs.start([*gw_cmd, "--port", str(GATEWAY)], env=gw_env, core=1, log=tmp / "gateway.log")
        ports = [BARE_JSON, BARE_SSE, GATEWAY]
        if args.recording_ab:
            # The same gateway with usage recording off: the difference is what recording costs.
            norec_env = {**gw_env, "GATEWAY_DATA_DIR": str(tmp / "data-norec"), "GATEWAY_USAGE_RECORDING": "false"}
            norec = procs.start(
                [*gw_cmd, "--port", str(GATEWAY_NOREC)], env=norec_env, core=1, log=tmp / "gateway-norec.log"
            )
            ports.append(GATEWAY_NOREC)
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
                    str(LITELLM),
                    "--num_workers",
                    "1",
                ],
                env={"LITELLM_MASTER_KEY": "sk-bench", "LITELLM_LOG": "ERROR"},
                core=1,
                log=tmp / "litellm.log",
            )
            ports.append(LITELLM)
        for port in ports:
            wait_up(f"http://127.0.0.1:{port}/health", timeout=120)

        modes = [(False, "non-streaming")] + ([] if args.no_stream else [(True, "streaming (SSE)")])
        report = [
            f"# make bench: {args.duration:g}s per run, medians of {args.rounds} rounds, one process per proxy pinned to core 1"
        ]
        for stream, title in modes:
            targets = {
                "direct": (f"http://127.0.0.1:{SSE_PORT if stream else JSON_PORT}", "bench-model", None),
                "bare": (
                    f"http://127.0.0.1:{BARE_SSE if stream else BARE_JSON}",
                    "bench-model",
                    (bare_sse if stream else bare_json).pid,
                ),
                "gateway": (f"http://127.0.0.1:{GATEWAY}", "bench-stream" if stream else "bench", gateway.pid),
            }
            if args.recording_ab:
                targets["gw-norec"] = (
                    f"http://127.0.0.1:{GATEWAY_NOREC}",
                    "bench-stream" if stream else "bench",
                    norec.pid,
                )
            if use_litellm:
                targets["litellm"] = (
                    f"http://127.0.0.1:{LITELLM}",
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

        section = writer_report(gateway.pid, f"http://127.0.0.1:{GATEWAY}")
        print(section, flush=True)
        report.append(section)

        if args.scale:
            procs.stop(gateway)
            rows = {}
            for workers in (1, 2):
                port = GATEWAY + workers
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
