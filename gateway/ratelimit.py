"""The gateway's own limits at admission: which apply to a request, and the 429 when one is hit.

What applies: a virtual key's own limits (rpm, tpm, max_concurrent, budget) and its team's;
a static key's rpm from the routing YAML's `rate_limits.keys` / `default_key_rpm` (which
also give a virtual key without its own rpm one); and `rate_limits.routes` for the route
the request resolves to. Limits count what routing resolved, not the string sent: each name
in `model` and `models[]` resolved to its route (an OpenRouter suffix like `:floor` is
stripped). A limit naming a *model* (all clients together) acts like a provider's own rate
limit instead: it is checked per candidate by the fallback loop (`model_limit`, asked through
gateway.backends.inflight.CandidateGate), each attempt at the model counting once, so a
model at its limit is skipped for the next candidate, and the client gets 429 only when
every candidate is limited. A suffix or a fallback list cannot dodge it: it counts the
canonical model of the candidate actually called.

The counting itself (exact, reserve-then-settle) is gateway.tenants.limits; this module
builds the scopes, estimates the call, turns a refusal into OpenAI's 429 with Retry-After,
and settles when the call ends as a call observer (`call_finished`), so the chat route has
no accounting code at its end. A Redis that fails or is slow never fails a request: the
limiter counts the error, logs it once per outage, and counts locally until Redis answers
again (fail open).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config.schema import RateLimitsConfig
from gateway.money import usd
from gateway.protocol.errors import GatewayError, echoed, retry_headers
from gateway.proxy.usage import MAX_COST_USD
from gateway.routing.overrides import requested_models
from gateway.routing.resolve import resolve
from gateway.tenants.keys import Limits, VirtualKey
from gateway.tenants.limits import (
    MAX_PENDING,
    WINDOW_S,
    Ask,
    Clock,
    LocalCounters,
    RedisCounters,
    Refused,
    Scope,
    Window,
    estimate,
    needs_settling,
    to_nano,
)
from gateway.tenants.principal import Principal

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.config.snapshot import ConfigSnapshot, Offer
    from gateway.metrics import Metrics
    from gateway.protocol.chat import ChatRequest
    from gateway.proxy.outcome import Attempt, CallOutcome
    from gateway.routing.pipeline import RoutingDecision
    from gateway.usage.spend import DaySpend

log = logging.getLogger("gateway.ratelimit")

_STRICTLY_AFTER = 0.05  # at the exact moment the estimate equals the limit it still refuses
MAX_RENEWED_S = 86_400.0  # a call's ticket is renewed for a day at most (`renew_open_tickets`)
_NO_LIMITS = Limits()


def retry_after(limit: float, previous: float, current: float, elapsed: float) -> float:
    """Seconds until the sliding estimate drops below `limit` if no request comes meanwhile.

    `elapsed` is the fraction of the current window gone by. Within this window the
    estimate is previous * (1 - f) + current; in the next one, current * (1 - g).
    """
    if current < limit and previous > 0:
        fraction = 1.0 - (limit - current) / previous
        return max(fraction - elapsed, 0.0) * WINDOW_S + _STRICTLY_AFTER
    into_next = max(0.0, 1.0 - limit / current) if current else 0.0
    return (1.0 - elapsed + into_next) * WINDOW_S + _STRICTLY_AFTER


def format_reset(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: `12ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    rest = round(rest, 3)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def _until_clear(current: float, previous: float, elapsed: float) -> float:
    """Seconds until the sliding window holds nothing, if nothing more comes."""
    if current:
        return (2.0 - elapsed) * WINDOW_S
    return (1.0 - elapsed) * WINDOW_S if previous else 0.0


def key_rpm(key: VirtualKey, config: RateLimitsConfig) -> int | None:
    """The requests per minute a virtual key is held to: its own, else the routing YAML's
    `rate_limits.keys` entry for its name, else `default_key_rpm`."""
    own = key.limits.rpm
    return own if own is not None else config.keys.get(key.name, config.default_key_rpm)


def scopes_for(principal: Principal, names: tuple[str, ...], config: RateLimitsConfig) -> tuple[Scope, ...]:
    out = []
    name = principal.key_name
    key = principal.key
    if key is not None:
        lim = key.limits
        rpm = key_rpm(key, config)
        out.append(Scope("key", key.name, rpm, lim.tpm, lim.max_concurrent, lim.budget_usd, lim.budget_period, True))
        if principal.team is not None:
            t = principal.team_limits or _NO_LIMITS
            out.append(
                Scope("team", principal.team, t.rpm, t.tpm, t.max_concurrent, t.budget_usd, t.budget_period, True)
            )
    elif name is not None:
        rpm = config.keys.get(name, config.default_key_rpm)
        if rpm:
            out.append(Scope("key", name, rpm))
    for target in names:
        rpm = config.routes.get(target)
        if rpm:
            out.append(Scope("route", target, rpm))
    return tuple(out)


def resolved_names(chat: ChatRequest, decision: RoutingDecision, snapshot: ConfigSnapshot) -> tuple[str, ...]:
    """Every route the request names (in `model` or `models[]`), as routing resolved them."""
    names: list[str] = []
    for requested in requested_models(chat.fields, chat.model):
        target = resolve(requested, snapshot)  # memoized in the snapshot; unknown names raised already
        name = target.route_name  # a model's own limit is counted per candidate (model_limit)
        if name is not None and name not in names:
            names.append(name)
    return tuple(names)


def check_models(principal: Principal, chat: ChatRequest, snapshot: ConfigSnapshot) -> None:
    """403 unless every name in `model` and `models[]` matches one of the key's globs (as sent
    or as resolved; a listed route allows every candidate it routes to)."""
    if principal.key is not None and principal.key.models:
        check_model_names(principal, requested_models(chat.fields, chat.model), snapshot)


def check_model_names(principal: Principal, names: Iterable[str], snapshot: ConfigSnapshot) -> None:
    """`check_models` on names a request asks for (every one known to routing: `resolve`)."""
    key = principal.key
    if key is None or not key.models:
        return
    for requested in names:
        target = resolve(requested, snapshot)
        resolved = target.route_name or target.model or requested
        if target.alias is not None:
            # An alias maps the name elsewhere: what the key may use is where it goes (a glob
            # matching the name as sent must not open a route the key was not given).
            if key.allows(resolved):
                continue
        elif key.allows(requested) or key.allows(resolved):
            continue
        raise GatewayError(
            403,
            f"This key may not use `{echoed(requested)}`. It may use: {echoed(', '.join(key.models))}.",
            code="model_not_allowed",
            param="model",
        )


@dataclass(slots=True)
class Ticket:
    """An admitted request's claim, settled when its call ends."""

    scopes: tuple[Scope, ...]
    ask: Ask
    clock: Clock
    shared: bool  # counted in Redis (settle there) or locally
    window: Window
    renewed_until: float | None = None  # the deadline its last renewal gave it (else the ask's)

    @property
    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* for the first scope's (the key's) rpm and tpm."""
        first = self.scopes[0]
        f = self.clock.elapsed
        out = {}
        if first.rpm is not None:
            cur, prev = self.window.requests
            out["x-ratelimit-limit-requests"] = str(first.rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, math.floor(first.rpm - estimate(prev, cur, f))))
            out["x-ratelimit-reset-requests"] = format_reset(_until_clear(cur, prev, f))
        if first.tpm is not None:
            cur, prev = self.window.tokens
            out["x-ratelimit-limit-tokens"] = str(first.tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(first.tpm - estimate(prev, cur, f))))
            out["x-ratelimit-reset-tokens"] = format_reset(_until_clear(cur, prev, f))
        return out


class RateLimiter:
    def __init__(
        self,
        metrics: Metrics | None = None,
        redis: Redis | None = None,
        *,
        store_timeout_s: float = 0.5,
        store_retry_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        inflight_ttl_s: float = 600.0,
        lean_redis: bool = True,  # the script's own connection (False: through redis-py; the bench compares)
    ) -> None:
        self._metrics = metrics
        self._shared = RedisCounters(redis, lean=lean_redis) if redis is not None else None
        self._local = LocalCounters()
        self._store_timeout_s = store_timeout_s
        self._store_retry_s = store_retry_s
        self._clock = clock
        self._inflight_ttl_s = inflight_ttl_s
        self._store_down_until = 0.0  # monotonic; while in the future, count locally
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid()}.{os.urandom(3).hex()}."
        self._open: dict[int, Ticket] = {}  # id(outcome) -> its ticket, until call_finished
        self._last_clock: Clock | None = None
        # key name -> (principal, limits config, names, scopes): the scopes of the last request
        # of each key, reused while the same principal object (same key version) and config come.
        self._scopes: dict[str | None, tuple[Principal, RateLimitsConfig, tuple[str, ...], tuple[Scope, ...]]] = {}
        self._model_scopes: dict[tuple[str, int], Scope] = {}  # (model, rpm) -> its scope, built once
        self._settling: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False
        # After a failure of the store: the timer that sends the settlements kept for it.
        self._retry: asyncio.TimerHandle | None = None
        self._dropping = False  # settlements for Redis are being dropped (its queue is full)

    async def admit(
        self, principal: Principal, chat: ChatRequest, decision: RoutingDecision, snapshot: ConfigSnapshot
    ) -> Ticket | None:
        """None when no limit applies; the ticket to settle when admitted; raises 403 / 429."""
        config = snapshot.config.rate_limits
        if principal.key is None and not config.active:
            return None
        check_models(principal, chat, snapshot)
        names = resolved_names(chat, decision, snapshot) if config.routes else ()
        cached = self._scopes.get(principal.key_name)
        if cached is not None and cached[0] is principal and cached[1] is config and cached[2] == names:
            scopes = cached[3]
        else:
            scopes = scopes_for(principal, names, config)
            if len(self._scopes) >= 10_000:
                self._scopes.clear()
            self._scopes[principal.key_name] = (principal, config, names, scopes)
        if not scopes:
            return None
        now = self._clock()
        clock = self._last_clock = Clock.at(now, self._last_clock)
        tokens = nano = 0
        if any(s.tpm is not None or s.track_spend for s in scopes):
            # Routing already estimated the prompt and took max_tokens, else the YAML's
            # gateway.default_completion_tokens.
            facts = decision.facts
            if facts is not None:
                prompt, completion = facts.prompt_tokens, facts.completion_tokens
                # Routing reads max_completion_tokens first; an upstream may read max_tokens
                # only (DeepSeek's API knows no other), so a reservation takes the larger.
                most = chat.fields.get("max_tokens")
                if type(most) is int and most > completion:
                    completion = most
            else:
                prompt = chat.prompt_tokens()
                completion = snapshot.config.gateway.default_completion_tokens
            spend = completion
            ceiling = chat.completion_ceiling  # Anthropic's max_tokens: the answer cannot be longer
            if ceiling is not None:
                # Not a demand (Claude Code asks 32000+ on every call): tokens per minute
                # reserve the usual completion, never more than the ceiling; spend reserves the
                # longest answer a candidate can give, so a budget holds as it does for a
                # chat request that sets max_tokens.
                spend = _longest_answer(decision.candidates, ceiling, prompt)
                if ceiling < completion:
                    completion = ceiling
            copies = chat.fields.get("n")  # n answers (completions: best_of too), each up to max_tokens
            if type(copies) is int and copies > 1:
                completion *= copies
                spend *= copies
            if chat.batch > 1:  # a completions batch: each prompt and its answers
                prompt *= chat.batch
                completion *= chat.batch
                spend *= chat.batch
            tokens = prompt + completion
            if any(s.budget_usd is not None for s in scopes):
                nano = _estimate_nano(decision.candidates, prompt, spend)
        ask = Ask(self._id_prefix + str(next(self._ids)), tokens, nano, now + self._inflight_ttl_s)
        result, shared = await self._count(scopes, ask, clock)
        if isinstance(result, Refused):
            if self._metrics is not None:
                self._metrics.rate_limit_hit()
                self._metrics.limit_refused(result.kind, result.scope.kind)
            raise _refusal(result, ask, clock, decision.endpoint)
        return Ticket(scopes, ask, clock, shared, result)

    async def model_limit(self, model: str, rpm: int) -> float | None:
        """One call to `model` counted against its limit (all clients together): None when
        admitted, else the seconds until it has room (the candidate is skipped). Shared in Redis
        like every limit, with the same fail-open fallback to local counts."""
        scope = self._model_scopes.get((model, rpm))
        if scope is None:
            if len(self._model_scopes) >= 10_000:
                self._model_scopes.clear()
            scope = self._model_scopes[(model, rpm)] = Scope("route", model, rpm)
        now = self._clock()
        clock = self._last_clock = Clock.at(now, self._last_clock)
        ask = Ask(self._id_prefix + str(next(self._ids)), 0, 0, now + self._inflight_ttl_s)
        result, _ = await self._count((scope,), ask, clock)
        if not isinstance(result, Refused):
            return None
        if self._metrics is not None:
            self._metrics.limit_refused("rpm", "model")
        return retry_after(rpm - 1, result.previous, result.current, clock.elapsed)  # room for this one

    async def _count(self, scopes: tuple[Scope, ...], ask: Ask, clock: Clock) -> tuple[Refused | Window, bool]:
        """Admission's one step, in Redis (falling back to local counts when it fails) or locally;
        and whether it was counted in Redis."""
        store = self._shared
        if store is None:
            return self._local.admit(scopes, ask, clock), False
        if time.monotonic() >= self._store_down_until:
            try:
                async with asyncio.timeout(self._store_timeout_s):
                    result = await store.admit(scopes, ask, clock)
            except Exception as exc:
                self._store_failed(exc)
            else:
                if self._store_down_until:
                    log.warning("rate-limit store answers again: limits are shared across replicas")
                    self._store_down_until = 0.0
                    self._dropping = False
                if isinstance(result, Window) and result.spent:
                    self._local.mirror_spend(scopes, result.spent, clock)
                return result, True
        local = self._local.admit(scopes, ask, clock)
        if self._metrics is not None and isinstance(local, Window):
            self._metrics.admitted_on_local_counts()
        return local, False

    async def keep_open_tickets_alive(self) -> None:
        """The background task of `renew_open_tickets`, every third of the in-flight TTL."""
        while True:
            await asyncio.sleep(self._inflight_ttl_s / 3)
            await self.renew_open_tickets()

    async def renew_open_tickets(self) -> None:
        """Give the tickets of this process's calls still in flight a later deadline.

        The deadline is for calls whose replica died and will never settle them; without
        renewal it swept live ones too: a stream longer than GATEWAY_LIMITS_INFLIGHT_TTL_S
        lost its `max_concurrent` slot and budget reservation while it still ran (hostile
        testing). A ticket is renewed once it has less than two thirds of the TTL left, so
        with a pass every third of it none lapses; not past MAX_RENEWED_S after its call was
        admitted (a call never finished, a bug, then still frees its slot). Off the request
        path: one pass over the calls in flight, and one Redis round trip, per interval."""
        now = self._clock()
        renew_before = now + self._inflight_ttl_s * 2 / 3
        deadline = now + self._inflight_ttl_s
        shared: list[tuple[tuple[Scope, ...], str]] = []
        for ticket in list(self._open.values()):
            ask = ticket.ask
            current = ticket.renewed_until or ask.deadline
            if current > renew_before or ask.deadline + MAX_RENEWED_S < now:
                continue
            if not any(s.holds_tickets for s in ticket.scopes):
                continue
            ticket.renewed_until = deadline
            if ticket.shared:
                shared.append((ticket.scopes, ask.ticket))
            else:
                self._local.renew(ticket.scopes, ask.ticket, deadline)
        if shared and self._shared is not None:
            try:
                async with asyncio.timeout(self._store_timeout_s * 4):
                    await self._shared.renew(shared, deadline)
            except Exception as exc:
                self._store_failed(exc)

    def track(self, outcome: CallOutcome, ticket: Ticket | None) -> None:
        """Settle `ticket` when `outcome`'s call ends (call_finished)."""
        if ticket is not None:
            if len(self._open) > 100_000:  # calls that never finished (a bug elsewhere): forget the oldest
                self._open.pop(next(iter(self._open)))
            self._open[id(outcome)] = ticket

    def seed_spend(self, spends: Iterable[DaySpend]) -> None:
        """Start this process's spend counts (no Redis) from what the ledger says each key and
        team was billed today and this month, so a restart does not reset a budget."""
        clock = Clock.at(self._clock())
        for row in spends:
            day = "d" + row.day.strftime("%Y%m%d")
            for scope_id in (f"key:{row.key}" if row.key else None, f"team:{row.team}" if row.team else None):
                if scope_id is not None:
                    self._local.seed_spend(scope_id, day, row.cost_nanos, clock)

    async def spent(self, scope_id: str) -> tuple[float, float]:
        """USD spent today and this month (UTC) by a scope ("key:NAME", "team:NAME")."""
        clock = Clock.at(self._clock())
        if self._shared is not None and time.monotonic() >= self._store_down_until:
            try:
                async with asyncio.timeout(self._store_timeout_s):
                    day, month = await self._shared.spent(scope_id, clock)
                return day / 1e9, month / 1e9
            except Exception as exc:
                self._store_failed(exc)
        day, month = self._local.spent(scope_id, clock)
        return day / 1e9, month / 1e9

    # -- the call observer ------------------------------------------------------------------
    def attempt_started(self, offer: Offer) -> None:
        pass

    def attempt_finished(self, offer: Offer, attempt: Attempt, ttft_s: float | None) -> None:
        pass

    def call_finished(self, outcome: CallOutcome) -> None:
        ticket = self._open.pop(id(outcome), None)
        if ticket is None or not needs_settling(ticket.scopes):
            return
        usage = outcome.billed_usage  # every token the client received, once (a continued call: all attempts')
        tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
        # No call counts past the ledger's bound: the spend counters are 64-bit integers too.
        nano = to_nano(min(outcome.cost_usd, MAX_COST_USD)) if outcome.cost_usd else 0
        clock = self._last_clock = Clock.at(self._clock(), self._last_clock)
        if self._shared is None:
            self._local.settle(ticket.scopes, ticket.ask, ticket.clock.window, tokens, nano, clock)
            return
        if not ticket.shared:
            # Admitted on local counts while Redis failed: settled there, and queued for Redis
            # too (its spend; a ticket a timed-out admission may have left), sent with the
            # first call once Redis answers again, not retried against it meanwhile.
            self._local.settle(ticket.scopes, ticket.ask, ticket.clock.window, tokens, nano, clock)
            if not self._shared.settle_counted_locally(ticket.scopes, ticket.ask, nano, clock):
                self._settlement_dropped()
            if time.monotonic() < self._store_down_until:
                return
        else:
            self._shared.settle(ticket.scopes, ticket.ask, ticket.clock.window, tokens, nano, clock)
            if nano and ticket.ask.nano:  # a budgeted call: its mirror of Redis's spend follows (`_count`)
                self._local.add_spend(ticket.scopes, nano, clock)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        self._send_pending()

    def _retry_pending(self) -> None:
        self._retry = None
        self._send_pending()

    def _send_pending(self) -> None:
        if self._shared is not None and self._shared.pending:
            task = asyncio.get_running_loop().create_task(self._flush())
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _flush(self) -> None:
        assert self._shared is not None
        try:
            async with asyncio.timeout(self._store_timeout_s * 4):
                await self._shared.flush()
        except Exception as exc:
            # Kept (bounded) when Redis did not run them, and sent again when it is asked again
            # (`_store_failed`); past their deadline the tickets free their reservations.
            self._store_failed(exc)

    async def drain(self) -> None:
        """Send and wait for the settlements still queued or in flight (shutdown)."""
        if self._shared is not None and self._shared.pending:
            await self._flush()
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def aclose(self) -> None:
        """Shutdown: drain, then close the shared counters' own connection."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        await self.drain()
        if self._shared is not None:
            await self._shared.aclose()

    def _settlement_dropped(self) -> None:
        """A long outage filled the queue of settlements waiting for Redis: counted (as a
        limiter error), logged once per outage."""
        if self._metrics is not None:
            self._metrics.rate_limiter_error()
        if not self._dropping:
            self._dropping = True
            log.error(
                "rate-limit store still failing and %d settlements wait for it: "
                "the spend of further calls will be missing from Redis",
                MAX_PENDING,
            )

    def _store_failed(self, exc: BaseException) -> None:
        if self._metrics is not None:
            self._metrics.rate_limiter_error()
        if not self._store_down_until:
            log.error(
                "rate-limit store failed (%s: %s): counting locally, letting requests through, retrying in %gs",
                type(exc).__name__,
                exc,
                self._store_retry_s,
            )
        self._store_down_until = time.monotonic() + self._store_retry_s
        if self._shared is not None and self._retry is None:
            # What waits for Redis (settlements it refused or could not be sent, those of calls
            # admitted locally meanwhile) is sent when Redis is asked again, whether or not a
            # call comes to this process then: one that got none held them, and the tickets
            # they release held their slots on every replica, until the tickets' deadlines.
            self._retry = asyncio.get_running_loop().call_later(self._store_retry_s, self._retry_pending)


def _longest_answer(candidates: tuple[Offer, ...], ceiling: int, prompt: int) -> int:
    """The most tokens any candidate can answer with under `ceiling` (as each is asked)."""
    return max((offer.spec.longest_answer(ceiling, prompt) for offer in candidates), default=ceiling)


def _estimate_nano(candidates: tuple[Offer, ...], prompt: int, completion: int) -> int:
    """The call's cost at the dearest candidate's list prices: the side that never under-reserves."""
    # A prompt at the dearest rate it may be billed at (`Offer.prompt_price_ceiling`): reserved
    # at `input_price` alone, a prompt written to Anthropic's cache (1.25x, 2x for its one-hour
    # cache) overspent its key's budget, calls that set max_tokens included (hostile testing).
    top_in = max((o.prompt_price_ceiling for o in candidates), default=0.0)
    top_out = max((o.spec.output_price for o in candidates), default=0.0)
    return to_nano((prompt * top_in + completion * top_out) / 1_000_000)


_UNITS = {"rpm": "requests per minute", "tpm": "tokens per minute", "max_concurrent": "requests in flight"}
# How a refusal names its scope: a `rate_limits.routes` entry is a route's or a model's name.
_WHO = {"key": "key {}", "team": "team {}", "route": "{} (rate_limits.routes)"}
# What a client can cut, in its own API's words (embeddings have no answer to shorten).
_SHORTEN = {
    "responses": "Shorten the input or lower max_output_tokens",
    "embeddings": "Shorten the input",
}
_SHORTEN_CHAT = "Shorten the prompt or lower max_tokens"


def _too_large(scope: Scope, limit: str, headers: dict[str, str], endpoint: str) -> GatewayError:
    """A request that reserves more tokens than its scope's whole minute: no wait lets it
    through, so no Retry-After (a client honouring one would wait and be refused again), and
    `x-should-retry: false`, which the openai and anthropic SDKs read before retrying a 429.
    The status and code stay OpenAI's for a request too large for a tokens-per-minute limit."""
    return GatewayError(
        429,
        f"Request too large for {_WHO[scope.kind].format(f'`{scope.name}`')}: tpm ({limit}). "
        f"{_SHORTEN.get(endpoint, _SHORTEN_CHAT)}; retrying will not help.",
        code="rate_limit_exceeded",
        headers={"x-should-retry": "false", **headers},
        metadata={"limit": "tpm", "scope": scope.kind, "name": scope.name},
    )


