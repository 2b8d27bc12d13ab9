"""The Grafana dashboard and its provisioning, checked offline: structure Grafana needs,
the provisioned datasource, and queries that use only metrics gateway/metrics.py defines
(the live query check against real Prometheus is test_prometheus_e2e.py)."""

from __future__ import annotations

import re

import yaml

from tests.deploy.artifacts import (
    DEPLOY,
    alert_rules,
    dashboard,
    dashboard_queries,
    defined_series_names,
    metric_names_in,
)

PROVISIONING = DEPLOY / "grafana" / "provisioning"


def _datasource_uid() -> str:
    return yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"][0]["uid"]


def test_dashboard_structure():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    occupied = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": _datasource_uid()}


def test_template_variables_query_defined_metrics():
    defined = defined_series_names()
    variables = dashboard()["templating"]["list"]
    assert {v["name"] for v in variables} == {"route", "model", "backend"}
    for variable in variables:
        assert metric_names_in(variable["query"]["query"]) <= defined
        assert variable["includeAll"] and variable["allValue"] == ".*"
    used = {m for _, expr in dashboard_queries() for m in re.findall(r"\$(\w+)", expr)}
    assert used <= {v["name"] for v in variables} | {"__rate_interval", "__range"}


def test_queries_and_alerts_use_only_defined_metrics_and_the_dashboard_shows_every_metric():
    defined = defined_series_names()
    used = set()
    for title, expr in dashboard_queries():
        names = metric_names_in(expr)
        assert names, f"{title}: no gateway metric in {expr}"
        assert names <= defined, f"{title}: undefined {names - defined}"
        used |= names
    for rule in alert_rules():
        assert metric_names_in(rule["expr"]) <= defined, rule["alert"]
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in defined}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert families - shown == set()


def test_dashboard_has_the_panels_operators_need():
    exprs = [expr for _, expr in dashboard_queries()]

    def has(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert has(r"sum by \(model\) \(rate\(gateway_requests_total")
    assert has(r"sum by \(backend\) \(rate\(gateway_requests_total")
    assert has(r'sum by \(model, backend\) \(rate\(gateway_requests_total\{[^}]*status=~"5\.\."')
    for quantile in ("0.5", "0.95", "0.99"):
        assert has(
            rf"histogram_quantile\({quantile}, sum by \(le, model\) \(rate\(gateway_request_duration_seconds_bucket"
        )
        assert has(rf"histogram_quantile\({quantile}, sum by \(le, model\) \(rate\(gateway_ttft_seconds_bucket")
    assert has(r"sum by \(model, type\) \(rate\(gateway_tokens_total")
    assert has(r"sum by \(model\) \(rate\(gateway_cost_usd_total.*\* 3600")
    assert has(r"topk\(10, sum by \(model\) \(increase\(gateway_tokens_total")
    assert (
        has(r"gateway_fallbacks_total") and has(r"gateway_backend_circuit_state") and has(r"gateway_inflight_requests")
    )
    assert has(r"gateway_overhead_seconds_bucket")


def test_dashboard_provider_loads_the_dashboards_directory():
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "gateway.yml").read_text())["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_provider_uptime_panel_is_the_share_of_counted_attempts_that_answered():
    """The same ratio as /v1/rankings' `uptime`: ok attempts over attempts, per backend and
    model, leaving out the results the request decided; a backend with no ok attempt shows 0
    rather than no line (the `or ... * 0`)."""
    (expr,) = [e for title, e in dashboard_queries() if title == "Provider uptime by backend and model"]
    ok, fallback, counted = re.findall(r"rate\((gateway_backend_attempts_total\{[^}]*\})", expr)
    assert 'result="ok"' in ok and fallback == counted
    excluded = re.search(r'result!~"([^"]+)"', counted).group(1)
    pattern = re.compile(f"^(?:{excluded})$")
    for result in (
        "context_length",
        "client_disconnected",
        "cancelled",
        "hedge_lost",
        "http_400",
        "http_404",
        "http_499",
        "shutdown",
        "internal_error",
    ):
        assert pattern.match(result), result
    for result in ("ok", "http_408", "rate_limited", "http_500", "http_503", "timeout", "connect", "misconfigured"):
        assert not pattern.match(result), result
    assert expr.startswith("(sum by (backend, model) (rate(") and ") * 0) / sum by (backend, model) (rate(" in expr


def test_the_panel_and_the_ledger_leave_out_the_same_attempts():
    """Grafana reads the attempt metric's `result` label, the rankings the ledger row's status
    and error (`attempt_outcome`): for each result the gateway records, both agree on whether
    the attempt counts."""
    from dataclasses import replace

    from gateway.usage.aggregates import attempt_outcome
    from tests.usage.fixtures import _event

    (expr,) = [e for title, e in dashboard_queries() if title == "Provider uptime by backend and model"]
    excluded = re.search(r'result!~"([^"]+)"', expr).group(1)
    left_out = re.compile(f"^(?:{excluded})$")
    row = _event("a-1", "2025-03-10T10:00:00", "qwen/qwen3-32b", "groq", 0, 0)
    # metric result label -> the ledger row of that attempt (status, error), as events.py writes it
    rows = {
        "ok": (200, None),
        "context_length": (400, "context_length"),
        "client_disconnected": (499, "client_disconnected"),
        "cancelled": (499, "cancelled"),
        "hedge_lost": (499, "hedge_lost"),
        "request_not_encodable": (400, "request_not_encodable"),
        "http_400": (400, "http_400"),
        "http_401": (401, "http_401"),
        "http_404": (404, "http_404"),
        "http_408": (408, "http_408"),
        "rate_limited": (429, "rate_limited"),
        "http_500": (500, "http_500"),
        "http_503": (503, "http_503"),
        "timeout": (504, "timeout"),
        "connect": (502, "connect"),
        "protocol": (502, "protocol"),
        "misconfigured": (404, "misconfigured"),
        # The stream relay labels the attempt with the call's own end (gateway.api.stream_relay).
        "shutdown": (503, "shutdown"),
        "internal_error": (500, "internal_error"),
    }
    for result, (status, error) in rows.items():
        event = replace(row, status=status, error=error, final=False, attempt=1)
        assert (attempt_outcome(event) is None) == bool(left_out.match(result)), result
