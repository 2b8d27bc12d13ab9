"""What happened on one call, as usage and metrics see it.

The proxy path fills a `CallOutcome` as it goes and hands it to the observers once the
answer has been delivered (for streams: when the stream ends). Observers must not block:
they queue work, they do not do I/O on the request's time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from gateway.backends.errors import UpstreamError
from gateway.config.snapshot import Offer
from gateway.proxy.usage import Usage


@dataclass(slots=True)
class Attempt:
    backend: str
    model: str
    error: str | None = None  # bounded reason label; None for the attempt that answered
    status: int | None = None
    duration_s: float = 0.0
    retry_after_s: float | None = None  # the upstream's Retry-After, when it sent one
    malformed_events: int = 0  # stream events dropped as malformed after content (gateway.proxy.relay)
    # The failure says the backend is unwell (its circuit counts it): the error class's
    # `backend_fault` (gateway.backends.errors), read by routing without parsing `error`.
    backend_fault: bool = False
    # What this failed attempt cost upstream, for the operator (its ledger row, never billed
    # there): the tokens it delivered before breaking (a stream continued elsewhere; those the
    # key pays for through the call's final row, `CallOutcome.carry`), or the prompt of a hedge
    # that lost the race. None: it used nothing an upstream bills (an error status, no answer).
    usage: Usage | None = None
    cost_usd: float = 0.0  # of `usage`, at the attempt's offer's prices

    @classmethod
    def failed(cls, offer: Offer, error: UpstreamError, duration_s: float) -> Attempt:
        """The record of an attempt that ended in `error`."""
        return cls(
            offer.backend,
            offer.model,
            error.reason,
            error.status,
            duration_s,
            error.retry_after,
            backend_fault=error.backend_fault,
        )


@dataclass(slots=True)
class CallOutcome:
    request_id: str
    requested_model: str
    stream: bool
    started_at: float = field(default_factory=time.time)  # wall clock, UTC epoch seconds
    route: str | None = None
    task: str = "chat"
    offer: Offer | None = None  # the candidate that answered (or was last tried)
    app: str | None = None  # HTTP-Referer
    app_title: str | None = None  # X-OpenRouter-Title / X-Title
    api_key_name: str | None = None
    team: str | None = None  # the key's team, when it has one
    endpoint: str = "chat"  # the API the client called (`chat`, `messages`, ...), for the ledger
    status: int = 200
    error: str | None = None
    usage: Usage | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    ttft_s: float | None = None
    overhead_s: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    client_disconnected: bool = False
    # What earlier attempts delivered to the client before they broke (a continued stream),
    # and its cost at their prices: billed with the call (`billed_usage`, `bill`). None on
    # every call that was not continued.
    carried: Usage | None = None
    carried_cost_usd: float = 0.0

    def carry(self, delivered: Usage, offer: Offer) -> None:
        """An attempt on `offer` broke after delivering `delivered` (its prompt and the
        completion tokens the client read): the client pays for them with the call, at that
        offer's prices; the prompt once, the first attempt's."""
        earlier = self.carried
        if earlier is None:
            self.carried, self.carried_cost_usd = delivered, price_usd(offer, delivered)
            return
        self.carried = _continued(earlier, delivered)
        self.carried_cost_usd += price_usd(offer, _completion_of(delivered))

    @property
    def billed_usage(self) -> Usage | None:
        """The tokens the client received and pays for: `usage`, or for a continued call the
        first attempt's prompt and every completion token delivered, by whichever attempt
        (the continuing attempt's own prompt, the original plus the prefill, is the
        operator's cost, not the client's)."""
        carried, own = self.carried, self.usage
        if carried is None:
            return own
        if own is None:
            return carried
        return _continued(carried, own)

    def bill(self) -> None:
        """Set `cost_usd`, what the client's key is billed: `billed_usage` at the prices of
        the attempts that delivered it, each token once (`price_of`)."""
        billed = self.billed_usage
        if billed is not None:
            self.cost_usd = self.price_of(billed) if self.offer is not None else self.carried_cost_usd

    def price_of(self, total: Usage) -> float:
        """What `total`, the usage a client reads (for a continued stream, every token it was
        sent, as `billed_usage` counts them), costs as `bill` prices it: at the answering
        offer's prices, or, once continued, what earlier attempts delivered at theirs and
        the rest of the completion at the continuing offer's."""
        offer, carried = self.offer, self.carried
        if offer is None:
            return 0.0
        if carried is None:
            return price_usd(offer, total)
        rest = Usage(
            0,
            max(total.completion_tokens - carried.completion_tokens, 0),
            0,
            max(total.reasoning_tokens - carried.reasoning_tokens, 0),
        )
        return self.carried_cost_usd + price_usd(offer, rest)

    @property
    def upstream_cost_usd(self) -> float:
        """What the answering backend's own tokens (`usage`) cost at its prices: `cost_usd`,
        but for a continued call, whose bill also holds what earlier attempts delivered, its
        own prompt (the original and the prefill) and completion. Per backend, the metrics
        count this and each earlier attempt's `cost_usd`: what each backend charged."""
        if self.carried is None or self.offer is None or self.usage is None:
            return self.cost_usd
        return price_usd(self.offer, self.usage)

    @property
    def model(self) -> str | None:
        return self.offer.model if self.offer else None

    @property
    def backend(self) -> str | None:
        return self.offer.backend if self.offer else None

    @property
    def completion_tokens_per_second(self) -> float | None:
        """Generation speed of the answering attempt, as OpenRouter reports throughput.

        Only the attempt that answered counts (the last one): earlier failed attempts and
        the gateway's own time are not the model's speed. A streamed answer is timed after
        its first token (`ttft_s`, from that attempt's start); a non-streamed one has no
        first token apart from its end, so it is timed over the whole attempt.
        """
        usage = self.usage
        if not usage or not usage.completion_tokens or not self.attempts or self.carried is not None:
            return None  # a continued stream: its first token came from another attempt than its last
        answering_s = self.attempts[-1].duration_s
        generating = answering_s - self.ttft_s if self.stream and self.ttft_s is not None else answering_s
        return usage.completion_tokens / generating if generating > 1e-3 else None