def _over_budget(scope: Scope, ask: Ask, endpoint: str) -> GatewayError:
    """A request whose reservation alone is more than its scope's whole budget: a new period
    starts from nothing spent and refuses it all the same, so, as for a request too large
    for a tpm, no Retry-After (it named the period's end, hours away, and the anthropic SDK
    sleeps that long) and `x-should-retry: false`."""
    assert scope.budget_usd is not None
    return GatewayError(
        429,
        f"Request too large for {_WHO[scope.kind].format(f'`{scope.name}`')}: budget "
        f"({usd(scope.budget_usd)} per {scope.budget_period}): this request reserves {usd(ask.nano / 1e9)} "
        f"at its dearest candidate's prices. {_SHORTEN.get(endpoint, _SHORTEN_CHAT)}; retrying will not help.",
        code="budget_exceeded",
        headers={"x-should-retry": "false"},
        metadata={"limit": "budget", "scope": scope.kind, "name": scope.name},
    )


def _refusal(refused: Refused, ask: Ask, clock: Clock, endpoint: str) -> GatewayError:
    scope, kind = refused.scope, refused.kind
    headers = {}
    if kind == "rpm":
        assert scope.rpm is not None
        # Admitted when the estimate has room for this request (estimate + 1 <= rpm), as tpm's
        # below waits for room for its tokens: waiting only for "below rpm" was up to 60/rpm
        # seconds short (a full minute at rpm 1), so a client honouring it was refused again.
        wait = retry_after(scope.rpm - 1, refused.previous, refused.current, clock.elapsed)
        limit = f"{scope.rpm} {_UNITS[kind]}"
        headers = {"x-ratelimit-limit-requests": str(scope.rpm), "x-ratelimit-remaining-requests": "0"}
    elif kind == "tpm":
        assert scope.tpm is not None
        room = scope.tpm - ask.tokens
        limit = f"{scope.tpm} {_UNITS[kind]}, this request reserves {ask.tokens}"
        headers = {"x-ratelimit-limit-tokens": str(scope.tpm), "x-ratelimit-remaining-tokens": "0"}
        if room < 0:
            return _too_large(scope, limit, headers, endpoint)
        wait = retry_after(room, refused.previous, refused.current, clock.elapsed) if room > 0 else 2 * WINDOW_S
    elif kind == "max_concurrent":
        wait = 1.0
        limit = f"{scope.max_concurrent} {_UNITS[kind]}"
    else:
        assert scope.budget_usd is not None
        if ask.nano > to_nano(scope.budget_usd):
            return _over_budget(scope, ask, endpoint)
        spent_out = refused.current + ask.nano > to_nano(scope.budget_usd)
        wait = clock.period_end(scope.budget_period) - clock.now if spent_out else 1.0
        limit = f"{usd(scope.budget_usd)} per {scope.budget_period}, {usd(refused.current / 1e9)} spent"
    seconds = max(1, math.ceil(wait))
    # A budget that resets hours or weeks away: the message says when (SDK_WAIT_MAX_S).
    headers = {**retry_headers(seconds), **headers}
    return GatewayError(
        429,
        f"Rate limit reached for {_WHO[scope.kind].format(f'`{scope.name}`')}: {kind} ({limit}). "
        f"Retry after {seconds}s.",
        code="budget_exceeded" if kind == "budget" else "rate_limit_exceeded",
        headers=headers,
        metadata={"limit": kind, "scope": scope.kind, "name": scope.name},
    )
