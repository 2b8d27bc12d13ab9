"""Paired A/B of the gateway's cost: this working tree against another commit.

Runs two gateways side by side on the same nginx upstream and core (bench.py's setup): one
from this tree, one from `--base` (a commit, exported with `git archive` to a temporary
directory). wrk drives them in turn, the order alternating by round, and the gateway
process's CPU time per request and req/s are compared round by round: the median of the
per-round ratios, with their range. A range that spans 1.0 is a difference this machine
cannot resolve.

    python bench/ab.py --base main [--rounds 7] [--duration 4] [--conc 16] [--no-stream]
        [--agent chat|messages/translated|messages/native|responses/translated|responses/native]

`--agent CASE`: issue 9's agent turn (agent_bench.py's upstream, backends and case) as the
traffic instead of bench.py's one-line chat.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import agent_bench  # noqa: E402  (bench/agent_bench.py)
import httpx  # noqa: E402
import orjson  # noqa: E402

from bench import JSON_PORT, PACED_PORT, POLICY, REPO, SSE_PORT, Procs, export, wait_up, wrk  # noqa: E402  (bench/bench.py)
from tests.support.ports import free_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="commit to compare against (e.g. main)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--no-stream", action="store_true")
    ap.add_argument("--agent", choices=list(agent_bench.CASES), help="the agent turn, sent as this case")
    ap.add_argument("--port-offset", type=int, default=0, help="shift the upstream's ports (two runs on one machine)")
    args = ap.parse_args()
    json_port, sse_port = JSON_PORT + args.port_offset, SSE_PORT + args.port_offset
    tmp = Path(tempfile.mkdtemp(prefix="gw-ab-"))
    procs = Procs()
    try:
        (tmp / "base").mkdir()
        export(args.base, tmp / "base")
        if args.agent:
            tmp.chmod(0o755)  # nginx's worker reads the answers (agent_bench.py)
            (tmp / "nginx.conf").write_text(agent_bench.nginx_conf(tmp, json_port, sse_port))
            policy = agent_bench.POLICY.format(json=json_port, sse=sse_port)
        else:
            conf = (HERE / "upstream.conf.tmpl").read_text()
            conf = conf.replace("__DIR__", str(tmp)).replace("__JSON_PORT__", str(json_port))
            (tmp / "nginx.conf").write_text(conf.replace("__SSE_PORT__", str(sse_port)))
            policy = POLICY.format(json=json_port, sse=sse_port, paced=PACED_PORT + args.port_offset)
        procs.start(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "nginx.log")], core=0)
        wait_up(f"http://127.0.0.1:{json_port}/health")
        (tmp / "policy.yaml").write_text(policy)
        gateways = {}
        for name, source in (("tree", REPO), ("base", tmp / "base")):
            port = free_port()
            env = {
                "PYTHONPATH": str(source),
                "GATEWAY_DATA_DIR": str(tmp / f"data-{name}"),
                "GATEWAY_LOG_LEVEL": "warning",
                "GATEWAY_USAGE_WRITER_CPUS": "0",
            }
            # `python -m` imports from the working directory first: start each in its own source.
            serve = (
                f"cd {source} && exec {sys.executable} -m gateway serve --config {tmp / 'policy.yaml'} --port {port}"
            )
            gateways[name] = (port, procs.start(["sh", "-c", serve], env=env, core=1, log=tmp / f"{name}.log"))
        for port, _ in gateways.values():
            wait_up(f"http://127.0.0.1:{port}/health", timeout=120)
        for stream in [False] + ([] if args.no_stream else [True]):
            if args.agent:  # the agent turn, written once; each gateway answers it 200 before it is timed
                path, build, backend = agent_bench.CASES[args.agent]
                body = tmp / f"agent-{int(stream)}.json"
                body.write_bytes(orjson.dumps(build(f"agent/{backend}" + ("-sse" if stream else ""), stream)))
                for port, _ in gateways.values():
                    answer = httpx.post(f"http://127.0.0.1:{port}{path}", content=body.read_bytes(), timeout=30)
                    if answer.status_code != 200:
                        raise SystemExit(f"{args.agent}: a gateway answered {answer.status_code}: {answer.text[:300]}")
            rounds = []
            for r in range(args.rounds):
                result = {}
                for name in ("tree", "base") if r % 2 == 0 else ("base", "tree"):
                    port, proc = gateways[name]
                    url = f"http://127.0.0.1:{port}"
                    if args.agent:
                        result[name] = agent_bench.wrk(url, path, body, args.conc, args.duration, proc.pid)
                    else:
                        model = "bench-stream" if stream else "bench"
                        result[name] = wrk(url, model, stream, args.conc, args.duration, proc.pid)
                if not all(x["requests"] for x in result.values()):
                    raise SystemExit(f"round {r}: a wrk run failed: {result}")
                rounds.append(result)
            cpu = sorted(x["tree"]["cpu_us"] / x["base"]["cpu_us"] for x in rounds)
            rps = sorted(x["tree"]["rps"] / x["base"]["rps"] for x in rounds)
            errors = sum(x[n]["non2xx"] + max(x[n]["sockerr"], 0) for x in rounds for n in x)
            print(
                f"{'streaming' if stream else 'non-streaming'}{' ' + args.agent if args.agent else ''} c={args.conc}, tree/{args.base}, {args.rounds} paired "
                f"rounds: gateway CPU per request {statistics.median(cpu):.3f} ({cpu[0]:.3f}-{cpu[-1]:.3f}), "
                f"req/s {statistics.median(rps):.3f} ({rps[0]:.3f}-{rps[-1]:.3f}), errors {errors:.0f}",
                flush=True,
            )
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
