"""Instructions per request of the whole gateway process on issue 9's agent turn, per ingress,
counted by valgrind's callgrind over HTTP: the same on every run, however loaded the machine is.

`agent_bench.py` times the same requests under wrk, where this shared machine's noise (±0.1x
of a ratio from round to round) hides a change of a few per cent; `agent_edge.py` counts
only what an ingress adds in process around the upstream call. This runs the gateway (as
`make run` runs it) under callgrind in front of agent_bench's nginx upstream (its fixed
answer in each wire format, JSON and SSE) and, for each case, switches counting on
(`callgrind_control`) only around `--calls` sequential requests on one keep-alive
connection, after a warm-up: everything the process does for a request (HTTP in and out,
parse, routing, the upstream call, the answer's check and accounting, metrics) and not the
kernel's work. Timers and background tasks falling in the window count too, so runs differ
by about 1%.

    python bench/agent_whole.py [--calls 500] [--cases chat messages/native ...] [--no-stream]
                                [--keep DIR]

Prints thousands of instructions per request and the ratio to chat's. `--keep DIR` keeps each
case's callgrind dump (`DIR/<case>-<json|sse>.out`), for `callgrind_annotate` (C functions
only: Python's own frames show as the interpreter's loop). Needs valgrind and nginx (`make
system-deps`); a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from agent_bench import CASES, JSON_PORT, POLICY, SSE_PORT, nginx_conf  # noqa: E402

from bench import BIN, REPO, Procs, wait_up  # noqa: E402  (bench/bench.py)

GATEWAY_PORT = 18460


def read_answer(conn: socket.socket) -> bytes:
    """One HTTP/1.1 answer off `conn`: its head, then a Content-Length body or chunks to the last."""
    got = b""
    while (end := got.find(b"\r\n\r\n")) < 0:
        got += conn.recv(65536)
    head, body = got[:end].lower(), got[end + 4 :]
    if not head.startswith(b"http/1.1 200"):
        raise SystemExit(f"the gateway answered {got[:300]!r}")
    if (at := head.find(b"content-length:")) >= 0:
        length = int(head[at + 15 :].split(b"\r\n", 1)[0])
        while len(body) < length:
            body += conn.recv(65536)
    else:
        while not body.endswith(b"0\r\n\r\n"):
            body += conn.recv(65536)
    return body


def count(process: subprocess.Popen, out: Path, port: int, path: str, body: bytes, calls: int) -> int:
    """Instructions the gateway process executes over `calls` requests (after a warm-up)."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    control = ["callgrind_control"]
    with socket.create_connection(("127.0.0.1", port)) as conn:
        for _ in range(200):  # warm: the connection, caches, the first calls' lazy work
            conn.sendall(request)
            read_answer(conn)
        time.sleep(1)
        subprocess.run([*control, "-z", str(process.pid)], capture_output=True, check=True)
        subprocess.run([*control, "-i", "on", str(process.pid)], capture_output=True, check=True)
        for _ in range(calls):
            conn.sendall(request)
            read_answer(conn)
        subprocess.run([*control, "-i", "off", str(process.pid)], capture_output=True, check=True)
    before = set(out.parent.glob(out.name + "*"))
    subprocess.run([*control, "-d", str(process.pid)], capture_output=True, check=True)
    for _ in range(100):
        if new := set(out.parent.glob(out.name + "*")) - before:
            break
        time.sleep(0.1)
    (dump,) = new
    for _ in range(100):  # written in full once its totals line is there
        text = dump.read_text(errors="replace")
        totals = [line for line in text.splitlines() if line.startswith(("summary:", "totals:"))]
        if totals:
            return int(totals[-1].split()[1])
        time.sleep(0.1)
    raise SystemExit(f"no totals in {dump}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--no-stream", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep each case's callgrind dump in this directory")
    ap.add_argument("--port-offset", type=int, default=0, help="shift every port")
    args = ap.parse_args()
    for tool in ("nginx", "valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise SystemExit(f"needs `{tool}`: run `make system-deps`")
    cases = ["chat", *(c for c in args.cases if c != "chat")]  # chat: every ratio's reference
    o = args.port_offset
    json_port, sse_port, port = JSON_PORT + 100 + o, SSE_PORT + 100 + o, GATEWAY_PORT + o
    tmp = Path(tempfile.mkdtemp(prefix="gw-agent-whole-"))
    tmp.chmod(0o755)  # nginx's worker (an unprivileged user when started as root) reads the answers
    procs = Procs()
    try:
        (tmp / "nginx.conf").write_text(nginx_conf(tmp, json_port, sse_port))
        procs.start(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")])
        wait_up(f"http://127.0.0.1:{json_port}/health")
        (tmp / "policy.yaml").write_text(POLICY.format(json=json_port, sse=sse_port))
        env = {
            "PYTHONPATH": str(REPO),
            "PYTHONHASHSEED": "0",  # dicts and sets probe alike from run to run
            "GATEWAY_DATA_DIR": str(tmp / "data"),
            "GATEWAY_LOG_LEVEL": "warning",
        }
        out = tmp / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        serve = ["-m", "gateway", "serve", "--config", str(tmp / "policy.yaml"), "--port", str(port)]
        process = procs.start([*cmd, str(BIN / "python"), *serve], env=env, log=tmp / "gateway.log")
        wait_up(f"http://127.0.0.1:{port}/health", timeout=600)
        print(f"# thousands of instructions per request, whole gateway process (callgrind, {args.calls} calls)")
        print(f"{'case':<22}{'JSON':>10}{'vs chat':>9}{'SSE':>10}{'vs chat':>9}", flush=True)
        chat: dict[bool, float] = {}
        for case in cases:
            path, build, backend = CASES[case]
            cells = ""
            for stream in [False] + ([] if args.no_stream else [True]):
                model = f"agent/{backend}" + ("-sse" if stream else "")
                body = orjson.dumps(build(model, stream))
                per_call = count(process, out, port, path, body, args.calls) / args.calls
                chat.setdefault(stream, per_call)
                cells += f"{per_call / 1000:>9.0f}k{per_call / chat[stream]:>8.3f}x"
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    dumps = sorted(tmp.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
                    shutil.copy(dumps[-1], args.keep / f"{case.replace('/', '-')}-{'sse' if stream else 'json'}.out")
            print(f"{case:<22}{cells}", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
