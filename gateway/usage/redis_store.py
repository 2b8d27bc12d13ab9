"""The shared usage store for several gateway replicas: Redis, aggregates per UTC day.

Keys (prefix `usage`, one hash tag per day so that everything one event touches lives in
one Redis Cluster slot and one Lua script can update it atomically):

    {usage:2025-01-06}:model | :category | :app | :offer | :hist   hashes of counters
    {usage:2025-01-06}:titles                                        app -> title
    {usage:2025-01-06}:events                                        raw events (stream), for export
    {usage:2025-01-06}:seen:<event id>                               idempotency marker

A week's ranking reads a few hashes per day in one pipelined round trip, whatever the
number of calls behind them. The raw stream is bounded twice: trimmed to `stream_maxlen`
entries per day and expired `stream_ttl_s` after its last write; the aggregates are kept.
An event id is remembered for `dedupe_ttl_s`: a batch retried, or a file imported again,
within that time is never counted twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.usage.aggregates import PARTS, DayRows, IncrementBatch, event_increments
from gateway.usage.events import UsageEvent
from gateway.usage.jsonl import event_from_json
from gateway.usage.rankings import Period, all_days
from gateway.usage.store import UsageStore

if TYPE_CHECKING:
    from redis.asyncio import Redis

_DAY_KEYS = (*PARTS, "titles", "events")  # KEYS order the script relies on
_PART_INDEX = {part: i + 1 for i, part in enumerate(_DAY_KEYS)}  # Lua's 1-based KEYS index
_TITLES, _EVENTS = _PART_INDEX["titles"], _PART_INDEX["events"]

# Applies one day's events: for each event whose id is new, its increments, title and raw copy.
# KEYS: the day's keys in _DAY_KEYS order, then one `seen` key per event.
# ARGV: seen ttl, stream maxlen, stream ttl, then per event:
#       raw json, n, n x (key index, field, increment), app, title ('' when none).
_RECORD_DAY = f"""
local fixed = {len(_DAY_KEYS)}
local seen_ttl, maxlen, stream_ttl = ARGV[1], ARGV[2], ARGV[3]
local i = 4
local added = 0
for e = fixed + 1, #KEYS do
  local raw = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local first = i + 2
  i = first + 3 * n + 2
  if redis.call('SET', KEYS[e], '1', 'NX', 'EX', seen_ttl) then
    for j = first, first + 3 * (n - 1), 3 do
      redis.call('HINCRBY', KEYS[tonumber(ARGV[j])], ARGV[j + 1], ARGV[j + 2])
    end
    if ARGV[i - 1] ~= '' then
      redis.call('HSET', KEYS[{_TITLES}], ARGV[i - 2], ARGV[i - 1])
    end
    redis.call('XADD', KEYS[{_EVENTS}], 'MAXLEN', '~', maxlen, '*', 'e', raw)
    added = added + 1
  end
end
if added > 0 then
  redis.call('EXPIRE', KEYS[{_EVENTS}], stream_ttl)
end
return added
"""

_EXPORT_PAGE = 2000


class RedisUsageStore(UsageStore):
    name = "redis"

    def __init__(
        self,
        redis: "Redis",
        *,
        prefix: str = "usage",
        dedupe_ttl_s: int = 7 * 86400,
        stream_maxlen: int = 1_000_000,
        stream_ttl_s: int = 35 * 86400,
        owns_client: bool = False,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.dedupe_ttl_s = dedupe_ttl_s
        self.stream_maxlen = stream_maxlen
        self.stream_ttl_s = stream_ttl_s
        self._owns_client = owns_client
        self._script = redis.register_script(_RECORD_DAY)

    def key(self, day: date, name: str) -> str:
        return f"{{{self.prefix}:{day.isoformat()}}}:{name}"

    async def record(self, events: Sequence[UsageEvent]) -> int:
        by_day: dict[date, list[UsageEvent]] = {}
        for event in events:
            by_day.setdefault(event.day, []).append(event)
        if not by_day:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for day, day_events in by_day.items():
            keys = [self.key(day, name) for name in _DAY_KEYS]
            keys += [self.key(day, f"seen:{event.id}") for event in day_events]
            args: list[str | int | bytes] = [self.dedupe_ttl_s, self.stream_maxlen, self.stream_ttl_s]
            for event in day_events:
                increments = event_increments(event)
                args.append(orjson.dumps(event.to_json()))
                args.append(len(increments))
                for part, name, value in increments:
                    args += (_PART_INDEX[part], name, value)
                args += (event.app or "", event.app_title or "")
            await self._script(keys=keys, args=args, client=pipe)
        return sum(int(n) for n in await pipe.execute())

    async def load_increments(self, batch: IncrementBatch) -> None:
        """Bulk path for history known to be unique (benchmarks, migrations): add summed
        increments straight to the aggregates. No idempotency marker and no raw copy are
        written, so the same batch loaded twice counts twice and cannot be exported."""
        pipe = self.redis.pipeline(transaction=False)
        pending = 0
        for (day, part, name), value in batch.sums.items():
            pipe.hincrby(self.key(day, part), name, value)
            pending += 1
            if pending >= 10_000:
                await pipe.execute()
                pending = 0
        for (day, app), title in batch.titles.items():
            pipe.hset(self.key(day, "titles"), app, title)
        await pipe.execute()

    async def read_aggregates(self, spans: Mapping[str, Period]) -> dict[date, DayRows]:
        try:
            return await self._read_aggregates(spans)
        except (RedisConnectionError, RedisTimeoutError):
            # Reads are idempotent: after a Redis restart the first read may hit a pooled
            # connection the server closed; one more try opens a fresh one.
            return await self._read_aggregates(spans)

    async def _read_aggregates(self, spans: Mapping[str, Period]) -> dict[date, DayRows]:
        pipe = self.redis.pipeline(transaction=False)
        reads: list[tuple[date, str]] = []
        for part, span in spans.items():
            names = [part, "titles"] if part == "app" else [part]
            for day in span.dates():
                for name in names:
                    pipe.hgetall(self.key(day, name))
                    reads.append((day, name))
        results = await pipe.execute()
        days: dict[date, DayRows] = {}
        for (day, name), rows in zip(reads, results):
            if not rows:
                continue
            into = days.setdefault(day, DayRows())
            if name == "titles":
                into.titles = {k.decode(): v.decode() for k, v in rows.items()}
            else:
                into.parts[name] = rows  # bytes as Redis sent them: merged before anything is decoded
        return days

    async def export(self, start: date, end: date) -> AsyncIterator[UsageEvent]:
        for day in all_days([Period(start, end)]):
            key = self.key(day, "events")
            after = "-"
            while True:
                entries = await self.redis.xrange(key, min=after, max="+", count=_EXPORT_PAGE)
                for _, fields in entries:
                    yield event_from_json(orjson.loads(fields[b"e"]))
                if len(entries) < _EXPORT_PAGE:
                    break
                last_id = entries[-1][0]
                after = "(" + (last_id.decode() if isinstance(last_id, bytes) else last_id)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()
