"""Building config snapshots and chat requests for routing unit tests."""

from __future__ import annotations

import textwrap
from typing import Any

import orjson

from gateway.config.loader import parse_config
from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.chat import ChatRequest, parse_chat_request
from gateway.routing.live import LiveState


def snapshot_from(yaml_text: str) -> ConfigSnapshot:
    text = textwrap.dedent(yaml_text)
    config, warnings = parse_config(text)
    return ConfigSnapshot.build(config, "<test>", warnings, text)


def answer(live: LiveState, offer, ttft_s: float | None = None, *, stream: bool = True, seconds: float = 0.4) -> None:
    """One answered call, reported as the proxy reports it: its attempt, then the call.
    Streamed: `ttft_s` is its time to first token; not streamed: `seconds` is the whole answer."""
    from gateway.proxy.outcome import Attempt, CallOutcome

    attempt = Attempt(offer.backend, offer.model, None, 200, seconds)
    live.attempt_finished(offer, attempt, ttft_s if stream else seconds)
    outcome = CallOutcome("r", "auto", stream=stream, offer=offer, ttft_s=ttft_s if stream else seconds)
    outcome.attempts.append(attempt)
    live.call_finished(outcome)


def chat(content: str = "Hello there.", model: str = "auto", **fields: Any) -> ChatRequest:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **fields}
    return parse_chat_request(orjson.dumps(body))


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def live_for(snapshot: ConfigSnapshot, clock: Clock | None = None, seed: int = 7) -> LiveState:
    import random

    return LiveState(lambda: snapshot, clock or Clock(), random.Random(seed))


# Two backends, three models: a cheap short-context model, a long-context one served by two
# backends at different prices, and a code model.
POLICY = """
backends:
  cheap:
    type: openai
    base_url: http://127.0.0.1:9/v1
    models:
      small/fast: {context_length: 4096, input_price: 0.1, output_price: 0.2}
      big/long: {context_length: 131072, input_price: 1.0, output_price: 2.0}
  pricey:
    type: openai
    base_url: http://127.0.0.1:10/v1
    models:
      big/long: {context_length: 131072, input_price: 3.0, output_price: 6.0}
      code/coder: {context_length: 65536, input_price: 0.5, output_price: 1.0, capabilities: [tools, json_schema]}
models:
  small/fast: {capabilities: [json]}
routes:
  auto:
    strategy: cost
    models: [small/fast, big/long]
    tasks:
      code: [code/coder]
"""
