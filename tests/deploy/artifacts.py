"""Reading the deploy/ artifacts the way their consumers do: the dashboard's queries as
Grafana would send them, the alert rules as Prometheus loads them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gateway.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# What Grafana substitutes before a query reaches Prometheus ("All" selected everywhere).
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__range": "5m", "$route": ".*", "$model": ".*", "$backend": ".*"}
_COMPARISON = re.compile(r"^(?P<signal>.*?)\s*(?:>=|<=|==|!=|>|<)\s*(?P<threshold>[0-9.eE+-]+)\s*$", re.DOTALL)
_METRIC = re.compile(r"\b(gateway_[a-z0-9_]+)\b")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def concrete(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def signal_of(expr: str) -> str:
    """An alert expression without its final threshold: what it compares."""
    match = _COMPARISON.match(expr.strip())
    assert match, f"alert expression is not `<signal> <op> <threshold>`: {expr}"
    return match.group("signal")


def metric_names_in(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def defined_series_names() -> set[str]:
    """Every series name gateway/metrics.py exposes (histograms as _bucket/_sum/_count)."""
    from gateway.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names
