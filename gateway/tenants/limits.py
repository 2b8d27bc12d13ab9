"""Per-scope limits (a virtual key, its team, a static key, a route or model) counted exactly,
in Redis for every replica or in this process's memory.

One admission checks every scope that applies, then counts in all of them, or refuses and
counts in none, in one step: one Lua script (one round trip) with Redis, one synchronous
call (no await in between) without. So N concurrent requests against a limit of L let
exactly L through, whichever replica they reach.

- rpm: requests per sliding minute (this minute's count + last minute's, weighted by the
  share of it still inside the last 60 s; see gateway.ratelimit.retry_after).
- tpm: tokens per sliding minute, prompt + completion. Admission reserves an estimate (the
  prompt estimate + `max_tokens`, else the YAML's `gateway.default_completion_tokens`) in the
  minute it was admitted; settlement adds the difference to the real usage to that minute.
- max_concurrent: calls in flight (a sorted set of tickets with a deadline, so a replica
  that dies holding slots frees them after GATEWAY_LIMITS_INFLIGHT_TTL_S; a live call's
  ticket is renewed while it runs, so a call longer than that keeps its slot).
- budget: USD per UTC day or month, counted in nano-dollars (integers, no float drift).
  Admission needs spent + reserved + this call's estimate <= budget and reserves the
  estimate (at the highest price among the call's candidates); settlement replaces it with
  the real cost. The budget is overspent only by calls whose real cost exceeds their
  estimate, by at most that excess, summed over the calls in flight when it ran out; with
  `max_tokens` set and a prompt estimate that does not undercount (bytes/3), not at all.
Every virtual key's and team's spend is also counted per UTC day and month, budget or not,
for GET /v1/key.

The script names its keys itself (from the scope ids) rather than through KEYS: they all
share one hash tag, so they live in one slot, which Redis Cluster needs for a script, but a
cluster proxy that checks declared keys would refuse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError, ResponseError

from gateway.tenants.keys import MAX_BUDGET_USD
from gateway.tenants.script_client import ScriptClient

if TYPE_CHECKING:
    from redis.asyncio import Redis

WINDOW_S = 60.0
NANO = 1_000_000_000
KEY_PREFIX = "{gw:rl}:"  # one hash tag: a script's keys must share a slot on Redis Cluster
KINDS = ("rpm", "tpm", "max_concurrent", "budget")
SPEND_TTL_MS = {"d": 3 * 86_400_000, "m": 63 * 86_400_000}


def to_nano(usd: float) -> int:
    # Bounded for a budget stored before `Limits` refused non-finite or huge ones: the
    # largest a budget may be now (one not finite counts as no smaller than that).
    if not usd <= MAX_BUDGET_USD:
        return math.ceil(MAX_BUDGET_USD * NANO)
    return math.ceil(usd * NANO - 1e-6)


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str  # "key" | "team" | "route"
    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"
    track_spend: bool = False  # count spend per day and month (virtual keys, teams)
    # Derived once: admission reads them on every request.
    id: str = field(init=False, compare=False, repr=False)
    holds_tickets: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.kind}:{self.name}")
        object.__setattr__(self, "holds_tickets", self.max_concurrent is not None or self.budget_usd is not None)


@dataclass(frozen=True, slots=True)
class Clock:
    """Everything admission derives from the time, computed once per request."""

    now: float
    window: int
    elapsed: float  # fraction of the current minute gone by
    day: str
    month: str

    @classmethod
    def at(cls, now: float, previous: Clock | None = None) -> Clock:
        """The clock at `now`; the day and month strings are reused from `previous` when it
        is of the same minute (they only change on a minute boundary)."""
        window = int(now // WINDOW_S)
        elapsed = (now % WINDOW_S) / WINDOW_S
        if previous is not None and previous.window == window:
            return cls(now, window, elapsed, previous.day, previous.month)
        t = datetime.fromtimestamp(now, UTC)
        return cls(now, window, elapsed, t.strftime("d%Y%m%d"), t.strftime("m%Y%m"))

    def period(self, period: str) -> str:
        return self.day if period == "day" else self.month

    def period_end(self, period: str) -> float:
        t = datetime.fromtimestamp(self.now, UTC)
        if period == "day":
            start = datetime(t.year, t.month, t.day, tzinfo=UTC).timestamp()
            return start + 86_400
        year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
        return datetime(year, month, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's claim: its ticket id and its estimates."""

    ticket: str
    tokens: int
    nano: int
    deadline: float  # epoch seconds after which an unsettled ticket is swept


