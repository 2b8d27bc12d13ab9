"""`make bench-profile`: where the gateway's CPU goes under load, by py-spy.

Starts bench.py's nginx upstream and one gateway (this tree's, pinned to core 1), drives it
with wrk (core 0) and samples it with `py-spy record -r 250 -f raw` meanwhile. Prints the
share of the gateway's samples per function two ways: each sample charged to the deepest
frame in `gateway/` (with what it was calling: the gateway's own costs, library calls
included), and to the innermost frame (self time). Idle worker threads are left out.

    python bench/profile_gateway.py [--conc 16] [--stream] [--agent] [--api chat|messages|responses]
        [--native] [--duration 10] [--out FILE.raw] [--port-offset N]

`--agent`: issue 9's agent turn (bench/agent_request.py) as the request instead of a
one-line chat. `--api messages|responses` (implies `--agent`): that turn sent to that
ingress, with agent_bench.py's upstream (answers in every wire format) and backends:
translated to chat, or with `--native` passed through to a backend serving the API. py-spy is a development tool, not a dependency: `pip install py-spy`
somewhere and point `--py-spy` (or $PY_SPY) at it.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import agent_bench  # noqa: E402  (bench/agent_bench.py)
import agent_request  # noqa: E402  (bench/agent_request.py)

from bench import BIN, GATEWAY, JSON_PORT, POLICY, REPO, SSE_PORT, Procs, cpu_seconds, wait_up  # noqa: E402

OFFSET = 700  # ports apart from bench.py's defaults


def summarise(raw: Path, top: int) -> str:
    """py-spy's raw (collapsed) stacks as two tables of shares."""
    deepest: collections.Counter[str] = collections.Counter()
    innermost: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "Thread._bootstrap" in stack:  # idle worker threads (the executor, anyio)
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";")]
        names = [f.partition(" (")[0] for f in frames]
        innermost[f"{names[-1]} ({_where(frames[-1])})"] += n
        ours = [i for i, f in enumerate(frames) if _ours(f)]
        if not ours:
            deepest["(no gateway frame) " + names[-1]] += n
            continue
        i = ours[-1]
        calling = names[i + 1] if i + 1 < len(frames) else "self"
        deepest[f"{names[i]} ({_where(frames[i])}) -> {calling}"] += n
    lines = [f"{total} samples of the gateway's main thread", "", "deepest gateway frame -> what it was calling:"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in deepest.most_common(top)]
    lines += ["", "innermost frame (self time):"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in innermost.most_common(top)]
    return "\n".join(lines)


def _ours(frame: str) -> bool:
    location = frame.partition(" (")[2]
    return location.startswith("gateway/") or "/gateway/" in location


def _where(frame: str) -> str:
    location = frame.partition(" (")[2].rstrip(")").rpartition(":")[0]
    if "/gateway/" in location:
        return "gateway/" + location.split("/gateway/", 1)[1]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in location:
            return location.split(marker, 1)[1]
    return location


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--agent", action="store_true", help="the agent turn of bench/agent_request.py as the request")
    ap.add_argument("--api", choices=("chat", "messages", "responses"), default="chat")
    ap.add_argument("--native", action="store_true", help="with --api: a backend serving it natively (pass-through)")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, help="keep py-spy's raw output here")
    ap.add_argument("--port-offset", type=int, default=0, help="shift every port (two runs on one machine)")
    ap.add_argument("--py-spy", default=os.environ.get("PY_SPY") or shutil.which("py-spy"))
    args = ap.parse_args()
    if not args.py_spy or not Path(args.py_spy).exists():
        raise SystemExit("needs py-spy: `pip install py-spy` (anywhere) and pass --py-spy PATH or set $PY_SPY")
    tmp = Path(tempfile.mkdtemp(prefix="gw-profile-"))
    procs = Procs()
    try:
        offset = OFFSET + args.port_offset
        json_port, sse_port, port = JSON_PORT + offset, SSE_PORT + offset, GATEWAY + offset
        ingress = args.api != "chat" or args.native
        if ingress:  # every wire format's answers, and agent_bench's backends (translated, native)
            tmp.chmod(0o755)  # nginx's worker reads the answers
            conf = agent_bench.nginx_conf(tmp, json_port, sse_port)
        else:
            conf = (HERE / "upstream.conf.tmpl").read_text().replace("__DIR__", str(tmp))
            conf = conf.replace("__JSON_PORT__", str(json_port)).replace("__SSE_PORT__", str(sse_port))
        (tmp / "nginx.conf").write_text(conf)
        procs.start(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "nginx.log")], core=0)
        wait_up(f"http://127.0.0.1:{json_port}/health")
        if ingress:
            policy = agent_bench.POLICY.format(json=json_port, sse=sse_port)
        else:
            policy = POLICY.format(json=json_port, sse=sse_port, paced=1)
        (tmp / "policy.yaml").write_text(policy)
        env = {
            "PYTHONPATH": str(REPO),
            "GATEWAY_DATA_DIR": str(tmp / "data"),
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_USAGE_WRITER_CPUS": "0",
        }
        cmd = [str(BIN / "gateway"), "serve", "--config", str(tmp / "policy.yaml"), "--port", str(port)]
        gateway = procs.start(cmd, env=env, core=1, log=tmp / "gateway.log")
        wait_up(f"http://127.0.0.1:{port}/health", timeout=120)
        model = "bench-stream" if args.stream else "bench"
        path = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}[args.api]
        if ingress:
            model = ("agent/native" if args.native else "agent/chat") + ("-sse" if args.stream else "")
            body = getattr(agent_request, args.api)(model, args.stream)
        elif args.agent:
            body = agent_request.chat(model, args.stream)
        else:
            body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
            if args.stream:
                body.update(stream=True, stream_options={"include_usage": True})
        (tmp / "body.json").write_bytes(orjson.dumps(body))
        wrk_env = {**os.environ, "BENCH_BODY": str(tmp / "body.json"), "BENCH_PATH": path}
        wrk = ["taskset", "-c", "0", "wrk", "-t1", f"-c{args.conc}", "--timeout", "10s", "-s", str(HERE / "agent.lua")]
        url = f"http://127.0.0.1:{port}"
        subprocess.run([*wrk, "-d2s", url], env=wrk_env, capture_output=True)  # warm-up
        raw = args.out or tmp / "profile.raw"
        spy = subprocess.Popen(
            [args.py_spy, "record", "-r", "250", "-f", "raw", "-o", str(raw), "-d", str(args.duration)]
            + ["-p", str(gateway.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        cpu = cpu_seconds(gateway.pid)
        out = subprocess.run([*wrk, f"-d{args.duration - 2}s", url], env=wrk_env, capture_output=True, text=True)
        cpu = cpu_seconds(gateway.pid) - cpu
        spy.wait()
        result = next((line for line in out.stdout.splitlines() if line.startswith("RESULT")), "RESULT (none)")
        requests = dict(kv.split("=") for kv in result.split()[1:]).get("requests")
        per_request = f", {cpu / float(requests) * 1e6:.0f} µs CPU per request (py-spy running)" if requests else ""
        print(
            f"# c={args.conc} {'SSE' if args.stream else 'JSON'}{' agent turn' if args.agent or ingress else ''}"
            f"{f' {args.api}' + (' native' if args.native else ' translated') if ingress else ''}: {result}{per_request}"
        )
        print(summarise(raw, args.top))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
