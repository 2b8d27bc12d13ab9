"""`UsageEvent`: one call as the ledger records it, and how it is built from a `CallOutcome`
(by way of `FinishedCall`, the plain values the recorder buffers until it writes).

Field names are the ledger's public format (JSONL import/export, the rankings): they change
only in backward-compatible ways (a field added later has a default, so older files load).
Attribution follows OpenRouter: `HTTP-Referer` identifies the app, `X-OpenRouter-Title`/`X-Title`
names it; without either, the API key's name stands in (the key's name is also kept as `key`).

Every attempt of a call is a row (issue 12): a call that fell back twice before an answer is
three events sharing `call_id`, attempts 1 and 2 with `final=false` (their status, error,
backend, model and latency) and attempt 3 with `final=true`, the row that ended the call
(what a call was before attempts had rows). Rankings and aggregates count only final rows.

Billing: the final row's tokens and cost are what the client's key is billed, each token it
received once (a stream continued elsewhere: the first prompt, every completion token
delivered by either attempt, each at its attempt's prices). A `final=false` row is never
billed: its tokens and cost are the operator's upstream cost (the tokens a broken stream
delivered, repeated there for the operator; the losing hedge's prompt, estimated); an attempt
that got an error status costs nothing. An event's id is `<call_id>-<attempt>`: a batch retried carries the same ids.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import Field

from gateway.proxy.outcome import CallOutcome
from gateway.proxy.usage import MAX_COST_USD as MAX_COST_USD  # the ledger's bound too; re-exported
from gateway.proxy.usage import MAX_TOKENS_PER_CALL

# The gateway's task names mapped to OpenRouter's category names where one fits.
TASK_CATEGORIES = {"code": "programming"}
# Embedding calls are their own category whatever task they carry: their tokens are prompt
# tokens at a fraction of chat prices, and counted among chat categories they would distort
# every chat leaderboard (a RAG indexer embeds millions of tokens an hour).
EMBEDDINGS_CATEGORY = "embeddings"

_MAX_LABEL = 256  # app names come from client headers: keep them bounded

NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # inf crashed the store's histograms
NonNegativeInt = Annotated[int, Field(ge=0)]
# Attempts of one call, as an imported line may claim them: far above any fallback chain, and
# within SQLite's 64-bit integers (2**63 crashed the import with a traceback).
MAX_ATTEMPTS = 10**9
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cache_write_tokens")
# Names become parts of storage keys: printable, no control characters.
Name = Annotated[str, Field(min_length=1, max_length=_MAX_LABEL, pattern=r"^[^\x00-\x1f\x7f]+$")]


def category_of(task: str, endpoint: str = "chat") -> str:
    if endpoint == "embeddings":
        return EMBEDDINGS_CATEGORY
    return TASK_CATEGORIES.get(task, task)


def author_of(model: str) -> str:
    return model.split("/", 1)[0]


# What a label loses besides C0 controls and DEL: the C1 controls (U+0080-U+009F; U+009B is
# a terminal's CSI, so a title held `\x9b31m` coloured `gateway rankings` output and could
# move its cursor), the bidirectional overrides and isolates (a title reversing the columns
# after it: "Trojan Source"), and the line and paragraph separators (a title breaking a row).
_UNSAFE = frozenset(
    [chr(c) for c in range(0x80, 0xA0)]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u2028", "\u2029"]
)


def clean_label(value: str | None) -> str | None:
    """A header-supplied label, bounded and free of control characters: those keys are built
    with, and those that would act on the terminal or page that shows it (`_UNSAFE`)."""
    if value is None:
        return None
    if not value.isprintable():  # rare: only then pay for the character-by-character filter
        value = "".join(ch for ch in value if ch >= " " and ch != "\x7f" and ch not in _UNSAFE)
    return value.strip()[:_MAX_LABEL] or None


def header_label(value: str | None) -> str | None:
    """`clean_label` for a request header's text. ASGI servers hand header bytes over as they
    came and the gateway reads them as Latin-1 (HTTP's historical charset), so a title a
    client sent in UTF-8 (`curl -H 'X-Title: Café'`) arrives as `CafÃ©`: read it back as UTF-8
    when its bytes are UTF-8, before the filter (the C1 range holds UTF-8 continuation bytes)."""
    if value is not None and not value.isascii():
        try:
            value = value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass  # not UTF-8 bytes (or already text): kept as it was
    return clean_label(value)


def _thousandths(value: float) -> float:
    """`round(value, 3)` at a third of its cost (the same result for the magnitudes recorded)."""
    return round(value * 1000) / 1000


def new_call_id() -> str:
    """A call's id in the ledger (see `new_event_id`); its rows' ids are `<call id>-<attempt>`."""
    return new_event_id()


def event_id(call_id: str, attempt: int) -> str:
    return f"{call_id}-{attempt}"


def new_event_id() -> str:
    """32 hex digits: the time in milliseconds, then 80 random bits. Ids made later sort later,
    so a store's id index grows at its end instead of at random places. The bits come from
    `random` (seeded from the OS, reseeded in forked children): ids need to be unique, not
    secret, and a system call per id would cost more than the rest of the id. One 128-bit
    number written as hex by `bytes.hex` (0.3 us; two formatted fields cost 0.7)."""
    return (time.time_ns() // 1_000_000 << 80 | random.getrandbits(80)).to_bytes(16, "big").hex()


@dataclass(slots=True)
class UsageEvent:
    id: Annotated[str, Field(min_length=1, max_length=200)]
    timestamp: datetime  # when the call started, UTC
    model: Annotated[str, Field(max_length=_MAX_LABEL, pattern=r"^[^/\s]+/\S+$")]  # canonical author/slug
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    backend: Name = "unknown"
    author: str = ""  # always the part of `model` before `/` (set on creation)
    route: str | None = None
    category: Name = "chat"
    app: str | None = None
    app_title: str | None = None
    cached_tokens: NonNegativeInt = 0
    reasoning_tokens: NonNegativeInt = 0
    cost: NonNegativeFloat = 0.0  # USD
    latency_ms: NonNegativeFloat | None = None
    ttft_ms: NonNegativeFloat | None = None
    tokens_per_second: NonNegativeFloat | None = None  # completion tokens per second
    status: Annotated[int, Field(ge=100, le=599)] = 200
    attempts: Annotated[int, Field(ge=0, le=MAX_ATTEMPTS)] = 1
    estimated: bool = False  # token counts estimated: the upstream reported none
    request_id: str | None = None  # the x-request-id (a client may send its own: not unique)
    # Fields added with ledger schema version 1 (all defaulted: older events load unchanged).
    # The API the client called: `chat`, `messages`, `responses`, `embeddings`, `completions`.
    endpoint: Annotated[str, Field(pattern=r"^[a-z][a-z_]{0,31}$")] = "chat"
    key: str | None = None  # the client API key's name (never the key)
    team: str | None = None  # the key's team
    call_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None  # shared by a call's attempts
    attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] = 1  # 1-based, within the call
    final: bool = True  # the row that ended the call; rankings count only these
    error: str | None = None  # bounded reason label of a failed attempt or call (`timeout`, `http_503`, ...)
    cache_write_tokens: NonNegativeInt = 0  # prompt tokens written to a prompt cache (part of prompt_tokens)

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            self.timestamp = self.timestamp.replace(tzinfo=UTC)
        elif self.timestamp.utcoffset():
            try:
                self.timestamp = self.timestamp.astimezone(UTC)
            except OverflowError:  # 0001-01-01T00:00+01:00: an imported line's problem, not a crash
                raise ValueError("timestamp falls outside the years 1-9999 once in UTC") from None
        self.author = author_of(self.model)
        self.app = header_label(self.app)
        self.app_title = header_label(self.app_title)
        self.key = clean_label(self.key)
        self.team = clean_label(self.team)
        self.error = clean_label(self.error)

    @property
    def tokens(self) -> int:
        """What rankings count: prompt + completion (reasoning is part of completion)."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def day(self) -> date:
        return self.timestamp.date()

    @property
    def timestamp_text(self) -> str:
        """The timestamp as the ledger writes it: ISO 8601, microseconds, `Z`."""
        return self.timestamp.isoformat(timespec="microseconds").replace("+00:00", "Z")

    @property
    def succeeded(self) -> bool:
        return self.status < 400

    def to_json(self) -> dict[str, Any]:
        """The JSONL shape: one flat object, timestamp in ISO 8601 with `Z`."""
        return {
            "id": self.id,
            "timestamp": self.timestamp_text,
            "route": self.route,
            "model": self.model,
            "author": self.author,
            "backend": self.backend,
            "category": self.category,
            "app": self.app,
            "app_title": self.app_title,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost": self.cost,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "tokens_per_second": self.tokens_per_second,
            "status": self.status,
            "attempts": self.attempts,
            "estimated": self.estimated,
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "key": self.key,
            "team": self.team,
            "call_id": self.call_id,
            "attempt": self.attempt,
            "final": self.final,
            "error": self.error,
            "cache_write_tokens": self.cache_write_tokens,
        }

    @classmethod
    def from_outcome(cls, outcome: CallOutcome) -> UsageEvent | None:
        """The event for a finished call; None when it never reached a backend."""
        call = finished_call(outcome)
        return None if call is None else cls.from_call(call)

    @classmethod
    def from_call(cls, call: FinishedCall) -> UsageEvent:
        (
            call_id,
            attempt,
            final,
            started_at,
            model,
            backend,
            route,
            task,
            app,
            app_title,
            api_key_name,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reasoning_tokens,
            estimated,
            cost_usd,
            latency_s,
            ttft_s,
            tokens_per_second,
            status,
            attempts,
            request_id,
            endpoint,
            team,
            error,
            cache_write_tokens,
        ) = call
        # The ledger's bounds, for a call's values however they were made (a sum of bounded
        # reports: an Anthropic prompt's parts, a continued stream's completions): what the
        # stores sum must fit their 64-bit integers.
        if (
            max(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cache_write_tokens)
            > MAX_TOKENS_PER_CALL
        ):
            prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cache_write_tokens = (
                min(n, MAX_TOKENS_PER_CALL)
                for n in (prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cache_write_tokens)
            )
        if cost_usd > MAX_COST_USD:
            cost_usd = MAX_COST_USD
        return cls(
            id=event_id(call_id, attempt),
            timestamp=datetime.fromtimestamp(started_at, UTC),
            model=model,
            backend=backend,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            route=route,
            category=category_of(task, endpoint),
            app=app or app_title or api_key_name,
            app_title=app_title,
            cached_tokens=cached_tokens,
            reasoning_tokens=reasoning_tokens,
            cost=cost_usd,
            latency_ms=_thousandths(latency_s * 1000),
            ttft_ms=_thousandths(ttft_s * 1000) if ttft_s is not None else None,
            tokens_per_second=_thousandths(tokens_per_second) if tokens_per_second is not None else None,
            status=status,
            attempts=attempts,
            estimated=estimated,
            request_id=request_id,
            endpoint=endpoint,
            key=api_key_name,
            team=team,
            call_id=call_id,
            attempt=attempt,
            final=final,
            error=error,
            cache_write_tokens=cache_write_tokens,
        )


# What the ledger keeps of a finished call (or of one failed attempt of it) until its event is
# written: plain values, in the order `finished_call` packs them and `UsageEvent.from_call`
# unpacks them, the call's id and the attempt's number first (the event's id is made of them;
# the call's id is given when the call finishes, so that a batch retried, or handed to a
# restarted writer process, carries the same ids and is not counted twice). The recorder
# buffers these rather than `CallOutcome`s: Python's cyclic garbage collector stops tracking
# a plain tuple of numbers and strings at its first collection (not a named tuple, not an
# object), while an outcome, with its attempts and usage objects, would be traversed by every
# collection until its batch is written: at thousands of calls a second, measurably slower.
FinishedCall = tuple[
    str,  # call_id
    int,  # attempt
    bool,  # final
    float,
    str,
    str,
    str | None,
    str,
    str | None,
    str | None,
    str | None,
    int,
    int,
    int,
    int,
    bool,
    float,
    float,
    float | None,
    float | None,
    int,
    int,
    str | None,  # request_id
    str,  # endpoint
    str | None,  # team
    str | None,  # error
    int,  # cache_write_tokens
]


def finished_call(outcome: CallOutcome) -> FinishedCall | None:
    """The call's values for the ledger; None for a call that never reached a backend (it used nothing)."""
    offer = outcome.offer
    if offer is None:
        return None
    # What the client received and is billed for (a continued call: every attempt's delivered
    # tokens, each once); a call that failed before any answer carries none.
    usage = outcome.billed_usage
    estimated = bool(usage and usage.estimated)
    return (
        new_call_id(),
        max(len(outcome.attempts), 1),  # the last attempt ended the call
        True,
        outcome.started_at,
        offer.model,
        offer.backend,
        outcome.route,
        outcome.task,
        outcome.app,
        outcome.app_title,
        outcome.api_key_name,
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else 0,
        usage.cached_tokens if usage else 0,
        usage.reasoning_tokens if usage else 0,
        estimated,
        outcome.cost_usd,
        outcome.latency_s,
        outcome.ttft_s,
        None if estimated else outcome.completion_tokens_per_second,  # estimated tokens make no speed
        outcome.status,
        max(len(outcome.attempts), 1),  # a call cancelled mid-attempt has not logged it yet
        outcome.request_id,
        outcome.endpoint,
        outcome.team,
        outcome.error,
        usage.cache_write_tokens if usage else 0,
    )


# The status of an attempt's row when no upstream status says what happened: a timeout is a
# 504, an attempt the gateway itself called off (the losing hedge, a client that left) a 499
# (not the provider's failure: `gateway.usage.aggregates.attempt_outcome` leaves it out of
# uptime), anything else (a refused or cut connection, an error in a 200 stream) a 502.
_NO_STATUS = {"timeout": 504, "hedge_lost": 499, "cancelled": 499}


def failed_attempts(outcome: CallOutcome, final: FinishedCall) -> list[FinishedCall]:
    """A row per attempt before the one that ended the call (`final`, from `finished_call`):
    each failed (an attempt that answered ends the call). These rows are never billed to the
    key: their tokens and cost are the operator's upstream cost (a broken stream's delivered
    tokens, the losing hedge's prompt), while what the client received is billed once, on the
    final row (`CallOutcome.billed_usage`). Called only for calls that fell back, so the usual
    call pays nothing for it."""
    call_id, started_at = final[0], final[3]
    rows: list[FinishedCall] = []
    for number, attempt in enumerate(outcome.attempts[:-1], 1):
        usage = attempt.usage  # tokens it delivered before failing (a stream continued elsewhere)
        status = attempt.status if attempt.status is not None and attempt.status >= 400 else None
        if status is None:  # no HTTP answer (connect error, timeout) or an error in a 200 stream
            status = _NO_STATUS.get(attempt.error or "", 502)
        rows.append(
            (
                call_id,
                number,
                False,
                started_at,
                attempt.model,
                attempt.backend,
                outcome.route,
                outcome.task,
                outcome.app,
                outcome.app_title,
                outcome.api_key_name,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
                usage.cached_tokens if usage else 0,
                usage.reasoning_tokens if usage else 0,
                bool(usage and usage.estimated),
                attempt.cost_usd,
                attempt.duration_s,
                None,
                None,
                status,
                number,
                outcome.request_id,
                outcome.endpoint,
                outcome.team,
                attempt.error,
                usage.cache_write_tokens if usage else 0,
            )
        )
    return rows