@dataclass(frozen=True, slots=True)
class Refused:
    scope: Scope
    kind: str  # one of KINDS
    current: float = 0.0
    previous: float = 0.0


@dataclass(frozen=True, slots=True)
class Window:
    """The first scope's counts after admission, for the x-ratelimit-* headers."""

    requests: tuple[float, float]  # (current, previous)
    tokens: tuple[float, float]
    # Redis's spend of each scope with a budget, in its budget's period, before this call
    # (nano-USD, in the order of the scopes; -1 for one without): mirrored in the local
    # counters, so a budget used up in Redis stays enforced while Redis fails.
    spent: tuple[int, ...] = ()


def estimate(previous: float, current: float, elapsed: float) -> float:
    return previous * (1.0 - elapsed) + current


class LocalCounters:
    """The same counts in one process's memory (no Redis, or while Redis is down)."""

    def __init__(self) -> None:
        self._minute: dict[str, list[int]] = {}  # "rq:scope" / "tk:scope" -> [window, current, previous]
        self._tickets: dict[str, dict[str, tuple[float, int]]] = {}  # scope -> ticket -> (deadline, nano)
        self._reserved: dict[str, int] = {}  # scope -> nano reserved by its tickets
        self._spent: dict[str, int] = {}  # "scope:period" -> nano
        self._swept: dict[str, float] = {}  # scope -> when its tickets were last swept
        self._spend_bound = 1000  # totals past which past periods are swept (`_forget_old_periods`)
        self.spend_sweeps = 0  # how many times they were: each a rebuild of the spend table

    @property
    def spend_periods(self) -> int:
        """How many (scope, period) spend totals are kept: bounded, old periods are forgotten."""
        return len(self._spent)

    def _rolled(self, name: str, window: int) -> list[int]:
        entry = self._minute.get(name)
        if entry is None:
            entry = self._minute[name] = [window, 0, 0]
        elif entry[0] != window:
            entry[2] = entry[1] if entry[0] == window - 1 else 0
            entry[1] = 0
            entry[0] = window
        return entry

    def _sweep(self, scope: str, now: float) -> dict[str, tuple[float, int]]:
        """The scope's live tickets; those past their deadline are dropped (at most once a
        second: a sweep walks every ticket in flight)."""
        tickets = self._tickets.setdefault(scope, {})
        if now - self._swept.get(scope, 0.0) < 1.0:
            return tickets
        self._swept[scope] = now
        expired = [t for t, (deadline, _) in tickets.items() if deadline <= now]
        for t in expired:
            self._reserved[scope] = self._reserved.get(scope, 0) - tickets.pop(t)[1]
        return tickets

    def admit(self, scopes: tuple[Scope, ...], ask: Ask, clock: Clock) -> Refused | Window:
        w, f = clock.window, clock.elapsed
        for s in scopes:
            if s.rpm is not None:
                _, cur, prev = self._rolled("rq:" + s.id, w)
                if estimate(prev, cur, f) + 1 > s.rpm:
                    return Refused(s, "rpm", cur, prev)
            if s.tpm is not None:
                _, cur, prev = self._rolled("tk:" + s.id, w)
                if estimate(prev, cur, f) + ask.tokens > s.tpm:
                    return Refused(s, "tpm", cur, prev)
            if s.holds_tickets:
                tickets = self._sweep(s.id, clock.now)
                if s.max_concurrent is not None and len(tickets) >= s.max_concurrent:
                    return Refused(s, "max_concurrent", len(tickets))
                if s.budget_usd is not None:
                    spent = self._spent.get(f"{s.id}:{clock.period(s.budget_period)}", 0)
                    if spent + self._reserved.get(s.id, 0) + ask.nano > to_nano(s.budget_usd):
                        return Refused(s, "budget", spent)
        for s in scopes:
            if s.rpm is not None:
                self._rolled("rq:" + s.id, w)[1] += 1
            if s.tpm is not None:
                self._rolled("tk:" + s.id, w)[1] += ask.tokens
            if s.holds_tickets:
                nano = ask.nano if s.budget_usd is not None else 0
                self._tickets[s.id][ask.ticket] = (ask.deadline, nano)
                self._reserved[s.id] = self._reserved.get(s.id, 0) + nano
        first = scopes[0]
        rq = self._minute.get("rq:" + first.id, [w, 0, 0])
        tk = self._minute.get("tk:" + first.id, [w, 0, 0])
        return Window((rq[1], rq[2]), (tk[1], tk[2]))

    def renew(self, scopes: tuple[Scope, ...], ticket: str, deadline: float) -> None:
        """A live call's ticket gets a later deadline (RateLimiter.renew_open_tickets); one
        already settled or swept stays gone."""
        for s in scopes:
            if s.holds_tickets:
                tickets = self._tickets.get(s.id)
                held = tickets.get(ticket) if tickets is not None else None
                if tickets is not None and held is not None:
                    tickets[ticket] = (deadline, held[1])

    def settle(self, scopes: tuple[Scope, ...], ask: Ask, window: int, tokens: int, nano: int, clock: Clock) -> None:
        for s in scopes:
            if s.tpm is not None and tokens != ask.tokens:
                entry = self._minute.get("tk:" + s.id)
                if entry is not None:
                    if entry[0] == window:
                        entry[1] += tokens - ask.tokens
                    elif entry[0] == window + 1:
                        entry[2] += tokens - ask.tokens
            if s.holds_tickets:
                held = self._tickets.get(s.id, {}).pop(ask.ticket, None)
                if held is not None:
                    self._reserved[s.id] = self._reserved.get(s.id, 0) - held[1]
        if nano:
            self.add_spend(scopes, nano, clock)

    def add_spend(self, scopes: tuple[Scope, ...], nano: int, clock: Clock) -> None:
        """A call's cost, to today's and this month's spend of each scope that tracks it."""
        for s in scopes:
            if s.track_spend:
                for period in (clock.day, clock.month):
                    key = f"{s.id}:{period}"
                    if key not in self._spent and len(self._spent) >= self._spend_bound:
                        self._forget_old_periods(clock)
                    self._spent[key] = self._spent.get(key, 0) + nano

    def _forget_old_periods(self, clock: Clock) -> None:
        """Spend of past days and months is no longer read: keep memory to the current ones.
        The next sweep waits until the table has doubled: with thousands of keys spending
        today a sweep forgets nothing, and one on every new key's first spend was a rebuild
        of the whole table each time."""
        self.spend_sweeps += 1
        current = (f":{clock.day}", f":{clock.month}")
        self._spent = {k: v for k, v in self._spent.items() if k.endswith(current)}
        self._spend_bound = max(4 * len(self._tickets) + 1000, 2 * len(self._spent))

    def seed_spend(self, scope_id: str, day: str, nano: int, clock: Clock) -> None:
        """Add spend counted before this process (`day`: "dYYYYMMDD"): to today's total if it
        is today's, to this month's if it is of this month; older spend is not read."""
        if day == clock.day:
            key = f"{scope_id}:{day}"
            self._spent[key] = self._spent.get(key, 0) + nano
        if day.startswith(clock.month.replace("m", "d", 1)):
            key = f"{scope_id}:{clock.month}"
            self._spent[key] = self._spent.get(key, 0) + nano

    def mirror_spend(self, scopes: tuple[Scope, ...], spent: tuple[int, ...], clock: Clock) -> None:
        """Take Redis's spend of each budgeted scope (its budget's period) as this process's
        own: the counts it admits on while Redis fails start from there, not from zero."""
        for s, nano in zip(scopes, spent):
            if nano < 0 or s.budget_usd is None:
                continue
            key = f"{s.id}:{clock.period(s.budget_period)}"
            if key not in self._spent and len(self._spent) >= self._spend_bound:
                self._forget_old_periods(clock)
            self._spent[key] = nano

    def spent(self, scope_id: str, clock: Clock) -> tuple[int, int]:
        return self._spent.get(f"{scope_id}:{clock.day}", 0), self._spent.get(f"{scope_id}:{clock.month}", 0)


