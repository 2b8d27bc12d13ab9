"""Who is calling: what authentication hands the request path.

Lives below the API layer so the limiter (gateway.ratelimit, gateway.tenants.limits) can
read it; gateway.api.auth re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.tenants.keys import Limits, VirtualKey


@dataclass(frozen=True, slots=True)
class Principal:
    key_name: str | None  # None when the gateway is open
    team: str | None = None
    key: VirtualKey | None = None  # set for virtual keys: limits, allowed models, label
    team_limits: Limits | None = None  # the team's own limits, when the key has a team

    @property
    def virtual(self) -> bool:
        return self.key is not None

    @property
    def limits(self) -> Limits | None:
        return self.key.limits if self.key is not None else None


OPEN = Principal(None)
