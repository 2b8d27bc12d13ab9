"""In-process: what each ingress costs the gateway at its edge on the agent turn, no sockets.

`agent_bench.py` measures whole requests through a running gateway, where this shared
machine's noise (±0.15x from run to run) hides differences of a few per cent. This times,
in one process with `time.process_time` (best of rounds x 7 x N), the work an ingress adds around
the upstream call for issue 9's agent turn (bench/agent_request.py), non-streamed: parsing
the request, the routing decision (as `api/ingress.py` `handle` takes it: a request no
candidate could take natively is translated first), the first candidate's call and its
JSON encoding, then the answer's check (agent_bench's fixed answers) and the client's body.
Not included: HTTP, limits, the fallback loop, accounting (the same for every case).

    python bench/agent_edge.py [--requests 300] [--base REV] [--rounds 3] [--instructions]

`--base REV`: the same timing for another commit's gateway too (exported with `git
archive`, as ab.py does), printed beside this tree's. `--instructions`: instructions per
request instead of CPU time, counted by valgrind's callgrind (each case run once with
`--requests` calls and once with none; the difference over the calls). Slow (a minute or
more per tree) but deterministic: what a loaded shared machine cannot resolve by time, a
change of a few hundred instructions, it shows the same on every run.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = (
    "chat",
    "messages/translated",
    "messages/native",
    "responses/translated",
    "responses/native",
    "codex/native",  # the Responses turn with Codex's custom, namespace and tool-search tools
)


def measure(requests: int, only: tuple[str, ...] = ()) -> dict[str, float]:
    """µs of CPU per request for each case, with whichever gateway package is importable;
    with `only`, just those cases' calls (`requests` of them after one), untimed."""
    import orjson

    # The gateway first, from PYTHONPATH: agent_bench puts this tree first on sys.path.
    from gateway.api.chat import ChatIngress
    from gateway.api.messages import MESSAGES_INGRESS
    from gateway.api.responses import INGRESS as RESPONSES_INGRESS
    from gateway.config.loader import parse_config
    from gateway.config.snapshot import ConfigSnapshot
    from gateway.proxy.attempts import OpenedAnswer
    from gateway.routing.pipeline import decide

    try:
        from gateway.routing.candidates import may_answer_natively
    except ImportError:  # a gateway from before routing views
        may_answer_natively = None

    sys.path.insert(0, str(HERE))
    import agent_bench
    import agent_request

    text = textwrap.dedent(agent_bench.POLICY.format(json=1, sse=2))
    config, warnings = parse_config(text)
    snapshot = ConfigSnapshot.build(config, "<bench>", warnings, text)
    answers = agent_request.answers()
    ingresses = {"chat": ChatIngress(), "messages": MESSAGES_INGRESS, "responses": RESPONSES_INGRESS}
    ingresses["codex"] = RESPONSES_INGRESS

    def one(ingress, body: bytes, answer: bytes) -> None:
        request = ingress.parse(body, {})
        chat = request.chat
        native = may_answer_natively is None or chat.translated
        if not native and not may_answer_natively(chat.fields, chat.model, snapshot, ingress.endpoint):
            chat.translate()
        decision = decide(chat, {}, snapshot, None, ingress.endpoint)
        offer = decision.candidates[0]
        call = ingress.plan(request, offer, None)
        orjson.dumps(call.payload)
        usage, parsed = call.format.read_body(offer, answer)
        ingress.body(
            request, OpenedAnswer(offer, None, 0.0, body=answer, usage=usage, answer=parsed, format=call.format)
        )

    out = {}
    for case in only or CASES:
        api, _, kind = case.partition("/")
        backend = "native" if kind == "native" else "chat"
        body = orjson.dumps(getattr(agent_request, api)(f"agent/{backend}", False))
        wire = "responses" if api == "codex" else api
        answer = answers[(wire if kind == "native" else "chat", False)].encode()
        ingress = ingresses[api]
        one(ingress, body, answer)
        if only:  # counted from outside (callgrind): just the calls
            # Without the collector: when its runs fall depends on every object the process
            # holds (a module more or less moves them), and the gateway serves with them rare
            # (gateway/api/app.py); counted in, they swamp differences of a few per cent.
            gc.collect()
            gc.disable()
            for _ in range(requests):
                one(ingress, body, answer)
            gc.enable()
            continue
        best = float("inf")
        for _ in range(7):
            start = time.process_time()
            for _ in range(requests):
                one(ingress, body, answer)
            best = min(best, (time.process_time() - start) / requests * 1e6)
        out[case] = best
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--base", help="also time this commit's gateway")
    ap.add_argument("--rounds", type=int, default=3, help="runs per tree, alternating; the best of each is kept")
    ap.add_argument("--instructions", action="store_true", help="count instructions (callgrind), not time")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one tree's figures, for --base
    ap.add_argument("--calls", choices=CASES, help=argparse.SUPPRESS)  # one case's calls, under callgrind
    args = ap.parse_args()
    if args.calls:
        measure(args.requests, (args.calls,))
        return 0
    if args.json:
        import orjson

        import gateway

        figures = measure(args.requests)
        assert gateway.__file__ is not None
        sys.stdout.write(orjson.dumps({"from": gateway.__file__, **figures}).decode())
        return 0
    runs = {"this tree": str(HERE.parent)}
    tmp = None
    if args.base:
        tmp = Path(tempfile.mkdtemp(prefix="gw-edge-"))
        sys.path.insert(0, str(HERE))
        from bench import export

        export(args.base, tmp)
        runs[args.base] = str(tmp)
    try:
        if args.instructions:
            _print_instructions(runs, args.requests)
            return 0
        import orjson

        figures: dict[str, dict[str, float]] = {}
        names = list(runs)
        for r in range(args.rounds):  # alternating, so drift on a shared machine hits both alike
            for name in names[r % len(names) :] + names[: r % len(names)]:
                env = {**os.environ, "PYTHONPATH": runs[name]}
                cmd = [sys.executable, str(Path(__file__).resolve()), "--json", "--requests", str(args.requests)]
                got = orjson.loads(subprocess.run(cmd, env=env, capture_output=True, check=True).stdout)
                source = got.pop("from")
                if not source.startswith(runs[name]):
                    raise SystemExit(f"{name}: measured the gateway at {source}, not {runs[name]}")
                best = figures.setdefault(name, got)
                for case, value in got.items():
                    best[case] = min(best[case], value)
        print(
            f"# in-process edge cost of the agent turn, non-streamed: µs of CPU per request "
            f"(best of {args.rounds} x 7 x {args.requests})"
        )
        print(f"{'case':<22}" + "".join(f"{name:>24}" for name in figures))
        for case in CASES:
            cells = "".join(f"{f[case]:>14.1f} ({f[case] / f['chat']:.2f}x)" for f in figures.values())
            print(f"{case:<22}{cells}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _instructions(source: str, case: str, requests: int) -> int:
    """Instructions callgrind counts in one run of `case`'s calls (`requests` after one)."""
    if not shutil.which("valgrind"):
        raise SystemExit("needs `valgrind`: run `make system-deps`")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    cmd += [str(Path(__file__).resolve()), "--calls", case, "--requests", str(requests)]
    # One hash seed: with random ones, dicts and sets probe differently from run to run
    # (±0.5% of the count); with one, the same run counts the same to a few instructions.
    env = {**os.environ, "PYTHONPATH": source, "PYTHONHASHSEED": "0"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    for line in run.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise SystemExit(f"callgrind printed no count for {case}: {run.stderr[-500:]}")


def _print_instructions(runs: dict[str, str], requests: int) -> None:
    print(
        f"# in-process edge cost of the agent turn, non-streamed: instructions per request (callgrind, {requests} calls)"
    )
    print(f"{'case':<22}" + "".join(f"{name:>24}" for name in runs))
    for case in CASES:
        cells = []
        for source in runs.values():
            per_call = (_instructions(source, case, requests) - _instructions(source, case, 0)) / requests
            cells.append(f"{per_call / 1000:>19.1f}k")
        print(f"{case:<22}" + "".join(f"{c:>24}" for c in cells), flush=True)


if __name__ == "__main__":
    sys.exit(main())
