"""The routing view of a batch of prompts: a legacy completions `prompt` list, an embeddings
`input` list (`gateway.protocol.completions`, `gateway.protocol.embeddings`).

Routing and the limiter read a batch as chat's `ChatRequest` made of its longest prompt,
counted `batch` times: what each prompt must fit, and an upper bound to reserve. What is not
an upper bound is the bill of a call whose upstream reports no usage: that is the estimate
of each prompt sent, summed (`BatchRequest.all_prompt_tokens`), not that many copies of the
longest (one long document and 99 short lines were billed as 100 long documents).
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.chat import ChatRequest
from gateway.protocol.tokens import estimate_prompt_tokens, estimate_text_tokens

# What a prompt routed alone costs beside its text: a one-message chat prompt's overhead.
_PER_PROMPT = estimate_prompt_tokens({"messages": [{"role": "user", "content": ""}]})


class BatchRequest(ChatRequest):
    """A `ChatRequest` view of more than one prompt, billed at their summed estimate."""

    __slots__ = ("batch_tokens",)

    def __init__(
        self, view: dict[str, Any], model: str, stream: bool, include_usage: bool, batch_tokens: int, batch: int
    ) -> None:
        super().__init__(view, model, stream, include_usage, batch=batch)
        self.batch_tokens = batch_tokens

    def all_prompt_tokens(self) -> int:
        return self.batch_tokens


def batch_tokens(prompts: list[str | list[int]], suffix: str | None = None) -> int:
    """The estimate of every prompt of a batch, each as the view would count it routed alone
    (a token array at its length; a completions `suffix` with each prompt)."""
    each = _PER_PROMPT + (estimate_text_tokens("\n" + suffix) if suffix else 0)
    return sum(each + (len(p) if isinstance(p, list) else estimate_text_tokens(p)) for p in prompts)


def routing_request(
    view: dict[str, Any],
    model: str,
    prompts: list[str | list[int]],
    stream: bool = False,
    include_usage: bool = False,
    suffix: str | None = None,
) -> ChatRequest:
    """The view of a request with these prompts: chat's for one, a `BatchRequest` for more."""
    if len(prompts) == 1:
        return ChatRequest(view, model, stream, include_usage)
    return BatchRequest(view, model, stream, include_usage, batch_tokens(prompts, suffix), len(prompts))
