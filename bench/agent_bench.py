"""`make bench-agent`: what each ingress API costs the gateway on a realistic agent request.

Issue 9's bench case. One coding-agent turn (a 3 KB system prompt, 20 tools, 10 turns with
tool calls and results: `agent_request.py`) is sent as chat completions, as Anthropic
Messages and as OpenAI Responses, non-streamed and streamed, in the same run, to one
gateway process (pinned to core 1; nginx and wrk on core 0, as in bench.py). Each API is
served two ways where it can be:

- translated: the backend speaks only chat completions (`type: openai`), so the gateway
  translates the request and the answer (or stream) at its edge;
- pass-through: the backend serves the API natively (`type: vllm`), so the request goes
  out in its own format and the answer comes back as the backend wrote it.

nginx answers with fixed bodies in each wire format (made by the gateway's own translations
from one chat completion, so every format check passes). Reported: the gateway process's CPU
time per request for each case, and its ratio to chat completions measured in the same
round, median and range over the rounds (paired: the order of the cases rotates per round,
so drift on this shared machine hits all alike). Targets (issue 9): translated at most 1.3x
chat, pass-through at most 1.03x.

    python bench/agent_bench.py [--rounds 5] [--duration 3] [--conc 16] [--no-stream] [--port-offset N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import agent_request  # noqa: E402  (bench/agent_request.py)

from bench import BIN, REPO, Procs, cpu_seconds, wait_up  # noqa: E402  (bench/bench.py)

JSON_PORT, SSE_PORT, GATEWAY = 18401, 18402, 18450

# Chat-only backends (the gateway translates) and native ones (pass-through), JSON and SSE.
POLICY = """
backends:
  agent-chat:
    type: openai
    base_url: http://127.0.0.1:{json}/v1
    models:
      agent/chat: {{upstream_id: bench-model, context_length: 131072, input_price: 0.1, output_price: 0.2}}
  agent-chat-sse:
    type: openai
    base_url: http://127.0.0.1:{sse}/v1
    models:
      agent/chat-sse: {{upstream_id: bench-model, context_length: 131072, input_price: 0.1, output_price: 0.2}}
  agent-native:
    type: vllm
    base_url: http://127.0.0.1:{json}/v1
    models:
      agent/native: {{upstream_id: bench-model, context_length: 131072, input_price: 0.1, output_price: 0.2}}
  agent-native-sse:
    type: vllm
    base_url: http://127.0.0.1:{sse}/v1
    models:
      agent/native-sse: {{upstream_id: bench-model, context_length: 131072, input_price: 0.1, output_price: 0.2}}
