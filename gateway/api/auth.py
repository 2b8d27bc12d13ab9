"""The one authentication seam every route passes through.

Client keys come from two places: static keys (GATEWAY_API_KEYS, for simple setups) and
virtual keys (the tenant store, read through gateway.tenants.directory, with limits, a
team and allowed models). With neither the gateway is open. Failures are throttled per
client address (gateway.tenants.throttle).

Admin access: GATEWAY_ADMIN_KEY. Key management (/admin/keys, /admin/teams) needs it and is
off without it, since falling back to client keys would let any tenant mint keys. Without
it, /admin/status and /admin/reload accept the operator's static keys (or anyone, on an
open gateway) but never a virtual key: tenants are not operators.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable, Mapping
from typing import Protocol

from starlette.datastructures import Address

from gateway.protocol.errors import GatewayError
from gateway.tenants.directory import KeyDirectory
from gateway.tenants.principal import OPEN, Principal
from gateway.tenants.throttle import FailedAuthThrottle, Network, client_address

__all__ = ["OPEN", "Authenticator", "Caller", "NotYetKnown", "Principal"]

log = logging.getLogger("gateway.tenants")


class Caller(Protocol):
    """What authentication reads of a request: its headers and the peer's address. A
    Starlette `Request` is one; so is the fast routes' `HeadersOnly` (no Request built)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def client(self) -> Address | None: ...


ADMIN = Principal("admin")
_WHY = {
    "revoked": "This API key has been revoked.",
    "expired": "This API key has expired.",
    # Not "expired": the key's own expiry is unset or ahead, and whoever reads `gateway keys
    # list` sees it active. The client needs the secret the rotation issued.
    "replaced": "This API key was replaced when its key was rotated; use the new key.",
}


class NotYetKnown(Exception):
    """A key the key store's view does not know, before the view caught up."""


