"""deploy/prometheus: promtool accepts the config and the rules, and the rules' unit tests
(alerts.test.yml: synthetic series that must fire each alert, and not its neighbours) pass."""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy.artifacts import ALERTS, DEPLOY, alert_rules, signal_of
from tests.support.services import require_binary

PROMETHEUS_DIR = DEPLOY / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_binary("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml"), ("test", "rules", "alerts.test.yml")],
)
def test_promtool_accepts(args):
    result = _promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_and_a_threshold():
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "GatewayDown",
        "GatewayBackendDown",
        "GatewayBackendCircuitOpen",
        "GatewayHighErrorRatio",
        "GatewayHighLatencyP95",
        "GatewayUsageEventsDropped",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert signal_of(rule["expr"])


def test_every_alert_has_a_unit_test():
    import yaml

    tested = {
        t["alertname"]
        for case in yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert tested == {r["alert"] for r in alert_rules()}
    assert ALERTS.exists()