# One script for both steps, so that settlements can ride along with the next admission
# (one round trip per request under load) or go alone in batches (when no admission comes).
# ARGV[1]: how many settlements follow. Each: ticket, window, token delta, nano, day, month,
# scope count, then per scope: id, has tpm, holds tickets, tracks spend ("1" / "").
# Then, if an admission follows: window, elapsed, now_ms, ticket, tokens, nano, deadline_ms,
# ttl_ms, then per scope 6 fields: id, rpm, tpm, max_concurrent, budget (nano), budget period
# ("" = no such limit). Checks every scope before counting in any. Returns {0, rq_cur, rq_prev,
# tk_cur, tk_prev} for the first scope, then, if the ask reserves spend, each scope's spend in
# its budget period (-1 for a scope without a budget), when admitted; else {scope index, kind index, current, previous};
# {} for settlements alone.
_SCRIPT = """
local p = '{gw:rl}:'
-- The arguments come as one string, fields separated by \\31 (unit separator): redis-py
-- spends its CPU per argument, and this is the request path.
local ARGV = (function(s)
  local out, pos = {}, 1
  while true do
    local e = string.find(s, '\\31', pos, true)
    if not e then out[#out + 1] = string.sub(s, pos); return out end
    out[#out + 1] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
end)(ARGV[1])
local function num(k) return tonumber(redis.call('GET', k) or '0') end
local function release(id, ticket)
  redis.call('ZREM', p .. 'fl:' .. id, ticket)
  local held = redis.call('HGET', p .. 'rs:' .. id, ticket)
  if held then
    redis.call('HDEL', p .. 'rs:' .. id, ticket)
    redis.call('DECRBY', p .. 'rst:' .. id, held)
  end
end
-- Spend stops at the ledger's cap rather than overflow (INCRBY's error would fail the
-- whole call, other tenants' settlements with it): see gateway.usage.aggregates.SUM_CAP.
local function add_spend(k, amount)
  local done = redis.pcall('INCRBY', k, amount)
  if type(done) == 'table' and done.err then
    if not string.find(done.err, 'overflow', 1, true) then error(done) end
    redis.call('SET', k, '9000000000000000000')
  end
end
local i = 2
for _ = 1, tonumber(ARGV[1]) do
  -- Amounts go to INCRBY as the strings they came as: Lua writes a number of 10^14 or more
  -- as '1e+14', which INCRBY refuses (nano-dollars: a call of $100,000).
  local ticket, w, delta, nano = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]), ARGV[i+3]
  local day, month, n = ARGV[i+4], ARGV[i+5], tonumber(ARGV[i+6])
  i = i + 7
  for _ = 1, n do
    local id = ARGV[i]
    if ARGV[i+1] ~= '' and delta ~= 0 then
      local k = p .. 'tk:' .. id .. ':' .. w
      if redis.call('EXISTS', k) == 1 then redis.call('INCRBY', k, delta) end
    end
    if ARGV[i+2] ~= '' then release(id, ticket) end
    if ARGV[i+3] ~= '' and tonumber(nano) > 0 then
      local d, m = p .. 'sp:' .. id .. ':' .. day, p .. 'sp:' .. id .. ':' .. month
      add_spend(d, nano)
      redis.call('PEXPIRE', d, 259200000)
      add_spend(m, nano)
      redis.call('PEXPIRE', m, 5443200000)
    end
    i = i + 4
  end
end
if i > #ARGV then return {} end
local w, f, now = tonumber(ARGV[i]), tonumber(ARGV[i+1]), tonumber(ARGV[i+2])
local ticket, tokens, nano, deadline, ttl = ARGV[i+3], tonumber(ARGV[i+4]), tonumber(ARGV[i+5]), ARGV[i+6], ARGV[i+7]
local nano_text = ARGV[i+5]
local first = i + 8
local n = (#ARGV - first + 1) / 6
local function sweep(id)
  local gone = redis.call('ZRANGEBYSCORE', p .. 'fl:' .. id, '-inf', now)
  for _, t in ipairs(gone) do release(id, t) end
  return redis.call('ZCARD', p .. 'fl:' .. id)
end
for s = 1, n do
  local b = first + (s - 1) * 6
  local id, rpm, tpm, maxc, budget, period = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], ARGV[b+5]
  if rpm ~= '' then
    local cur, prev = num(p .. id .. ':' .. w), num(p .. id .. ':' .. (w - 1))
    if prev * (1 - f) + cur + 1 > tonumber(rpm) then return {s, 1, cur, prev} end
  end
  if tpm ~= '' then
    local cur, prev = num(p .. 'tk:' .. id .. ':' .. w), num(p .. 'tk:' .. id .. ':' .. (w - 1))
    if prev * (1 - f) + cur + tokens > tonumber(tpm) then return {s, 2, cur, prev} end
  end
  if maxc ~= '' or budget ~= '' then
    local inflight = sweep(id)
    if maxc ~= '' and inflight >= tonumber(maxc) then return {s, 3, inflight, 0} end
    if budget ~= '' then
      local spent = num(p .. 'sp:' .. id .. ':' .. period)
      if spent + num(p .. 'rst:' .. id) + nano > tonumber(budget) then return {s, 4, spent, 0} end
    end
  end
end
for s = 1, n do
  local b = first + (s - 1) * 6
  local id, rpm, tpm, maxc, budget = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4]
  if rpm ~= '' then
    local k = p .. id .. ':' .. w
    if redis.call('INCR', k) == 1 then redis.call('PEXPIRE', k, ttl) end
  end
  if tpm ~= '' then
    local k = p .. 'tk:' .. id .. ':' .. w
    redis.call('INCRBY', k, ARGV[i+4])
    redis.call('PEXPIRE', k, ttl)
  end
  if maxc ~= '' or budget ~= '' then
    redis.call('ZADD', p .. 'fl:' .. id, deadline, ticket)
    if budget ~= '' then
      redis.call('HSET', p .. 'rs:' .. id, ticket, nano_text)
      redis.call('INCRBY', p .. 'rst:' .. id, nano_text)
    end
  end
end
local id = ARGV[first]
local out = {0, num(p .. id .. ':' .. w), num(p .. id .. ':' .. (w - 1)),
             num(p .. 'tk:' .. id .. ':' .. w), num(p .. 'tk:' .. id .. ':' .. (w - 1))}
if nano > 0 then  -- a scope has a budget (the ask reserves against it): each scope's spend
  for s = 1, n do
    local b = first + (s - 1) * 6
    if ARGV[b+4] ~= '' then out[#out + 1] = num(p .. 'sp:' .. ARGV[b] .. ':' .. ARGV[b+5]) else out[#out + 1] = -1 end
  end
end
return out
"""

