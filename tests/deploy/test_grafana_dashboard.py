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
