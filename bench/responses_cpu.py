"""Gateway CPU per request, POST /v1/responses beside POST /v1/chat/completions, on the same
agent conversation (a system prompt, 20 tools, 10 turns), non-streamed and streamed.

Runs a real gateway process (`python -m gateway serve`, one worker) in front of the tests'
fake chat upstream and a fake Responses upstream (native pass-through), sends the requests
one at a time with httpx, and reads the gateway process's own CPU time (utime + stime from
/proc) around each batch. Paired rounds (each path once per round, in turn), median per path.

    PYTHONPATH=$PWD .venv/bin/python bench/responses_cpu.py --requests 200 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import textwrap
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fake_responses import FakeResponses
from tests.support.fake_upstream import FakeUpstream
from tests.support.services import GatewayProcess

CONFIG = """
backends:
  chat-up:
    type: openai
    base_url: {chat}
    api_key: sk-upstream-secret-123456
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, context_length: 131072}}
  native:
    type: openai
    base_url: {native}
    api_key: sk-fake-responses-123456
    apis: [responses]
    models:
      zai/glm-native: {{upstream_id: glm, context_length: 131072}}
"""
SYSTEM = "You are a coding agent working in a repository. " * 40


def _tools(chat: bool) -> list[dict]:
    params = {
        "type": "object",
        "properties": {"path": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["path"],
    }
    out = []
    for i in range(20):
        fn = {"name": f"tool_{i}", "description": "Reads or edits a file. " * 5, "parameters": params}
        out.append({"type": "function", "function": fn} if chat else {"type": "function", **fn})
    return out


def bodies(model: str) -> dict[str, dict]:
    chat_messages: list[dict] = [{"role": "system", "content": SYSTEM}]
    items: list[dict] = []
    for t in range(10):
        ask = f"Turn {t}: please fix the failing test in module {t}. " * 8
        call = {"id": f"call_{t}", "type": "function", "function": {"name": "tool_1", "arguments": '{"path":"a.py"}'}}
        result = "def f():\n    return 1\n" * 20
        chat_messages += [
            {"role": "user", "content": ask},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{t}", "content": result},
        ]
        items += [
            {"type": "message", "role": "user", "content": ask},
            {"type": "function_call", "call_id": f"call_{t}", "name": "tool_1", "arguments": '{"path":"a.py"}'},
            {"type": "function_call_output", "call_id": f"call_{t}", "output": result},
        ]
    return {
        "chat": {"model": "qwen/qwen3-32b", "messages": chat_messages, "tools": _tools(True)},
        "responses": {"model": model, "instructions": SYSTEM, "input": items, "tools": _tools(False)},
    }


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    chat_up, native = FakeUpstream("a").start(), FakeResponses().start()
    gw = GatewayProcess(
        textwrap.dedent(CONFIG.format(chat=chat_up.base_url, native=native.base_url)),
        env={"GATEWAY_LOG_LEVEL": "warning"},
    ).start()
    translated, passthrough = bodies("qwen/qwen3-32b"), bodies("zai/glm-native")
    cases = {
        "chat": ("/v1/chat/completions", translated["chat"]),
        "responses translated": ("/v1/responses", translated["responses"]),
        "responses translated, store false": ("/v1/responses", {**translated["responses"], "store": False}),
        "responses native": ("/v1/responses", passthrough["responses"]),
        "responses native, store false": ("/v1/responses", {**passthrough["responses"], "store": False}),
    }
    results: dict[str, list[float]] = {f"{name}{s}": [] for name in cases for s in ("", " (SSE)")}
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            for path, body in cases.values():  # warm up
                for stream in (False, True):
                    client.post(path, json={**body, "stream": stream}).raise_for_status()
            for _ in range(args.rounds):
                for name, (path, body) in cases.items():
                    for stream, suffix in ((False, ""), (True, " (SSE)")):
                        payload = {**body, "stream": stream}
                        before = cpu_s(gw.proc.pid)
                        for _ in range(args.requests):
                            answer = client.post(path, json=payload)
                            answer.raise_for_status()
                            answer.read()
                        results[name + suffix].append((cpu_s(gw.proc.pid) - before) / args.requests * 1e6)
    finally:
        gw.stop()
        chat_up.stop()
        native.stop()
    base = {"": statistics.median(results["chat"]), " (SSE)": statistics.median(results["chat (SSE)"])}
    print(f"gateway CPU per request, median of {args.rounds} rounds x {args.requests} requests")
    for name, values in results.items():
        suffix = " (SSE)" if name.endswith("(SSE)") else ""
        median = statistics.median(values)
        print(f"  {name:42s} {median:8.0f} us   {median / base[suffix]:.2f}x chat")


if __name__ == "__main__":
    main()