_KIND_INDEX = {1: "rpm", 2: "tpm", 3: "max_concurrent", 4: "budget"}
MAX_PENDING = 10_000  # settlements waiting for Redis (an outage's: see `settle_counted_locally`)
# One argument of the script, before `_pack` joins them: "" stands for "no limit" (Lua's nil).
ScriptArg = str | int | float
_TTL_MS = int(2 * WINDOW_S * 1000) + 5000


# Error replies with which Redis refuses a script before it has written anything: at
# `maxmemory` (the state Redis runs `noeviction`; the OOM refusal comes only at the script's
# first write, never after one), a read-only replica, a dataset loading, another script
# running, writes stopped for a failed snapshot or too few replicas, a replica cut off from
# its master. Nothing of the call ran, so the settlements it carried are kept and sent again,
# as after a lost connection (a ticket dropped there held its slot and reservation until its
# deadline, and the call's spend never reached Redis).
_REFUSED_UNRUN = frozenset({"OOM", "READONLY", "LOADING", "BUSY", "MISCONF", "NOREPLICAS", "MASTERDOWN"})


def _not_run(exc: BaseException) -> bool:
    """Whether Redis certainly did not run the call that raised `exc` (see _REFUSED_UNRUN).
    redis-py's own client names some of these errors by class and drops the prefix from the
    message; the script's lean client keeps the reply's text."""
    if isinstance(exc, (RedisConnectionError, OutOfMemoryError, ReadOnlyError, MasterDownError)):
        return True  # BusyLoadingError (LOADING) is a ConnectionError
    return isinstance(exc, ResponseError) and str(exc).split(" ", 1)[0] in _REFUSED_UNRUN


