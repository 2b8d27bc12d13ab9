"""What routing reads of the proxy's attempts and finished calls, named as protocols.

Routing sits below the proxy (tests/test_layers.py), so it does not import
`gateway.proxy.outcome`; the circuits and the live stats (gateway.routing.health,
gateway.routing.live) read an attempt and a call through these few fields instead, and the
proxy's `Attempt` and `CallOutcome` have them. A field routing starts to read is added here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.config.snapshot import Offer


class AttemptResult(Protocol):
    """What the circuits read of one attempt (`gateway.proxy.outcome.Attempt` is one)."""

    @property
    def error(self) -> str | None: ...
    @property
    def retry_after_s(self) -> float | None: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def backend_fault(self) -> bool: ...


class TokenCount(Protocol):
    @property
    def completion_tokens(self) -> int: ...


class FinishedCall(Protocol):
    """What the stats read of a finished call (`gateway.proxy.outcome.CallOutcome` is one)."""

    @property
    def offer(self) -> Offer | None: ...
    @property
    def status(self) -> int: ...
    @property
    def stream(self) -> bool: ...
    @property
    def ttft_s(self) -> float | None: ...
    @property
    def usage(self) -> TokenCount | None: ...
    @property
    def attempts(self) -> Sequence[AttemptResult]: ...
