"""The one authentication seam every route passes through.

Open when no keys are configured. Key management (per-key budgets, rate limits) plugs in
here without touching the routes.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import Request

from gateway.protocol.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Principal:
    key_name: str | None  # None when the gateway is open


OPEN = Principal(None)


class Authenticator:
    def __init__(self, keys: dict[str, str], admin_key: str = "") -> None:
        self._keys = keys  # key -> name
        self._admin_key = admin_key

    def _bearer(self, request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header and header[:7].lower() == "bearer ":
            return header[7:].strip()
        return request.headers.get("x-api-key")

    def authenticate(self, request: Request) -> Principal:
        if not self._keys:
            return OPEN
        key = self._bearer(request)
        if key is None:
            raise GatewayError(401, "Missing API key: send `Authorization: Bearer <key>`.", code="missing_api_key")
        name = self._keys.get(key)
        if name is None:
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        return Principal(name)

    def authenticate_admin(self, request: Request) -> Principal:
        if not self._admin_key:
            return self.authenticate(request)
        if not hmac.compare_digest((self._bearer(request) or "").encode(), self._admin_key.encode()):
            raise GatewayError(401, "This endpoint needs the admin key.", code="invalid_admin_key")
        return Principal("admin")
