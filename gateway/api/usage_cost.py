"""OpenRouter's usage accounting on the chat, text completions and embeddings APIs:
`usage: {"include": true}` in a request adds `cost` (USD) to the answer's `usage` object, in
the final usage chunk for streams. Chat and text completions price their answers here
(`priced_body`, `priced_stream`): the two share OpenAI's usage object, its streams' usage
chunk and the way a stream asks for it; embeddings' usage has prompt tokens alone
(`priced_embeddings`).

The cost is the gateway's own, at the serving backend's list prices (`price_usd`, the same
function the ledger and budgets use), so what a client reads is what its key was charged.
Only requests that ask pay for it: their answer is parsed and written again (a non-streamed
body once; a stream's events only when one carries `usage`); every other request takes
the untouched path. The `usage` field itself is the gateway's: it is not sent upstream (OpenAI
refuses unknown fields). Non-streamed answers carry `x-gateway-cost-usd` whatever was asked
(`gateway.api.ingress`): a stream's headers leave before its cost is known.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from gateway.config.snapshot import Offer
from gateway.protocol.chat import ChatRequest
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.outcome import price_usd
from gateway.proxy.usage import Usage


def wants_cost(payload: dict[str, Any]) -> bool:
    usage = payload.get("usage")
    return isinstance(usage, dict) and usage.get("include") is True


def usd_text(cost: float) -> str:
    """A cost for a header: plain decimal, no exponent, no trailing zeros (`0.00042`)."""
    text = f"{cost:.12f}".rstrip("0").rstrip(".")
    return text or "0"


def _with_cost(usage: Any, price: Callable[[Usage], float]) -> bool:
    """Add `cost` to an OpenAI usage object in place; False when it is not one."""
    parsed = Usage.from_openai(usage)
    if parsed is None:
        return False
    usage["cost"] = round(price(parsed), 12)
    return True


def body_with_cost(body: bytes, offer: Offer, billed: Usage | None = None) -> bytes:
    """A non-streamed chat or text completion with `usage.cost`. One whose upstream sent no
    usage gets the usage it was billed (`billed`: the prompt estimated, the answer's text
    counted), as a stream without usage gets the estimated usage chunk: a client that asked
    for its cost reads what its key was charged either way. As it was when neither is known."""
    answer = orjson.loads(body)  # the fallback loop already checked it is a JSON object
    if not isinstance(answer, dict):
        return body
    price = partial(price_usd, offer)
    if _with_cost(answer.get("usage"), price):
        return orjson.dumps(answer)
    if billed is None:
        return body
    answer["usage"] = {
        "prompt_tokens": billed.prompt_tokens,
        "completion_tokens": billed.completion_tokens,
        "total_tokens": billed.total_tokens,
        "cost": round(price(billed), 12),
    }
    return orjson.dumps(answer)


class CostStream:
    """Chat chunks forwarded as they are, except that an event carrying `usage` gains `cost`.

    Fed whole events (the relay's accountant cuts the stream at event boundaries); events
    without `"usage"` in their bytes are not parsed."""

    passthrough = False

    def __init__(self, price: Callable[[Usage], float], broken: Any) -> None:
        # The call's pricing (`CallOutcome.price_of`): a stream continued on another backend
        # after a break ends with a usage total whose parts are billed at different prices.
        self._price = price
        self.broken = broken  # the chat stream's own error event

    def feed(self, data: bytes) -> bytes:
        if data.find(b'"usage"') < 0:  # not `in`: see gateway/proxy/relay.py
            return data
        events = data.split(b"\n\n")
        for i, event in enumerate(events):
            if event.find(b'"usage"') >= 0 and event.startswith(b"data: {"):
                try:
                    chunk = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(chunk, dict) and _with_cost(chunk.get("usage"), self._price):
                    events[i] = b"data: " + orjson.dumps(chunk)
        return b"\n\n".join(events)

    def finish(self) -> bytes:
        return b""


def priced_body(opened: OpenedAnswer) -> bytes:
    """A non-streamed answer for a client that asked for its cost: priced at the backend that
    wrote it (the estimate it was billed when its upstream sent no usage)."""
    billed = opened.outcome.usage if opened.outcome is not None else None
    return body_with_cost(opened.body, opened.offer, billed)


def priced_embeddings(opened: OpenedAnswer) -> bytes:
    """An embeddings answer for a client that asked for its cost: `usage.cost` at the prompt
    tokens it was billed (an answer reporting only `total_tokens`, or none, included; an
    embeddings usage object has no completion)."""
    # The fallback loop already checked it is a JSON object, and kept it parsed when it
    # changed it (float lists encoded as the base64 asked for).
    billed = opened.outcome.usage if opened.outcome is not None else None
    if billed is None:
        return opened.body if opened.answer is None else orjson.dumps(opened.answer)
    answer = opened.answer if opened.answer is not None else orjson.loads(opened.body)
    if not isinstance(answer, dict):
        return opened.body
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        usage = answer["usage"] = {"prompt_tokens": billed.prompt_tokens, "total_tokens": billed.prompt_tokens}
    usage["cost"] = round(price_usd(opened.offer, billed), 12)
    return orjson.dumps(answer)


def priced_stream(opened: OpenedAnswer, broken: Any) -> CostStream:
    """The translator of a stream for a client that asked for its cost; `broken`: the
    ingress's own error event for a stream that broke off."""
    outcome = opened.outcome
    price = outcome.price_of if outcome is not None else partial(price_usd, opened.offer)
    return CostStream(price, broken)


def ask_for_usage(chat: ChatRequest) -> None:
    """A stream whose client asked for usage accounting gets the usage chunk, as with
    `stream_options.include_usage` (OpenRouter sends it for `usage.include` alone)."""
    if chat.stream:
        chat.include_usage = True