"""

# case -> (ingress path, request builder, backend kind); "chat" is every ratio's reference.
CASES = {
    "chat": ("/v1/chat/completions", agent_request.chat, "chat"),
    "messages/translated": ("/v1/messages", agent_request.messages, "chat"),
    "messages/native": ("/v1/messages", agent_request.messages, "native"),
    "responses/translated": ("/v1/responses", agent_request.responses, "chat"),
    "responses/native": ("/v1/responses", agent_request.responses, "native"),
}
TARGETS = {"translated": 1.3, "native": 1.03}
UPSTREAM_PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}


def nginx_conf(tmp: Path, json_port: int, sse_port: int) -> str:
    """Two servers (JSON, SSE), each answering every API's path with its fixed body: a static
    file (an answer is too long for nginx's `return`), served to a POST through the
    405 -> 200 redirect (nginx serves static files to GET only)."""
    answers = agent_request.answers()

    def server(port: int, stream: bool) -> str:
        root = tmp / ("sse" if stream else "json")
        for api, path in UPSTREAM_PATHS.items():
            file = root / path.lstrip("/")
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(answers[(api, stream)])
        kind = "text/event-stream" if stream else "application/json"
        return f"""  server {{
    listen 127.0.0.1:{port};
    location = /health {{ return 200 'ok'; }}
    location /v1/ {{ root {root}; default_type {kind}; error_page 405 =200 $uri; }}
  }}"""

    temp = "\n".join(f"  {name}_temp_path {tmp}/{name};" for name in ("proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_buffer_size 256k;
  client_body_temp_path {tmp}/body;
  etag off;
{temp}
{server(json_port, False)}
{server(sse_port, True)}
}}
"""


def wrk(url: str, path: str, body: Path, conc: int, duration: float, pid: int) -> dict[str, float]:
    """One measured wrk run (after a 1 s warm-up) and the gateway's CPU µs per request."""
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_PATH": path}
    base = ["taskset", "-c", "0", "wrk", "-t1", f"-c{conc}", "--timeout", "10s", "-s", str(HERE / "agent.lua"), url]
    subprocess.run([*base[:5], "-d1s", *base[5:]], env=env, capture_output=True)  # warm-up
    cpu = cpu_seconds(pid)
    out = subprocess.run([*base[:5], f"-d{duration:g}s", *base[5:]], env=env, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pid) - cpu
    for line in out.splitlines():
        if line.startswith("RESULT"):
            result = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
            result["cpu_us"] = cpu / result["requests"] * 1e6 if result["requests"] else float("nan")
            return result
    return {"rps": 0, "p50_ms": 0, "requests": 0, "non2xx": 0, "sockerr": -1, "cpu_us": float("nan")}


def report(title: str, rounds: list[dict[str, dict[str, float]]]) -> str:
    lines = [
        f"\n## {title}: gateway CPU per request, {len(rounds)} paired rounds",
        f"{'case':<22} {'cpu us/req':>10} {'vs chat':>8} {'range':>13} {'target':>7} {'req/s':>7} {'errors':>6}",
    ]
    for case in CASES:
        cpu = statistics.median(r[case]["cpu_us"] for r in rounds)
        ratios = sorted(r[case]["cpu_us"] / r["chat"]["cpu_us"] for r in rounds)
        rps = statistics.median(r[case]["rps"] for r in rounds)
        errors = sum(r[case]["non2xx"] + max(r[case]["sockerr"], 0) for r in rounds)
        kind = case.partition("/")[2]
        target = f"{TARGETS[kind]:.2f}x" if kind else ""
        lines.append(
            f"{case:<22} {cpu:>10.0f} {statistics.median(ratios):>7.2f}x {ratios[0]:>6.2f}-{ratios[-1]:<6.2f} "
            f"{target:>7} {rps:>7.0f} {errors:>6.0f}"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--no-stream", action="store_true")
    ap.add_argument("--port-offset", type=int, default=0, help="shift every port (two runs on one machine)")
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"needs `{tool}`: run `make system-deps`")
    o = args.port_offset
    json_port, sse_port, gateway_port = JSON_PORT + o, SSE_PORT + o, GATEWAY + o
    tmp = Path(tempfile.mkdtemp(prefix="gw-agent-bench-"))
    tmp.chmod(0o755)  # nginx's worker (an unprivileged user when started as root) reads the answers
    procs = Procs()
    try:
        (tmp / "nginx.conf").write_text(nginx_conf(tmp, json_port, sse_port))
        procs.start(
            ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")], core=0
        )
        wait_up(f"http://127.0.0.1:{json_port}/health")
        (tmp / "policy.yaml").write_text(POLICY.format(json=json_port, sse=sse_port))
        env = {
            "PYTHONPATH": str(REPO),  # this tree's gateway, whatever the venv has installed
            "GATEWAY_DATA_DIR": str(tmp / "data"),
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_USAGE_WRITER_CPUS": "0",
        }
        cmd = [str(BIN / "gateway"), "serve", "--config", str(tmp / "policy.yaml"), "--port", str(gateway_port)]
        gateway = procs.start(cmd, env=env, core=1, log=tmp / "gateway.log")
        url = f"http://127.0.0.1:{gateway_port}"
        wait_up(f"{url}/health", timeout=120)
        print(
            f"# make bench-agent: {args.duration:g}s per run, c={args.conc}, one agent turn of "
            f"{len(orjson.dumps(agent_request.chat('agent/chat', False))):,} bytes (chat form)",
            flush=True,
        )
        for stream in [False] + ([] if args.no_stream else [True]):
            bodies = {}
            for case, (_, build, backend) in CASES.items():
                model = f"agent/{backend}" + ("-sse" if stream else "")
                bodies[case] = tmp / f"{case.replace('/', '-')}-{int(stream)}.json"
                bodies[case].write_bytes(orjson.dumps(build(model, stream)))
            for case, body in bodies.items():  # each case answers 200 before it is timed
                answer = httpx.post(url + CASES[case][0], content=body.read_bytes(), timeout=30)
                if answer.status_code != 200:
                    raise SystemExit(f"{case}: the gateway answered {answer.status_code}: {answer.text[:500]}")
            rounds = []
            names = list(CASES)
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                rounds.append(
                    {
                        case: wrk(url, CASES[case][0], bodies[case], args.conc, args.duration, gateway.pid)
                        for case in order
                    }
                )
            print(report("streaming (SSE)" if stream else "non-streaming", rounds), flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