def _continued(first: Usage, then: Usage) -> Usage:
    """What the client received of `first`, then of the attempt that continued it: `first`'s
    prompt (the continuing attempt's own prompt repeats it, plus the prefill) and both
    completions."""
    return Usage(
        first.prompt_tokens,
        first.completion_tokens + then.completion_tokens,
        first.cached_tokens,
        first.reasoning_tokens + then.reasoning_tokens,
        estimated=first.estimated or then.estimated,
        cache_write_tokens=first.cache_write_tokens,
    )


def _completion_of(usage: Usage) -> Usage:
    """`usage` without its prompt: what a continuing attempt delivered."""
    return Usage(0, usage.completion_tokens, 0, usage.reasoning_tokens)


def price_usd(offer: Offer, usage: Usage) -> float:
    """Cost from the backend's list prices (USD per 1M tokens). Prompt tokens read from a
    cache and written to one are parts of `prompt_tokens`, each priced at its own rate once."""
    spec = offer.spec
    cached = usage.cached_tokens if spec.cached_input_price is not None else 0
    written = usage.cache_write_tokens if spec.cache_write_price is not None else 0
    prompt_cost = (
        (usage.prompt_tokens - cached - written) * spec.input_price
        + cached * (spec.cached_input_price or 0.0)
        + written * (spec.cache_write_price or 0.0)
    )
    return (prompt_cost + usage.completion_tokens * spec.output_price) / 1_000_000


class CallObserver(Protocol):
    """Receives every call's lifecycle. Implementations must be cheap and non-blocking."""

    def attempt_started(self, offer: Offer) -> None: ...

    def attempt_finished(self, offer: Offer, attempt: Attempt, ttft_s: float | None) -> None: ...

    def call_finished(self, outcome: CallOutcome) -> None: ...


class Observers:
    """Fans one call's events out to every registered observer; one failing never stops the rest."""

    def __init__(self, observers: list[CallObserver] | None = None) -> None:
        self._observers: list[CallObserver] = list(observers or [])

    def add(self, observer: CallObserver) -> None:
        self._observers.append(observer)

    def attempt_started(self, offer: Offer) -> None:
        for o in self._observers:
            try:
                o.attempt_started(offer)
            except Exception:
                _log_observer_error(o)

    def attempt_finished(self, offer: Offer, attempt: Attempt, ttft_s: float | None) -> None:
        for o in self._observers:
            try:
                o.attempt_finished(offer, attempt, ttft_s)
            except Exception:
                _log_observer_error(o)

    def call_finished(self, outcome: CallOutcome) -> None:
        for o in self._observers:
            try:
                o.call_finished(outcome)
            except Exception:
                _log_observer_error(o)


def _log_observer_error(observer: object) -> None:
    import logging

    logging.getLogger("gateway.observers").exception("observer %s failed", type(observer).__name__)
