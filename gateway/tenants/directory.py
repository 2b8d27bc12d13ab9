"""The in-process view of the key store that authentication reads on every request.

A request costs one SHA-256 of the presented key and one dict lookup (plus a clock read
when the credential has an end). The view is rebuilt from the store when the store's
version number moves, checked every GATEWAY_KEYS_REFRESH_S (2 s) from a background task
with the store call in a thread: a key created, rotated or revoked anywhere (CLI, another
replica) reaches this process within that interval, with no restart. A store that fails
keeps the last good view (counted and logged once per outage); a gateway that has never
loaded the store refuses virtual keys with 503 rather than guessing.

A key this view does not know may be one made a moment ago elsewhere (an admin API call on
another replica, the CLI): a provisioning flow that makes a key and uses it at once through
a load balancer got 401s until the next refresh. Before such a key is refused the view
catches up once (`catch_up`): misses that come together share one store read, and misses
read the store at most once per `CATCH_UP_GAP_S` however many unknown keys arrive (a miss
within the gap waits for its end rather than being refused unread), so guessing keys costs
the store little.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.tenants.keys import Team, VirtualKey, hash_key
from gateway.tenants.principal import Principal
from gateway.tenants.store import TenantStore

log = logging.getLogger("gateway.tenants")


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    until: float | None  # the credential stops working at this epoch time (expiry, rotation)
    # Why it is refused once `until` has passed: "expired" when the key's own expiry ends it,
    # "replaced" when a rotation's overlap does (the key itself still works, with its new secret).
    lapse: str = "expired"


@dataclass(frozen=True, slots=True)
class _View:
    version: int
    by_hash: dict[str, _Entry]
    refused: dict[str, str]  # hash of a revoked or expired credential -> why, for the 401
    keys: dict[str, VirtualKey]
    teams: dict[str, Team]


_EMPTY = _View(-1, {}, {}, {}, {})
# The least time between two catch-ups for unknown keys: ten store version reads a second
# per process at most, whatever clients send.
CATCH_UP_GAP_S = 0.1


class KeyDirectory:
    def __init__(
        self,
        store: TenantStore,
        *,
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._clock = clock
        self._on_error = on_error
        self._view = _EMPTY
        self._failing = False
        # One refresh at a time: the admin API's own (after a write) and the background one
        # could overlap, and the one that had read the store before the write, ending last,
        # put the older view back (a key just revoked worked again for a refresh interval).
        self._refreshing = asyncio.Lock()
        # Whether this process has ever loaded a virtual key: from then on an empty store is
        # a store that lost its keys (a Redis restarted without its data, flushed, or another
        # database), which must leave the gateway closed, not open it to anyone.
        self._had_keys = False
        self._catching_up: asyncio.Future[None] | None = None  # the catch-up reading the store
        self._next_catch_up: asyncio.Future[None] | None = None  # the one that reads after it
        self._caught_up_at = -math.inf  # monotonic time of the last catch-up read begun

    @property
    def loaded(self) -> bool:
        return self._view is not _EMPTY

    @property
    def empty(self) -> bool:
        """No virtual key at all (revoked ones count: their holders must still be refused),
        and none ever loaded by this process."""
        return not self._view.keys and not self._had_keys

    def lookup(self, plain: str) -> Principal | str | None:
        """The principal for `plain`; or why it is refused ("revoked", "expired", "replaced": a
        secret a rotation superseded); or None if unknown."""
        digest = hash_key(plain)
        view = self._view
        entry = view.by_hash.get(digest)
        if entry is not None:
            if entry.until is None or self._clock() < entry.until:
                return entry.principal
            return entry.lapse
        return view.refused.get(digest)

    def key(self, name: str) -> VirtualKey | None:
        return self._view.keys.get(name)

    def team(self, name: str) -> Team | None:
        return self._view.teams.get(name)

    async def refresh(self) -> bool:
        """Reload from the store if it changed; True when the view was rebuilt."""
        async with self._refreshing:
            return await self._refresh()

    async def catch_up(self) -> None:
        """Reload from the store if it changed, for a key the view does not know (see the
        module docstring). Each caller waits for a read that begins after it arrived (one
        under way may have begun before its key was made), shared with every miss that
        arrives before that read begins; a read begins no sooner than `CATCH_UP_GAP_S` after
        the last one began. None while the store is failing (the background refresh finds
        it back). A caller that goes away cancels nothing."""
        if self._failing:
            return  # the store is down: a read would only wait out its timeout to fail again
        pending = self._next_catch_up
        if pending is None:
            pending = self._next_catch_up = asyncio.ensure_future(self._catch_up_next())
        await asyncio.shield(pending)

    async def _catch_up_next(self) -> None:
        previous = self._catching_up
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # its outcome is its own callers'
        wait = self._caught_up_at + CATCH_UP_GAP_S - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        # This read begins now: misses from here on wait for the next one.
        self._caught_up_at = time.monotonic()
        self._catching_up, self._next_catch_up = self._next_catch_up, None
        if not self._failing:  # it may have failed meanwhile (see catch_up)
            await self.refresh()

    async def _refresh(self) -> bool:
        try:
            view = await asyncio.to_thread(self._load, self._view.version)
        except Exception as exc:
            if self._on_error is not None:
                self._on_error()
            if not self._failing:
                log.error("key store failed (%s: %s): keeping the keys last loaded", type(exc).__name__, exc)
                self._failing = True
            return False
        if self._failing:
            log.warning("key store answers again")
            self._failing = False
        if view is None:
            return False
        if view.keys:
            self._had_keys = True
        elif self._had_keys and self._view.keys:
            log.error(
                "the key store holds no keys any more (it was emptied or replaced): every virtual key is refused; "
                "the gateway stays closed to requests without a key until it restarts"
            )
        self._view = view
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

    def _load(self, known: int) -> _View | None:
        version = self._store.version()
        if version == known:
            return None
        keys = {k.name: k for k in self._store.all_keys()}
        teams = {t.name: t for t in self._store.all_teams()}
        return build_view(version, keys, teams, self._clock())


def build_view(version: int, keys: dict[str, VirtualKey], teams: dict[str, Team], now: float) -> _View:
    by_hash: dict[str, _Entry] = {}
    refused: dict[str, str] = {}
    for key in keys.values():
        team = teams.get(key.team) if key.team else None
        if key.team and team is None:
            # Its team's record cannot be read (teams are never deleted, and a key names an
            # existing one): served without the team's limits, its rpm and budget would not
            # hold, so the key is refused (as unknown) until the record is fixed.
            continue
        principal = Principal(key.name, key.team, key, team.limits if team is not None else None)
        valid = key.valid_hashes(now)
        for digest, until in valid:
            ends_with_key = key.expires_at is not None and until == key.expires_at
            by_hash[digest] = _Entry(principal, until, "expired" if ends_with_key else "replaced")
        if key.revoked_at is not None:
            reason = "revoked"
        elif key.expires_at is not None and now >= key.expires_at:
            reason = "expired"
        else:  # the key works, but not with this secret: a rotation superseded it
            reason = "replaced"
        for credential in key.credentials:
            if credential.hash not in by_hash:
                refused[credential.hash] = reason
    return _View(version, by_hash, refused, keys, teams)
