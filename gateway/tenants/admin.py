"""Admin actions on keys and teams, shared by the CLI and the /admin/keys endpoints.

Every action validates, writes the record and appends its audit entry in one store write.
The plain key leaves here once (create, rotate) and is never written anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gateway.protocol.errors import echoed
from gateway.tenants.keys import (
    AuditEntry,
    Limits,
    Team,
    TenantError,
    VirtualKey,
    check_name,
    check_overlap,
    issue,
    parse_models,
    rotated,
)
from gateway.tenants.store import TenantStore

LIMIT_FIELDS = ("rpm", "tpm", "max_concurrent", "budget_usd", "budget_period")
CLEARED = 0  # in an update, a limit of 0 removes the limit
NO_LIMITS = Limits()
SWAP_ATTEMPTS = 50  # a read-change-write lost to another writer starts over, this many times at most


@dataclass(frozen=True, slots=True)
class Issued:
    """A key as created or rotated: the only moment its plain secret exists."""

    key: VirtualKey
    plain: str

    def public(self) -> dict[str, Any]:
        return {"key": self.plain, **self.key.public()}


def limits_from(values: dict[str, Any], base: Limits = NO_LIMITS) -> Limits:
    """`base` with the limits in `values` applied (None: unchanged; 0: no limit)."""
    # Values as the client sent them (JSON, CLI flags): Limits.__post_init__ checks each one.
    changes: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        value = values.get(name)
        if value is None:
            continue
        changes[name] = None if value == CLEARED and name != "budget_period" else value
    try:
        return replace(base, **changes)
    except TypeError as exc:
        raise TenantError(str(exc)) from None


def new_limits(values: dict[str, Any]) -> Limits:
    """The limits of a key or team being created. A 0, which removes a limit in an update,
    is refused here: on a new key it would silently mean no limit (an operator who made a
    key with a $0 budget to block spending got an unlimited one)."""
    for name in LIMIT_FIELDS:
        value = values.get(name)
        if name != "budget_period" and type(value) in (int, float) and value == CLEARED:  # not False
            raise TenantError(
                f"`{name}` of 0 on a new key or team: leave it out for no limit (0 removes a limit only in "
                "an update); to stop a key, revoke it.",
                code="invalid_limit",
                param=name,
            )
    return limits_from(values)


def _check_future(expires_at: float | None, now: float, why: str) -> None:
    """Refuse an expiry already past: surely a typo of the year. A new user made a key that
    could never be used; an update to one ended a working key at once (every client a 401
    "expired") while answering 200. Ending a key now is what revoke is for."""
    if expires_at is None or expires_at > now:
        return
    try:
        when = datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):  # before year 1 once in UTC
        when = str(expires_at)
    raise TenantError(f"`expires` ({when}) is in the past: {why}.", code="invalid_expires", param="expires")


# Updating or rotating a revoked key: its name stays taken (the ledger, spend and audit know
# the key by it), so "create a new one" under that name would be refused as existing.
REVOKED = "Key `{name}` is revoked; create a new key under another name (a revoked key keeps its name)."
EXPIRED = "Key `{name}` expired at {when}: a new secret would never work. Extend it first (`expires`), then rotate."


class TenantAdmin:
    def __init__(
        self, store: TenantStore, clock: Callable[[], float] = time.time, static_names: Iterable[str] = ()
    ) -> None:
        self.store = store
        # The static keys' names (GATEWAY_API_KEYS): a name identifies one key in the ledger,
        # limits, spend and stored responses, so a virtual key may not take one.
        self.static_names = frozenset(static_names)
        self._clock = clock

    # -- keys -----------------------------------------------------------------------------
    def key(self, name: str) -> VirtualKey:
        for key in self.store.all_keys():
            if key.name == name:
                return key
        raise TenantError(f"No key named `{echoed(name)}`.", status=404, code="not_found")

    def create_key(
        self,
        name: str,
        *,
        actor: str,
        limits: Limits = NO_LIMITS,
        models: str | list[str] | None = None,
        team: str | None = None,
        expires_at: float | None = None,
    ) -> Issued:
        now = self._clock()
        check_name(name)
        if name in self.static_names:
            raise TenantError(
                f"`{name}` is a static key's name (GATEWAY_API_KEYS): a name is what the ledger, limits and "
                "stored responses know a key by, so it must be one key's. Choose another.",
                status=409,
                code="name_taken",
            )
        self._check_team(team)
        _check_future(expires_at, now, "the key could never be used")
        plain, credential = issue(now)
        key = VirtualKey(name, (credential,), limits, parse_models(models), team or None, expires_at, created_at=now)
        self.store.insert_key(key, self._entry(now, actor, "key.create", name, key.public()))
        return Issued(key, plain)

    def update_key(self, name: str, *, actor: str, **changes: Any) -> VirtualKey:
        def change(key: VirtualKey, now: float) -> tuple[VirtualKey, AuditEntry]:
            if key.revoked_at is not None:
                raise TenantError(REVOKED.format(name=name), status=409, code="revoked")
            updated = replace(key, limits=limits_from(changes, key.limits))
            if changes.get("models") is not None:
                updated = replace(updated, models=parse_models(changes["models"]))
            if changes.get("team") is not None:
                self._check_team(changes["team"] or None)
                updated = replace(updated, team=changes["team"] or None)
            if "expires_at" in changes and changes["expires_at"] is not None:
                # 0 clears the expiry.
                _check_future(changes["expires_at"] or None, now, "to end a key now, revoke it")
                updated = replace(updated, expires_at=changes["expires_at"] or None)
            return updated, self._entry(now, actor, "key.update", name, _diff(key, updated))

        return self._swap_key(name, change)[0]

    def revoke_key(self, name: str, *, actor: str) -> VirtualKey:
        def change(key: VirtualKey, now: float) -> tuple[VirtualKey, AuditEntry] | None:
            if key.revoked_at is not None:
                return None
            return replace(key, revoked_at=now), self._entry(now, actor, "key.revoke", name, {})

        return self._swap_key(name, change)[0]

    def rotate_key(self, name: str, *, actor: str, overlap_s: float = 0.0) -> Issued:
        check_overlap(overlap_s)
        plains: list[str] = []

        def change(key: VirtualKey, now: float) -> tuple[VirtualKey, AuditEntry]:
            if key.revoked_at is not None:
                raise TenantError(REVOKED.format(name=name), status=409, code="revoked")
            if key.expires_at is not None and now >= key.expires_at:
                # The new secret was printed "once" and could never authenticate.
                raise TenantError(
                    EXPIRED.format(name=name, when=key.public()["expires_at"]), status=409, code="expired"
                )
            plain, new, ended = rotated(key, now, overlap_s)
            plains.append(plain)
            detail: dict[str, Any] = {"overlap_s": overlap_s, "new_prefix": new.credentials[-1].prefix}
            if ended:  # older secrets whose own overlap this rotation cut short
                detail["ended_prefixes"] = [c.prefix for c in ended]
            return new, self._entry(now, actor, "key.rotate", name, detail)

        return Issued(self._swap_key(name, change)[0], plains[-1])

    def _swap_key(
        self, name: str, change: Callable[[VirtualKey, float], tuple[VirtualKey, AuditEntry] | None]
    ) -> tuple[VirtualKey, bool]:
        """Read the key, change it, write it if nobody wrote it in between, else start over:
        every accepted change is applied to the record the one before it left (a concurrent
        update never undoes a revoke or drops a rotated secret). (the key, whether written)."""
        for _ in range(SWAP_ATTEMPTS):
            now = self._clock()
            key = self.key(name)
            changed = change(key, now)
            if changed is None:
                return key, False
            if self.store.replace_key(changed[0], changed[1], previous=key):
                return changed[0], True
        raise _busy("key", name)

    # -- teams ----------------------------------------------------------------------------
    def team(self, name: str) -> Team:
        for team in self.store.all_teams():
            if team.name == name:
                return team
        raise TenantError(f"No team named `{echoed(name)}`.", status=404, code="not_found")

    def create_team(self, name: str, *, actor: str, limits: Limits = NO_LIMITS) -> Team:
        now = self._clock()
        team = Team(check_name(name, "team"), limits, created_at=now)
        self.store.insert_team(team, self._entry(now, actor, "team.create", name, team.public()))
        return team

    def update_team(self, name: str, *, actor: str, **changes: Any) -> Team:
        for _ in range(SWAP_ATTEMPTS):  # as _swap_key: never write over a change made meanwhile
            now = self._clock()
            team = self.team(name)
            updated = replace(team, limits=limits_from(changes, team.limits))
            detail = {k: v for k, v in asdict(updated.limits).items() if asdict(team.limits)[k] != v}
            if self.store.replace_team(updated, self._entry(now, actor, "team.update", name, detail), previous=team):
                return updated
        raise _busy("team", name)

    # -- helpers --------------------------------------------------------------------------
    def _check_team(self, team: str | None) -> None:
        if team and not any(t.name == team for t in self.store.all_teams()):
            raise TenantError(f"No team named `{echoed(team)}`.", status=404, code="not_found", param="team")

    @staticmethod
    def _entry(now: float, actor: str, action: str, target: str, detail: dict[str, Any]) -> AuditEntry:
        return AuditEntry(now, actor, action, target, detail)


def _busy(kind: str, name: str) -> TenantError:
    return TenantError(
        f"The {kind} `{name}` kept changing under this update (other admins at work); try again.",
        status=409,
        code="concurrent_update",
    )


def _diff(old: VirtualKey, new: VirtualKey) -> dict[str, Any]:
    before, after = old.public(), new.public()
    return {k: v for k, v in after.items() if before.get(k) != v and k != "status"}
