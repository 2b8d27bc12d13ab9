"""A routing decision as a document: what `POST /v1/route/explain` returns and what
`gateway explain` prints. Nothing here calls a backend."""

from __future__ import annotations

from typing import Any

from gateway.routing.live import LiveState
from gateway.routing.pipeline import RoutingDecision


def explanation(decision: RoutingDecision, live: LiveState | None = None) -> dict[str, Any]:
    facts = decision.facts
    candidates = []
    for report in sorted(decision.reports, key=lambda r: (r.rank is None, r.rank or 0, r.tier)):
        offer = report.offer
        entry: dict[str, Any] = {
            "backend": offer.backend,
            "model": offer.model,
            "upstream_id": offer.upstream_id,
            "source": report.source,
            "tier": report.tier,
            "eligible": report.eligible,
            "rank": report.rank,
            "score": report.score.value if report.score else None,
            "score_detail": report.score.detail if report.score else None,
            "filters": [{"filter": v.filter, "passed": v.passed, "reason": v.reason} for v in report.verdicts],
            "context_length": offer.spec.context_length,
            "input_price": offer.spec.input_price,
            "output_price": offer.spec.output_price,
        }
        seen = live.observed(offer.key) if live is not None else None
        if seen is not None:
            entry["observed"] = {
                "ttft_s": seen.ttft_s,
                "tokens_per_s": seen.tokens_per_s,
                "samples": seen.samples,
                "tokens_per_s_samples": seen.tps_samples,
                "latency_s": seen.latency_s,
                "latency_samples": seen.latency_samples,
            }
        candidates.append(entry)
    return {
        "object": "route.explanation",
        "endpoint": decision.endpoint,
        "requested": decision.requested,
        "alias": decision.alias,
        "route": decision.route,
        "task": decision.task,
        "task_reason": decision.task_reason,
        "strategy": decision.strategy,
        "prompt_tokens_estimate": facts.prompt_tokens if facts else None,
        "completion_tokens_budget": facts.completion_tokens if facts else None,
        "needs": sorted(facts.needs) if facts else [],
        "max_attempts": decision.max_attempts,
        "deadline_s": decision.deadline_s,
        "fallback": decision.fallback,
        "try_order": [{"backend": o.backend, "model": o.model} for o in decision.candidates],
        "candidates": candidates,
        "error": decision.error.body()["error"] if decision.error else None,
        "error_status": decision.error.status if decision.error else None,
    }


def render_text(doc: dict[str, Any]) -> str:
    """The explanation as a terminal table, for `gateway explain`."""
    via = f" (alias {doc['alias']!r})" if doc.get("alias") else ""
    lines = [
        f"model {doc['requested']!r}{via} -> route {doc['route'] or '-'}, task {doc['task']} ({doc['task_reason']}), strategy {doc['strategy']}",
        f"~{doc['prompt_tokens_estimate']:,} prompt tokens, {doc['completion_tokens_budget']:,} completion budget"
        + (f", needs {', '.join(doc['needs'])}" if doc["needs"] else ""),
        "",
    ]
    rows = [("RANK", "MODEL", "BACKEND", "TIER", "SCORE", "VERDICTS")]
    for c in doc["candidates"]:
        failed = [f"{f['filter']}: {f['reason']}" for f in c["filters"] if not f["passed"]]
        verdicts = "; ".join(failed) if failed else "passes every filter"
        rows.append(
            (str(c["rank"] or "-"), c["model"], c["backend"], str(c["tier"]), c["score_detail"] or "-", verdicts)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5])
    if doc["error"]:
        lines += ["", f"error {doc['error_status']} {doc['error']['code']}: {doc['error']['message']}"]
    return "\n".join(lines)