def _opt(value: float | int | None) -> ScriptArg:
    return "" if value is None else value


def _pack(args: list[ScriptArg]) -> str:
    return "\x1f".join(map(str, args))


def needs_settling(scopes: tuple[Scope, ...]) -> bool:
    return any(s.tpm is not None or s.holds_tickets or s.track_spend for s in scopes)


class RedisCounters:
    """The same counts in Redis, shared by every replica.

    Settlements wait in `_pending` and go with the next admission's script call, or, if none
    comes before the event loop's next turn, together in one call of their own: one round
    trip per request under load, never a settlement held back longer than one loop turn.
    """

    def __init__(self, redis: Redis, *, lean: bool = True) -> None:
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)
        # The script's own pipelined connection (gateway.tenants.script_client): a third of
        # redis-py's client CPU per call; None (redis-py) for TLS, sockets, clusters.
        self._lean = ScriptClient.for_client(redis, _SCRIPT) if lean else None
        self._pending: list[list[ScriptArg]] = []  # settlement argument groups
        self._flush_scheduled = False

    def _take_pending(self) -> list[ScriptArg]:
        if not self._pending:
            return [0]
        groups, self._pending = self._pending, []
        out: list[ScriptArg] = [len(groups)]
        for g in groups:
            out += g
        return out

    async def admit(self, scopes: tuple[Scope, ...], ask: Ask, clock: Clock) -> Refused | Window:
        args = self._take_pending()
        args += [
            clock.window, clock.elapsed, int(clock.now * 1000), ask.ticket,
            ask.tokens, ask.nano, int(ask.deadline * 1000), _TTL_MS,
        ]  # fmt: skip
        for s in scopes:
            budget = "" if s.budget_usd is None else to_nano(s.budget_usd)
            period = clock.period(s.budget_period) if s.budget_usd is not None else ""
            args += [s.id, _opt(s.rpm), _opt(s.tpm), _opt(s.max_concurrent), budget, period]
        try:
            result = await self._run(_pack(args))
        except Exception as exc:
            if _not_run(exc):
                self._restore(args)
            raise
        if result[0]:
            return Refused(scopes[int(result[0]) - 1], _KIND_INDEX[int(result[1])], float(result[2]), float(result[3]))
        spent = tuple(int(v) for v in result[5:])
        return Window((float(result[1]), float(result[2])), (float(result[3]), float(result[4])), spent)

    async def _run(self, packed: str) -> Any:
        if self._lean is not None:
            return await self._lean.run(packed)
        return await self._script(keys=[], args=[packed])

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()

    def settle(self, scopes: tuple[Scope, ...], ask: Ask, window: int, tokens: int, nano: int, clock: Clock) -> None:
        """Queue the settlement; it reaches Redis with the next call (see the class docstring)."""
        group: list[ScriptArg] = [ask.ticket, window, tokens - ask.tokens, nano, clock.day, clock.month, len(scopes)]
        for s in scopes:
            group += [
                s.id,
                "1" if s.tpm is not None else "",
                "1" if s.holds_tickets else "",
                "1" if s.track_spend else "",
            ]
        self._pending.append(group)

    def settle_counted_locally(self, scopes: tuple[Scope, ...], ask: Ask, nano: int, clock: Clock) -> bool:
        """Queue, for a call admitted on local counts while Redis failed, what Redis must still
        learn of it: its spend (else a budget forgets what was billed during an outage), and
        the release of its ticket, which Redis holds if the admission that timed out ran after
        all (a hung Redis runs what waited in its socket when it resumes: without this, that
        slot and reservation stayed taken until the ticket's deadline, minutes later). Its
        tokens are left out: Redis's minute never counted them, or counted them in full.
        False when the queue is full (a long outage: the rest is lost)."""
        if not any(s.holds_tickets or s.track_spend for s in scopes):
            return True  # only minute counts: nothing Redis must still learn
        if len(self._pending) >= MAX_PENDING:
            return False
        group: list[ScriptArg] = [ask.ticket, clock.window, 0, nano, clock.day, clock.month, len(scopes)]
        for s in scopes:
            group += [s.id, "", "1" if s.holds_tickets else "", "1" if s.track_spend else ""]
        self._pending.append(group)
        return True

    async def flush(self) -> None:
        """Send the settlements no admission took along."""
        self._flush_scheduled = False
        args = self._take_pending()
        if args[0]:
            try:
                await self._run(_pack(args))
            except Exception as exc:
                if _not_run(exc):
                    self._restore(args)
                raise

    def _restore(self, args: list[ScriptArg]) -> None:
        """A call that Redis did not run carried settlements: keep them for the next try,
        if there is room (a Redis down for long loses them: the tickets' deadlines free their
        reservations). Only when it certainly did not run (a lost connection, `_not_run`):
        after a timeout the script may have run, and settling twice would count spend twice."""
        if args[0] and len(self._pending) < MAX_PENDING:
            # Rebuild the groups from the flat list.
            i = 1
            for _ in range(int(args[0])):
                n = int(args[i + 6])
                end = i + 7 + 4 * n
                self._pending.append(args[i:end])
                i = end

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    async def renew(self, tickets: list[tuple[tuple[Scope, ...], str]], deadline: float) -> None:
        """Later deadlines for live calls' tickets (RateLimiter.renew_open_tickets), in one
        round trip; a ticket no longer held (settled, or swept) is not added back (XX)."""
        score = int(deadline * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            for scopes, ticket in tickets:
                for s in scopes:
                    if s.holds_tickets:
                        pipe.zadd(f"{KEY_PREFIX}fl:{s.id}", {ticket: score}, xx=True)
            await pipe.execute()

    async def spent(self, scope_id: str, clock: Clock) -> tuple[int, int]:
        day, month = await self._redis.mget(
            f"{KEY_PREFIX}sp:{scope_id}:{clock.day}", f"{KEY_PREFIX}sp:{scope_id}:{clock.month}"
        )
        return int(day or 0), int(month or 0)
