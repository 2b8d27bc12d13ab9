"""What the routing-view tests share: a request routed on its view must be decided exactly as
its chat translation is (candidates, facts, task, every filter's verdict)."""

from __future__ import annotations

from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.chat import ChatRequest
from gateway.routing.pipeline import RoutingDecision, decide


def decided_alike(
    viewed: ChatRequest, translated: ChatRequest, snapshot: ConfigSnapshot, endpoint: str
) -> RoutingDecision:
    """Both decisions, asserted equal; the view's (which must not have built the translation)."""
    got = [decide(r, {}, snapshot, endpoint=endpoint) for r in (viewed, translated)]
    assert [c.model for c in got[0].candidates] == [c.model for c in got[1].candidates]
    assert got[0].facts == got[1].facts
    assert (got[0].task, got[0].task_reason) == (got[1].task, got[1].task_reason)
    verdicts = [[(v.filter, v.passed, v.reason) for r in d.reports for v in r.verdicts] for d in got]
    assert verdicts[0] == verdicts[1]
    assert not viewed.translated
    return got[0]