class Authenticator:
    def __init__(
        self,
        keys: dict[str, str],
        admin_key: str = "",
        *,
        directory: KeyDirectory | None = None,
        throttle: FailedAuthThrottle | None = None,
        trusted_proxies: tuple[Network, ...] = (),
        on_failure: Callable[[str], None] | None = None,
        require_keys: bool = False,
    ) -> None:
        self._keys = keys  # key -> name
        self._require_keys = require_keys  # never open (GATEWAY_REQUIRE_KEYS)
        self._static_names = frozenset(keys.values())
        self._conflicts_logged: set[str] = set()  # a subset of the static names: bounded by them
        self._admin_key = admin_key
        self.directory = directory
        self._throttle = throttle or FailedAuthThrottle()
        self._trusted = trusted_proxies
        self._on_failure = on_failure  # metrics: "invalid" or "throttled"

    @property
    def is_open(self) -> bool:
        return not self._keys and not self._require_keys and self.directory_empty

    @property
    def directory_empty(self) -> bool:
        """Whether the key store, loaded, holds no virtual key (or there is none)."""
        return self.directory is None or (self.directory.loaded and self.directory.empty)

    @property
    def admin_key_set(self) -> bool:
        return bool(self._admin_key)

    def _bearer(self, request: Caller) -> str | None:
        header = request.headers.get("authorization")
        if header and header[:7].lower() == "bearer ":
            return header[7:].strip()
        return request.headers.get("x-api-key")

    async def authenticate_current(self, request: Caller) -> Principal:
        """`authenticate`, for the client routes: a key unknown to this process's view of the
        key store is looked for again once the view caught up (`KeyDirectory.catch_up`), so
        a key made on another replica a moment ago is not refused. A known key, a static one,
        or an open gateway costs nothing more."""
        try:
            return self.authenticate(request, settled=False)
        except NotYetKnown:
            return await self.after_catch_up(request)

    async def after_catch_up(self, request: Caller) -> Principal:
        """`authenticate` once the key store's view caught up, for a request whose key it did
        not know (`NotYetKnown`; the hot route's way, without a coroutine per request)."""
        if self.directory is not None and not self._throttle.blocked(self._address(request)):
            await self.directory.catch_up()  # not for an address refused anyway: guessing reads no store
        return self.authenticate(request)

    def authenticate(self, request: Caller, *, settled: bool = True) -> Principal:
        """The principal of a request, or the GatewayError to answer. `settled=False`: a key
        the key store's view does not know raises `NotYetKnown` instead of failing (not
        counted against the address), for a caller that catches up and asks again."""
        directory = self.directory
        if not self._keys and not self._require_keys and (directory is None or directory.empty):
            if directory is not None and not directory.loaded:
                raise GatewayError(
                    503, "The key store is not reachable yet; retry shortly.", code="key_store_unavailable"
                )
            return OPEN
        key = self._bearer(request)
        if key is None:
            raise self._failed(
                request, "Missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`.", "missing_api_key"
            )
        name = self._keys.get(key)
        if name is not None:
            return Principal(name)
        if directory is not None:
            if not directory.loaded:  # not "incorrect": this process cannot tell yet
                raise GatewayError(
                    503, "The key store is not reachable yet; retry shortly.", code="key_store_unavailable"
                )
            found = directory.lookup(key)
            if isinstance(found, Principal):
                if found.key_name in self._static_names:
                    raise self._name_conflict(found.key_name)
                return found
            if found is not None:
                raise self._failed(request, _WHY[found], "invalid_api_key")
            if not settled:
                raise NotYetKnown
        raise self._failed(request, "Incorrect API key provided.", "invalid_api_key")

    def _name_conflict(self, name: str | None) -> GatewayError:
        """A virtual key named as a static key (made before the refusal at creation, or by a
        CLI that did not see GATEWAY_API_KEYS): not let in, since the two would share one
        identity, and so each other's stored responses, limits and spend."""
        if name not in self._conflicts_logged:
            self._conflicts_logged.add(str(name))
            log.error(
                "virtual key %r shares its name with a static key (GATEWAY_API_KEYS): refused until one is renamed "
                "(`gateway keys revoke %s` and create it under another name)",
                name,
                name,
            )
        return GatewayError(
            403,
            "This key's name is also a static key's; the gateway's operator must rename one of them.",
            code="key_name_conflict",
        )

    def authenticate_admin(self, request: Caller) -> Principal:
        """For /admin/status and /admin/reload (see the module docstring)."""
        if not self._admin_key:
            if not self._keys:
                if self.is_open:
                    return OPEN
                # Only virtual keys: a missing or unknown key is a 401 like anywhere else.
                self.authenticate(request)
                raise GatewayError(403, "Virtual keys have no admin access; set GATEWAY_ADMIN_KEY.", code="admin_only")
            principal = self.authenticate(request)
            if principal.virtual:
                raise GatewayError(403, "Virtual keys have no admin access; use the admin key.", code="admin_only")
            return principal
        return self.authenticate_key_admin(request)

    def authenticate_viewer(self, request: Caller) -> tuple[Principal, bool]:
        """For the usage views (rankings, spend): who is asking, and whether they may see every
        tenant's traffic. The admin key may; so may anyone on an open gateway, and, while no
        admin key is set, the operator's static keys (the rule of `authenticate_admin`). A
        virtual key, or a static key once an admin key exists, sees only its own calls."""
        admin_key = self._admin_key
        if admin_key and hmac.compare_digest((self._bearer(request) or "").encode(), admin_key.encode()):
            return ADMIN, True
        principal = self.authenticate(request)
        if principal.key_name is None:
            return principal, True
        return principal, not admin_key and not principal.virtual

    def authenticate_key_admin(self, request: Caller) -> Principal:
        """For key and team management: the admin key, and nothing else."""
        if not self._admin_key:
            raise GatewayError(
                403,
                "Key management over HTTP is off: set GATEWAY_ADMIN_KEY (the `gateway keys` CLI works without it).",
                code="admin_key_not_set",
            )
        if not hmac.compare_digest((self._bearer(request) or "").encode(), self._admin_key.encode()):
            raise self._failed(request, "This endpoint needs the admin key.", "invalid_admin_key")
        return ADMIN

    def _address(self, request: Caller) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.get("x-forwarded-for"), self._trusted)

    def _failed(self, request: Caller, message: str, code: str) -> GatewayError:
        wait = self._throttle.failed(self._address(request))
        if wait is not None:
            if self._on_failure is not None:
                self._on_failure("throttled")
            seconds = max(1, math.ceil(wait))
            return GatewayError(
                429,
                f"Too many failed authentication attempts from your address; retry after {seconds}s.",
                code="auth_throttled",
                headers={"retry-after": str(seconds)},
            )
        if self._on_failure is not None:
            self._on_failure("invalid")
        return GatewayError(401, message, code=code)
