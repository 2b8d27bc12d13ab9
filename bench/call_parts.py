"""Instructions per call of each part of the gateway's work on `make bench`'s streamed call,
counted by valgrind's callgrind: the same on every run, however loaded the machine is.

`make bench` measures whole requests, where this shared machine's noise (several per cent
from run to run) hides a change of one part; py-spy's samples say roughly where the time
goes but not by how much a change moved it. This counts, in one process and with no
network, what each part costs on the bench's request (a one-line chat, streamed, usage
asked) and its upstream's 7-event stream:

    parse        the body read as a chat request (`parse_chat_request`)
    decide       the routing decision on it (`decide`, on a fresh request each time: its
                 prompt facts are cached on it), the parse's count taken off
    classify     the task classifier and the prompt facts it reads (part of decide), the
                 parse's count taken off
    accountant   the stream's look: a fresh `SseAccountant` fed the whole stream, then flushed
    observers    one successful streamed call reported to the metrics and the routing stats

    python bench/call_parts.py [--calls 2000] [--base REV] [--only PART ...]
    python bench/call_parts.py --whole [--calls 1500]

`--whole`: the whole process instead, the gateway's (as `make run` runs it) beside the floor
proxy's (bench/floor_asgi_aiohttp.py), each in front of bench.py's nginx upstream and under
callgrind with counting switched on (`callgrind_control`) only around `--calls` sequential
calls on one keep-alive connection, JSON and SSE. Not the kernel's work (the socket calls),
which both pay alike; timers and background tasks that fall in the window count too, so
repeated runs differ by about 1%.

Each part runs once with `--calls` calls and once with none (one warm-up either way); the
difference over the calls is printed, in thousands of instructions. `--base REV`: the same
for another commit's `gateway/` (exported with `git archive`), side by side. Needs valgrind
(`make system-deps`); about two and a half minutes per tree.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("parse", "decide", "classify", "accountant", "observers")


def _calls(part: str) -> Callable[[], None]:
    """One call of `part`, with whichever gateway package is importable."""
    import orjson

    from gateway.config.loader import parse_config
    from gateway.config.snapshot import ConfigSnapshot
    from gateway.protocol.chat import parse_chat_request
    from gateway.routing.live import LiveState
    from gateway.routing.pipeline import decide

    sys.path.insert(0, str(HERE))
    from bench import POLICY

    config = parse_config(POLICY.format(json=1, sse=2, paced=3))[0]
    snapshot = ConfigSnapshot.build(config)
    live = LiveState(lambda: snapshot, rng=random.Random(1))
    body = orjson.dumps(
        {
            "model": "bench-stream",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 16,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    if part == "parse":
        return lambda: parse_chat_request(body)
    if part == "decide":
        return lambda: decide(parse_chat_request(body), {}, snapshot, live)
    if part == "classify":
        from gateway.routing.classify import classify
        from gateway.routing.facts import request_facts

        settings = config.gateway

        def classified() -> None:
            chat = parse_chat_request(body)
            classify(chat, {}, request_facts(chat, settings), settings.classifier)

        return classified
    if part == "accountant":
        from gateway.proxy.relay import SseAccountant

        conf = (HERE / "upstream.conf.tmpl").read_text()
        found = re.search(r"default_type text/event-stream;\n\s*return 200 '(.*?)';", conf, re.S)
        assert found is not None
        stream = found.group(1).encode()

        def fed() -> None:
            accountant = SseAccountant(strip_usage=False, hold_done=True)
            accountant.feed(stream)
            accountant.flush()

        return fed
    if part == "observers":
        from gateway.metrics import Metrics
        from gateway.proxy.outcome import Attempt, CallOutcome
        from gateway.proxy.usage import Usage

        offer = snapshot.offers["bench/sse"][0]
        attempt = Attempt(offer.backend, offer.model, None, 200, 0.8)
        outcome = CallOutcome("req-1", "bench-stream", stream=True, route="bench-stream", offer=offer)
        outcome.usage, outcome.latency_s, outcome.ttft_s = Usage(9, 9), 0.8, 0.2
        outcome.attempts.append(attempt)
        observers = (Metrics(), live)

        def reported() -> None:
            for observer in observers:
                observer.attempt_started(offer)
                observer.attempt_finished(offer, attempt, 0.2)
                observer.call_finished(outcome)

        return reported
    raise SystemExit(f"unknown part {part!r}")


def _run(part: str, calls: int) -> None:
    """Under callgrind: one warm-up call, then `calls` calls, without the collector (its runs
    fall wherever every object the process holds puts them; the gateway serves with them rare)."""
    call = _calls(part)
    call()
    gc.collect()
    gc.disable()
    for _ in range(calls):
        call()


def _instructions(source: str, part: str, calls: int) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    cmd += [str(Path(__file__).resolve()), "--run", part, "--calls", str(calls)]
    # One hash seed: with random ones, dicts and sets probe differently from run to run.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": source, "PYTHONHASHSEED": "0"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    for line in run.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise SystemExit(f"callgrind printed no count for {part}: {run.stderr[-500:]}")


def _whole(proxy: str, stream: bool, calls: int, offset: int) -> float:
    """Instructions per call of the whole `proxy` process ("gateway" or "floor")."""
    import socket
    import time

    import orjson

    sys.path.insert(0, str(HERE))
    from bench import BIN, GATEWAY, JSON_PORT, POLICY, REPO, SSE_PORT, Procs, wait_up

    tmp = Path(tempfile.mkdtemp(prefix="gw-whole-"))
    procs = Procs()
    try:
        json_port, sse_port, port = JSON_PORT + offset, SSE_PORT + offset, GATEWAY + offset
        conf = (HERE / "upstream.conf.tmpl").read_text().replace("__DIR__", str(tmp))
        conf = conf.replace("__JSON_PORT__", str(json_port)).replace("__SSE_PORT__", str(sse_port))
        (tmp / "nginx.conf").write_text(conf)
        procs.start(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "nginx.log")])
        wait_up(f"http://127.0.0.1:{json_port}/health")
        env = {"PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0", "GATEWAY_LOG_LEVEL": "warning"}
        if proxy == "gateway":
            (tmp / "policy.yaml").write_text(POLICY.format(json=json_port, sse=sse_port, paced=1))
            env["GATEWAY_DATA_DIR"] = str(tmp / "data")
            serve = ["-m", "gateway", "serve", "--config", str(tmp / "policy.yaml"), "--port", str(port)]
        else:
            env["UPSTREAM"] = f"http://127.0.0.1:{sse_port if stream else json_port}"
            serve = ["-m", "uvicorn", "floor_asgi_aiohttp:app", "--app-dir", str(HERE), "--port", str(port)]
            serve += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        out = tmp / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        process = procs.start([*cmd, str(BIN / "python"), *serve], env=env, log=tmp / "proxy.log")
        wait_up(f"http://127.0.0.1:{port}/health", timeout=600)
        body = {"model": "bench-stream" if stream else "bench", "messages": [{"role": "user", "content": "Say hello."}]}
        body["max_tokens"] = 16
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        data = orjson.dumps(body)
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        request = head.encode() + data
        end = b"0\r\n\r\n" if stream else b"}"
        with socket.create_connection(("127.0.0.1", port)) as conn:

            def call() -> None:
                conn.sendall(request)
                got = b""
                while not (got.endswith(end) and b"\r\n\r\n" in got):
                    got += conn.recv(65536)

            for _ in range(300):  # warm: connections, caches, the first calls' lazy work
                call()
            time.sleep(1)
            subprocess.run(["callgrind_control", "-i", "on", str(process.pid)], capture_output=True, check=True)
            for _ in range(calls):
                call()
            subprocess.run(["callgrind_control", "-i", "off", str(process.pid)], capture_output=True, check=True)
            subprocess.run(["callgrind_control", "-d", str(process.pid)], capture_output=True, check=True)
        total = 0
        for dump in tmp.glob("callgrind.out*"):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        return total / calls
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--base", help="also count this commit's gateway")
    ap.add_argument("--only", nargs="+", choices=PARTS)
    ap.add_argument("--whole", action="store_true", help="the whole gateway and floor processes, over HTTP")
    ap.add_argument("--port-offset", type=int, default=900, help="with --whole: bench.py's ports shifted by this")
    ap.add_argument("--run", choices=PARTS, help=argparse.SUPPRESS)  # one part's calls, under callgrind
    args = ap.parse_args()
    if args.run:
        _run(args.run, args.calls)
        return 0
    if not shutil.which("valgrind"):
        raise SystemExit("needs `valgrind`: run `make system-deps`")
    if args.whole:
        print(f"# thousands of instructions per call of the whole process (callgrind, {args.calls} calls)")
        print(f"{'':<8}{'floor':>12}{'gateway':>12}")
        for stream in (False, True):
            floor = _whole("floor", stream, args.calls, args.port_offset)
            gateway = _whole("gateway", stream, args.calls, args.port_offset)
            print(f"{'SSE' if stream else 'JSON':<8}{floor / 1000:>11.0f}k{gateway / 1000:>11.0f}k", flush=True)
        return 0
    runs = {"this tree": str(HERE.parent)}
    tmp = None
    if args.base:
        tmp = Path(tempfile.mkdtemp(prefix="gw-parts-"))
        sys.path.insert(0, str(HERE))
        from bench import export

        export(args.base, tmp)
        runs[args.base] = str(tmp)
    try:
        # Bytecode compiled first: a run that compiles what it imports (a tree exported for
        # --base, bench.py) would count that too, once, in whichever run comes first.
        for source in [*runs.values(), str(HERE)]:
            subprocess.run([sys.executable, "-m", "compileall", "-q", source], check=True, capture_output=True)
        print(f"# thousands of instructions per call (callgrind, {args.calls} calls less none)")
        print(f"{'part':<12}" + "".join(f"{name:>16}" for name in runs))
        counts: dict[str, dict[str, float]] = {name: {} for name in runs}
        for part in args.only or PARTS:
            for name, source in runs.items():
                more, none = _instructions(source, part, args.calls), _instructions(source, part, 0)
                counts[name][part] = (more - none) / args.calls
            if part in ("decide", "classify"):  # the parse is its own row
                for name in runs:
                    counts[name][part] -= counts[name].get("parse", 0.0)
            print(f"{part:<12}" + "".join(f"{counts[name][part] / 1000:>15.1f}k" for name in runs), flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
