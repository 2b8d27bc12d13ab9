"""Usage events as JSON Lines: one event per line, in `UsageEvent.to_json`'s field names.

Import validates each line on its own: a bad line is reported with its number and reason
and skipped, the good ones are imported. Ids make import idempotent (the store ignores ids
it already holds), so a file can be loaded twice without counting anything twice. The report
keeps the first `BAD_LINES_KEPT` bad lines and counts the rest: a binary file given by
mistake has hundreds of them, and a large one millions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from gateway.money import usd
from gateway.protocol.errors import echoed
from gateway.proxy.usage import MAX_TOKENS_PER_CALL
from gateway.usage.events import MAX_COST_USD, TOKEN_FIELDS, UsageEvent
from gateway.usage.store import UsageStore

_EVENT = TypeAdapter(UsageEvent)
_DERIVED = ("tokens",)  # written on export for readers, recomputed on import


BAD_LINES_KEPT = 20


@dataclass(slots=True)
class BadLine:
    number: int  # 1-based
    reason: str
    binary: bool = False  # holds a NUL byte: no text format does, so the file is not JSON Lines


@dataclass(slots=True)
class ImportReport:
    lines: int = 0
    imported: int = 0  # new events stored
    duplicates: int = 0  # valid events whose id was already stored
    bad: list[BadLine] = field(default_factory=list)  # the first BAD_LINES_KEPT bad lines
    bad_lines: int = 0  # every bad line, kept or not
    binary: bool = False  # some bad line held a NUL byte

    def add_bad(self, line: BadLine) -> None:
        self.bad_lines += 1
        self.binary = self.binary or line.binary
        if len(self.bad) < BAD_LINES_KEPT:
            self.bad.append(line)


def event_from_json(obj: Any) -> UsageEvent:
    """Validate one decoded line; raises ValueError with a readable reason."""
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    data = {k: v for k, v in obj.items() if k not in _DERIVED}
    try:
        event = _EVENT.validate_python(data)
    except ValidationError as exc:
        raise ValueError(_reason(exc)) from None
    if "tokens" in obj and obj["tokens"] != event.tokens:
        raise ValueError(
            f"tokens is {echoed(repr(obj['tokens']))} but prompt_tokens + completion_tokens is {event.tokens}"
        )
    return event


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "line"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def event_line(event: UsageEvent) -> bytes:
    return orjson.dumps(event.to_json()) + b"\n"


def _beyond_bounds(counts: Iterable[tuple[str, Any]], cost: Any) -> str | None:
    """Why a line's counts are past what the ledger takes from a call (`UsageEvent.from_call`
    bounds them), or None: history is refused by its line rather than changed."""
    for name, value in counts:
        if isinstance(value, int | float) and value > MAX_TOKENS_PER_CALL:
            return f"{name}: {value} is above the ledger's bound of {MAX_TOKENS_PER_CALL} tokens per call"
    if isinstance(cost, int | float) and not cost <= MAX_COST_USD:
        return f"cost: {cost} is above the ledger's bound of {usd(MAX_COST_USD)} per call"
    return None


def _line_beyond_bounds(obj: Any) -> str | None:
    """`_beyond_bounds` of a line as written (before validation, whose own complaints about
    such numbers would say less)."""
    if not isinstance(obj, dict):
        return None
    return _beyond_bounds(((name, obj.get(name)) for name in TOKEN_FIELDS), obj.get("cost"))


def _event_beyond_bounds(event: UsageEvent) -> str | None:
    """`_beyond_bounds` of the event as validated: a count written as a string ("1e300"),
    which validation reads as a number, is bounded like one."""
    return _beyond_bounds(((name, getattr(event, name)) for name in TOKEN_FIELDS), event.cost)


def parse_lines(lines: Iterable[bytes | str]) -> Iterator[tuple[int, UsageEvent | BadLine]]:
    """(line number, event or the reason it is bad); blank lines are skipped."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            beyond = _line_beyond_bounds(obj)
            if beyond is None:
                event = event_from_json(obj)
                beyond = _event_beyond_bounds(event)
                if beyond is None:
                    yield number, event
                    continue
            yield number, BadLine(number, beyond)
        except orjson.JSONDecodeError as exc:
            if ("\0" in line) if isinstance(line, str) else (b"\0" in line):
                yield number, BadLine(number, "binary data (a NUL byte), not JSON", binary=True)
            else:
                yield number, BadLine(number, f"not valid JSON: {exc}")
        except ValueError as exc:
            yield number, BadLine(number, str(exc))


async def import_lines(store: UsageStore, lines: Iterable[bytes | str], batch_size: int = 2000) -> ImportReport:
    report = ImportReport()
    batch: list[UsageEvent] = []

    async def flush() -> None:
        new = await store.import_events(batch)
        report.imported += new
        report.duplicates += len(batch) - new
        batch.clear()

    try:
        for number, item in parse_lines(lines):
            report.lines = number
            if isinstance(item, BadLine):
                report.add_bad(item)
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                await flush()
    except BaseException:
        # Reading stopped midway (EIO, a line longer than any event): the CLI says the lines
        # before it are imported, so the unfinished batch is written. A full batch is one
        # whose write failed (a written one is cleared): not written again, its error raised.
        if 0 < len(batch) < batch_size:
            await flush()
        raise
    if batch:
        await flush()
    return report


async def export_lines(events: AsyncIterator[UsageEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield event_line(event)
