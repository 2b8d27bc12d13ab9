"""deploy/prometheus: promtool accepts the config and the rules, and the rules' unit tests
(alerts.test.yml: synthetic series that must fire each alert, and not its neighbours) pass."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.artifacts import ALERTS, DEPLOY, alert_rules, dashboard_queries, signal_of
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
        "GatewayTargetMissing",
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


def _excluded_results(expr: str) -> re.Pattern:
    """The `result` values an expression over gateway_backend_attempts_total counts neither as
    answered nor as failed (its `result!~` selectors other than the failures' `ok|...`)."""
    selectors = set(re.findall(r'result!~"([^"]+)"', expr))
    (excluded,) = {s for s in selectors if not s.startswith("ok|")}
    assert selectors <= {excluded, "ok|" + excluded}, selectors
    return re.compile(f"^(?:{excluded})$")


def _attempt_results() -> set[str]:
    """Every `result` label gateway_backend_attempts_total can carry."""
    from gateway.backends import errors
    from gateway.proxy.hedge import CANCELLED, HEDGE_LOST

    reasons = {
        cls.reason
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.UpstreamError) and "reason" in vars(cls)
    }
    statuses = range(300, 600)
    labels = {errors.status_error("", s, context_overflow=overflow).reason for s in statuses for overflow in (0, 1)}
    labels |= {errors.BackendMisconfigured("", 404).reason, errors.RequestNotEncodable("").reason}
    # The answer's own end, set on its attempt: a stream cut at shutdown or by the gateway's
    # own fault, or failed by the upstream's error event.
    ends = {"shutdown", "internal_error", "upstream_error", "client_disconnected", "other"}
    return {"ok", HEDGE_LOST, CANCELLED} | reasons | labels | ends


def test_backend_down_leaves_out_what_the_uptime_panel_leaves_out_and_counts_refused_keys():
    """The alert and the dashboard's "Provider uptime" panel agree on which attempts are the
    backend's to answer, for every result the gateway records; except that the alert counts
    401-403 (the gateway's own key or account refused), which the panel, like the rankings'
    uptime, leaves out."""
    (down,) = [r["expr"] for r in alert_rules() if r["alert"] == "GatewayBackendDown"]
    (uptime,) = [e for title, e in dashboard_queries() if title == "Provider uptime by backend and model"]
    alert_skips, panel_skips = _excluded_results(down), _excluded_results(uptime)
    results = _attempt_results()
    assert {"hedge_lost", "rate_limited", "context_length", "misconfigured", "http_500", "http_401"} <= results
    for result in sorted(results):
        if result in ("http_401", "http_402", "http_403"):
            assert panel_skips.match(result) and not alert_skips.match(result), result
        else:
            assert bool(alert_skips.match(result)) == bool(panel_skips.match(result)), result
    for result in (
        "hedge_lost",
        "cancelled",
        "client_disconnected",
        "context_length",
        "http_400",
        "http_422",
        "shutdown",
        "internal_error",
    ):
        assert alert_skips.match(result), result
    for result in ("ok", "http_408", "rate_limited", "http_500", "timeout", "connect", "misconfigured"):
        assert not alert_skips.match(result), result
