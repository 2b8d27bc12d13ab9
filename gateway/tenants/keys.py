"""Virtual keys and teams as stored, and how a plain key becomes what the store keeps.

A plain key is shown once, when it is created or rotated, and never stored: the store
keeps its SHA-256 (what authentication looks up) and a short prefix (so an admin can tell
keys apart in a listing). Keys are long random strings, so an unsalted fast hash is enough:
there is no dictionary to attack, and the lookup stays one dict access per request.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.money import usd
from gateway.protocol.errors import echoed

KEY_PREFIX = "sk-gw-"
SHOWN_PREFIX_CHARS = 12  # "sk-gw-" and six random characters: enough to tell keys apart
Period = Literal["day", "month"]
PERIODS = ("day", "month")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")  # matched whole (fullmatch: `$` lets "\n" through)
# Upper bounds on a limit: far above any real one, within what the counters hold exactly (a
# budget in nano-dollars in 64 bits; Redis scripts count in doubles).
MAX_COUNT = 10**12
MAX_BUDGET_USD = 1e9
# Spend is counted in nano-dollars: a budget below one was accepted, listed as $0.00, and
# refused every priced call, though a budget of 0 is refused when a key is made.
MIN_BUDGET_USD = 1e-9
# The longest a rotated-out key keeps working: long enough to roll a new key out everywhere,
# short enough that a forgotten old one does not live on (`99999999d` was accepted).
MAX_OVERLAP_S = 30 * 86400.0


class TenantError(ValueError):
    """A bad admin request (unknown name, duplicate, invalid value): shown to the admin as is.
    `param`: the field at fault, when one is (the admin API's error names it)."""

    def __init__(
        self, message: str, status: int = 400, code: str = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def new_plain_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def check_name(name: str, what: str = "key") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TenantError(
            f"A {what} name is 1-64 letters, digits or `_.:@-`, starting with a letter or digit: {echoed(name)!r}",
            param="name",
        )
    return name


@dataclass(frozen=True, slots=True)
class Limits:
    """What a key or a team may use; None means no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_usd: float | None = None
    budget_period: Period = "month"

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT
            ):
                raise TenantError(
                    f"`{name}` must be a positive integer up to {MAX_COUNT:,}, got {echoed(repr(value))}", param=name
                )
        budget = self.budget_usd
        if budget is not None and (
            not isinstance(budget, (int, float))
            or isinstance(budget, bool)
            or not MIN_BUDGET_USD <= budget <= MAX_BUDGET_USD
        ):  # NaN fails the comparison too; inf and 1e300 overflowed the nano-dollar count (a 500 per call)
            raise TenantError(
                f"`budget_usd` must be a number from {usd(MIN_BUDGET_USD)} to {usd(MAX_BUDGET_USD)}, "
                f"got {echoed(repr(budget))}",
                param="budget_usd",
            )
        if budget is not None:  # one type wherever it is shown: `5` from an update read `5.0` everywhere else
            object.__setattr__(self, "budget_usd", float(budget))
        if self.budget_period not in PERIODS:
            raise TenantError(
                f"`budget_period` must be `day` or `month`, got {echoed(repr(self.budget_period))}",
                param="budget_period",
            )

    @classmethod
    def stored(cls, values: dict[str, Any]) -> Limits:
        """Limits as the store holds them. One written before the bounds above (a budget of
        inf, nan or 1e300, a count past MAX_COUNT) is read at the bound: refusing it would
        fail the whole store's load, every key with it."""
        values = {name: value for name, value in values.items() if name in _LIMIT_FIELDS}  # a newer gateway's: ignored
        for name in ("rpm", "tpm", "max_concurrent"):
            if isinstance(values.get(name), int) and values[name] > MAX_COUNT:
                values[name] = MAX_COUNT
        budget = values.get("budget_usd")
        if isinstance(budget, bool):
            values["budget_usd"] = float(budget) or None  # `true` passed the old check: $1
        elif isinstance(budget, (int, float)) and not budget <= MAX_BUDGET_USD:
            values["budget_usd"] = MAX_BUDGET_USD  # inf, nan, 1e300, 10**10
        return cls(**values)

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_concurrent is None and self.budget_usd is None


_LIMIT_FIELDS = frozenset(f.name for f in fields(Limits))


@dataclass(frozen=True, slots=True)
class Credential:
    """One accepted secret of a key: its hash, its shown prefix, and until when it is valid
    (None: until the key is rotated or revoked). Rotation adds one and dates the old ones."""

    hash: str
    prefix: str
    created_at: float
    valid_until: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Credential:
        """As the store holds it; fields a newer gateway added are left out (a rolling upgrade
        must not stop the older replicas reading the store, revocations with it)."""
        return cls(data["hash"], data["prefix"], data["created_at"], data.get("valid_until"))


@dataclass(frozen=True, slots=True)
class VirtualKey:
    name: str
    credentials: tuple[Credential, ...]
    limits: Limits = Limits()
    models: tuple[str, ...] = ()  # globs over route names and model ids; empty: every model
    team: str | None = None
    expires_at: float | None = None
    created_at: float = field(default_factory=time.time)
    revoked_at: float | None = None

    def allows(self, name: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(name, glob) for glob in self.models)

    def valid_hashes(self, now: float) -> list[tuple[str, float | None]]:
        """(hash, until) of each credential that authenticates at `now`; `until` bounds it."""
        if self.revoked_at is not None or (self.expires_at is not None and now >= self.expires_at):
            return []
        out = []
        for c in self.credentials:
            if c.valid_until is None or now < c.valid_until:
                ends = [t for t in (c.valid_until, self.expires_at) if t is not None]
                out.append((c.hash, min(ends) if ends else None))
        return out

    def public(self) -> dict[str, Any]:
        """What listings show: everything but the hashes. An active key's prefixes are those of
        the secrets that work now (a secret a rotation replaced drops out when its overlap
        ends); a revoked or expired key's are all it had, to tell which key a prefix was."""
        now = time.time()
        status = self.status(now)
        live = [c.prefix for c in self.credentials if c.valid_until is None or now < c.valid_until]
        return {
            "name": self.name,
            "prefixes": live if status == "active" else [c.prefix for c in self.credentials],
            "team": self.team,
            "models": list(self.models),
            **asdict(self.limits),
            "expires_at": _iso(self.expires_at),
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at),
            "status": status,
        }

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "credentials": [asdict(c) for c in self.credentials],
            "limits": asdict(self.limits),
            "models": list(self.models),
            "team": self.team,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VirtualKey:
        return cls(
            name=data["name"],
            credentials=tuple(Credential.from_json(c) for c in data["credentials"]),
            limits=Limits.stored(data["limits"]),
            models=tuple(data["models"]),
            team=data.get("team"),
            expires_at=data.get("expires_at"),
            created_at=data["created_at"],
            revoked_at=data.get("revoked_at"),
        )


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    limits: Limits = Limits()
    created_at: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.limits), "created_at": _iso(self.created_at)}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "limits": asdict(self.limits), "created_at": self.created_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Team:
        return cls(name=data["name"], limits=Limits.stored(data["limits"]), created_at=data["created_at"])


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action: who did what to which key or team, when. Never a plain key."""

    at: float
    actor: str
    action: str  # key.create, key.update, key.rotate, key.revoke, team.create, team.update
    target: str
    detail: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


def issue(now: float) -> tuple[str, Credential]:
    plain = new_plain_key()
    return plain, Credential(hash_key(plain), plain[:SHOWN_PREFIX_CHARS], now)


def rotated(key: VirtualKey, now: float, overlap_s: float) -> tuple[str, VirtualKey, tuple[Credential, ...]]:
    """A new secret for `key`, and the older secrets this rotation ends before their time.

    The secret it replaces (the newest) stays valid for `overlap_s` more (0: not at all; an
    end it already had sooner is kept). Older ones, still in the overlap of an earlier
    rotation, end now and are dropped: at most two secrets of a key work at once, the new one
    and the one it replaced, however many rotations follow each other."""
    plain, credential = issue(now)
    *older, current = key.credentials
    until = now + overlap_s
    if current.valid_until is None or current.valid_until > until:
        current = replace(current, valid_until=until)
    ended = tuple(c for c in older if c.valid_until is None or c.valid_until > now)
    return plain, replace(key, credentials=(current, credential)), ended


def parse_models(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TenantError(f"`models` entries must be strings, got {echoed(repr(item))}", param="models")
        item = item.strip()
        if not item and not isinstance(text, str):
            # Hostile testing: `[""]` (a form's one empty field) made a key for every model,
            # as `[]` does. An empty glob in a list is a mistake, not a wish for no restriction.
            raise TenantError(
                "`models` entries must not be empty: `[]` is what lets a key use every model", param="models"
            )
        if not item.isprintable():
            # An escape or a bidi override: `gateway keys list` wrote it to the admin's
            # terminal as is, and no model id holds one (the routing YAML refuses them).
            raise TenantError(
                f"`models` entries must not hold control characters, got {echoed(repr(item))}", param="models"
            )
        if item and item not in out:
            out.append(item)
    if len(out) > 100:
        raise TenantError("at most 100 `models` globs per key", param="models")
    return tuple(out)


def parse_when(text: str | None) -> float | None:
    """An ISO date or datetime (UTC unless it says otherwise) -> epoch seconds."""
    if text is None or text == "":
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise TenantError(
            f"`expires`: expected an ISO date like 2027-01-01 or 2027-01-01T12:00:00Z, got {echoed(text)!r}",
            param="expires",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    moment = when.timestamp()
    try:
        datetime.fromtimestamp(moment, UTC)  # how it is shown back: within years 1-9999 in UTC
    except (ValueError, OverflowError, OSError):
        raise TenantError(
            f"`expires` {echoed(text)!r} falls outside the years 1-9999 once in UTC",
            code="invalid_expires",
            param="expires",
        ) from None
    return moment


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_overlap(text: str) -> float:
    """A rotation's overlap as the CLI and the admin API take it, `0`, `90s`, `30m`, `24h`,
    `7d`, in seconds: at most `MAX_OVERLAP_S` (30d)."""
    found = _DURATION.match(text.strip())
    if not found:
        raise _overlap_error(f"a duration like 30m, 24h or 7d (at most 30d), got {echoed(text)!r}")
    seconds = float(found[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found[2]]
    if not seconds <= MAX_OVERLAP_S:
        raise _overlap_error(f"at most 30d, got {echoed(text.strip())!r}")
    return seconds


def check_overlap(seconds: float) -> None:
    """A rotation's overlap in seconds: from 0 to `MAX_OVERLAP_S` (NaN is neither)."""
    if not 0 <= seconds <= MAX_OVERLAP_S:
        raise _overlap_error(f"from 0 to 30d ({MAX_OVERLAP_S:.0f} seconds), got {seconds!r} seconds")


def _overlap_error(what: str) -> TenantError:
    return TenantError(f"`overlap` must be {what}.", code="invalid_overlap", param="overlap")


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
