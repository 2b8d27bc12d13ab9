"""Helpers for tests that drive the usage ledger through real gateway processes and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.poll import poll
from tests.support.services import REPO
from tests.usage.fixtures import EVENTS

# Backends named like the fixture's, with list prices, so the throughput table can show them.
FIXTURE_CONFIG = """
backends:
  deepseek: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k,
             models: {deepseek/deepseek-v3.2: {input_price: 0.28, output_price: 0.42}}}
  groq: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: {qwen/qwen3-32b: {input_price: 0.29, output_price: 0.59}}}
  openrouter: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: {moonshotai/kimi-k2.5: {input_price: 0.6, output_price: 2.5}}}
  zhipu: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k,
          models: {z-ai/glm-5: {input_price: 1.0, output_price: 3.2}, z-ai/glm-4.6: {input_price: 0.6, output_price: 2.2}}}
"""


def gateway_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess:
    """`python -m gateway ARGS` as an operator runs it; stdout/stderr captured as text."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") or k == "GATEWAY_TEST_STRICT"}
    full_env = {**inherited, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=REPO, env=full_env, input=stdin, capture_output=True, timeout=60
    )


def write_fixture(path: Path) -> Path:
    from gateway.usage.jsonl import event_line

    path.write_bytes(b"".join(event_line(e) for e in EVENTS))
    return path


def rankings(url: str, **params) -> dict:
    response = httpx.get(url + "/v1/rankings", params=params, headers={"authorization": "Bearer sk-test"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def poll_rankings(url: str, predicate, timeout: float = 30.0, **params) -> dict:
    """The rankings once predicate(body) holds; fails with the last totals otherwise."""
    seen: dict = {}

    def satisfied() -> dict | None:
        seen["body"] = rankings(url, **params)
        return seen["body"] if predicate(seen["body"]) else None

    return poll(
        satisfied,
        what="the rankings to satisfy the condition",
        timeout=timeout,
        ignore=(httpx.HTTPError, AssertionError),
        context=lambda: f"last totals: {seen.get('body', {}).get('totals')}",
    )
