"""Prometheus metrics: what the gateway counts, and how `/metrics` renders it.

Metric names and labels are an interface (the Grafana dashboard and the alert rules in
`deploy/` query them), so they change only additively. Label values come from the config
(route names, canonical model ids, backend names) or from small fixed sets (status codes,
failure reasons), never from raw client input: a request for a model the config does not
know is counted as `model="unknown"`, so cardinality stays bounded whatever clients send.

`Metrics` is a call observer (see `gateway.proxy.outcome`): the proxy path hands it each
attempt and each finished call. Updating a metric costs a dictionary lookup and an add:
what a call updates is resolved once per series into plain functions that add to the
values (`gateway.metric_values`), so prometheus-client's label validation and per-call
checks run once per series, not once per call.

Gauges other parts own have one-line hooks: `set_circuit_state` (routing's circuit
breakers), `usage_events_dropped` and `usage_write_failed` (the usage recorder), `config_reload` (wired to
`ConfigHolder.on_result` in the app's lifespan), `background_task_restarted` (`gateway.supervise`), `http_rejection` (`gateway.api.wire`).

Several worker processes (`gateway serve --workers N`) share one scrape through
prometheus-client's multiprocess mode: `gateway serve` points PROMETHEUS_MULTIPROC_DIR at
a fresh directory before the workers start, each worker writes its values there, and
`/metrics` on any worker merges them all (`render`).
"""

from __future__ import annotations

import logging
import os
import re
from enum import IntEnum
from pathlib import Path
from typing import TypeVar, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.metric_values import Add, adder, observer
from gateway.proxy.hedge import CANCELLED, HEDGE_LOST
from gateway.proxy.outcome import Attempt, CallOutcome
from gateway.proxy.usage import MAX_COST_USD, MAX_TOKENS_PER_CALL

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)

log = logging.getLogger("gateway.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Whole calls and first tokens of LLMs: tens of milliseconds to minutes.
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# The gateway's own time per call: sub-millisecond to tens of milliseconds.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
TOKENS_PER_SECOND_BUCKETS = (1, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000)

_NOT_FALLBACKS = frozenset([HEDGE_LOST, CANCELLED])  # failed attempts the call did not fall back from
# The supervised background tasks (gateway.supervise), by the names they are started with.
BACKGROUND_TASKS = ("config_watcher", "health_prober", "shared_state_sync", "circuit_state_export", "usage_recorder")
# Why the HTTP front door (gateway.api.wire) refused a request: a fixed set, so a bounded label.
HTTP_REJECTION_REASONS = (
    "headers_too_large",
    "head_timeout",
    "idle_connection",
    "body_timeout",
    "invalid_request",
    "too_many_connections",
)
UNKNOWN_MODEL = "unknown"  # the model label of calls whose model the config does not know
_SAFE_REASON = re.compile(r"[a-z0-9_]{1,40}")


class CircuitState(IntEnum):
    """Values of gateway_backend_circuit_state."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


def multiprocess_dir() -> str | None:
    """The directory workers share their values through, when several serve together."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The gateway's metrics, in a registry of their own (two apps in one process share nothing)."""

    def __init__(self) -> None:
        # `*_created` series would double the series count for a timestamp no panel reads.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir()
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "Calls to every API (chat, Messages, Responses, embeddings, completions), by how they ended.",
            ["route", "model", "backend", "status"],
            registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens_total",
            "Tokens processed, as the backends reported them (or estimated).",
            ["model", "backend", "type"],
            registry=r,
        )
        self.cost = Counter(
            "gateway_cost_usd_total", "Cost in USD at the configured list prices.", ["model", "backend"], registry=r
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Whole call, fallbacks and streaming included; `stream` tells streams (whose length is "
            "the answer's, not the backend's speed: see gateway_ttft_seconds) from whole answers.",
            ["route", "model", "backend", "stream"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "The gateway's own time per call, upstream time excluded.",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_ttft_seconds",
            "Time to first content token of streamed answers, from the answering attempt's start.",
            ["model", "backend"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "gateway_completion_tokens_per_second",
            "Generation speed of streamed answers after the first token.",
            ["model", "backend"],
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "gateway_inflight_requests",
            "Upstream calls in progress.",
            ["backend"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks_total",
            "Failed attempts after which the call went on to another attempt: another candidate, "
            "or the same one again (retries).",
            ["route", "from_backend", "reason"],
            registry=r,
        )
        self.attempts = Counter(
            "gateway_backend_attempts_total",
            "Upstream attempts, by result (`ok` or the failure reason).",
            ["backend", "model", "result"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "gateway_backend_circuit_state",
            "Circuit breaker per offer: 0 closed, 1 half-open, 2 open.",
            ["backend", "model"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.route_decisions = Counter(
            "gateway_route_decisions_total",
            "Routing decisions, by the first candidate chosen.",
            ["route", "task", "model", "backend"],
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited_total", "Requests refused with 429 by the gateway's own rate limits.", registry=r
        )
        self.rate_limiter_errors = Counter(
            "gateway_rate_limiter_errors_total",
            "Shared rate-limit store failures (requests were let through).",
            registry=r,
        )
        self.limits_admitted_locally = Counter(
            "gateway_limits_admitted_locally_total",
            "Limit checks passed on this process's own counts because the shared limit store failed: "
            "one per request at admission (key, team, route limits), one per candidate with its own rpm.",
            registry=r,
        )
        self.routing_stats_sync_failures = Counter(
            "gateway_routing_stats_sync_failures_total",
            "Rounds of sharing routing stats and circuits through Redis that failed (routing went on "
            "with this process's own observations, kept to be pushed once Redis answers).",
            registry=r,
        )
        self.config_reloads = Counter(
            "gateway_config_reloads_total", "Config reload attempts, by result.", ["result"], registry=r
        )
        # What an alert reads (as Prometheus's own `prometheus_config_last_reload_successful`):
        # counted failures alone fired for a file rewritten in place, read half written once
        # and applied whole a second later.
        self.config_last_reload_successful = Gauge(
            "gateway_config_last_reload_successful",
            "1 while the last config reload applied (or none was tried since start), 0 after one "
            "was rejected: the process serves an older config than its file until a reload applies.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.config_last_reload_successful.set(1)
        self.usage_dropped = Counter(
            "gateway_usage_events_dropped_total", "Usage events the recorder could not keep.", registry=r
        )
        self.usage_write_failures = Counter(
            "gateway_usage_write_failures_total",
            "Usage batch writes that failed (store down, writer process lost) and were retried.",
            registry=r,
        )
        self.response_store_errors = Counter(
            "gateway_response_store_errors_total",
            "Stored-responses operations (put, get, delete) that failed because the store did (issue 9).",
            ["op"],
            registry=r,
        )
        # -- upstream answers that are not what they claim (issue 11.6, 13.14) --
        self.malformed_events = Counter(
            "gateway_upstream_malformed_events_total",
            "Stream events dropped after content had flowed because they were not well-formed SSE.",
            ["backend"],
            registry=r,
        )
        self.usage_out_of_bounds = Counter(
            "gateway_upstream_usage_out_of_bounds_total",
            "Calls whose upstream reported usage past the gateway's bound per call (10^9 tokens "
            "in a field, or a cost past 10^6 USD at its prices): taken at the bound.",
            ["backend"],
            registry=r,
        )
        self.misconfigured = Counter(
            "gateway_backend_misconfigured_total",
            "Attempts whose upstream did not know the model (or URL) the gateway asked for.",
            ["backend", "model"],
            registry=r,
        )
        # -- tenants: authentication, key store, limits (gateway/tenants) ----------------------
        self.auth_failures = Counter(
            "gateway_auth_failures_total",
            "Failed authentications, by result (invalid: 401; throttled: 429 for the address).",
            ["result"],
            registry=r,
        )
        self.key_store_errors = Counter(
            "gateway_key_store_errors_total", "Key store reads that failed (the last keys loaded stay).", registry=r
        )
        self.limit_refusals = Counter(
            "gateway_limit_refusals_total",
            "Requests refused by a key, team, route or model limit, by limit (rpm, tpm, max_concurrent, budget) and scope.",
            ["limit", "scope"],
            registry=r,
        )
        self.candidates_skipped = Counter(
            "gateway_candidates_skipped_total",
            "Candidates passed over without a call: `full` (the backend's or the process's bound on "
            "calls in flight) or `model_limit` (the model's own rpm, all clients together).",
            ["backend", "reason"],
            registry=r,
        )
        for result in ("invalid", "throttled"):
            self.auth_failures.labels(result)  # zeros: an open gateway still has a series to show
        for op in ("put", "get", "delete"):
            self.response_store_errors.labels(op)  # zeros, as for auth failures
        # -- end tenants ---------------------------------------------------------------------
        for result in ("success", "failure"):
            self.config_reloads.labels(result)  # export zeros, so alerts and panels have a series
        # -- front door and background tasks (gateway.supervise, gateway.api.wire) ---------------
        self.background_task_restarts = Counter(
            "gateway_background_task_restarts_total",
            "Background tasks (config watcher, health prober, shared-state sync, usage recorder) "
            "restarted after an unexpected error.",
            ["task"],
            registry=r,
        )
        for task in BACKGROUND_TASKS:
            self.background_task_restarts.labels(task)  # zeros, so a panel or alert has a series
        self.http_rejected = Counter(
            "gateway_http_rejected_total",
            "Connections answered or closed by the HTTP front door before reaching a route, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in HTTP_REJECTION_REASONS:
            self.http_rejected.labels(reason)  # zeros, so a rate() has a series from the start
        self._children: dict[tuple[int | str, ...], MetricWrapperBase] = {}
        self._call_series: dict[tuple[str, str, str], _CallSeries] = {}
        self._offers: dict[tuple[str, str], _OfferSeries] = {}
        self._circuit_offers: set[tuple[str, str]] = set()

    # -- the call observer ---------------------------------------------------------------
    def attempt_started(self, offer: Offer) -> None:
        self._offer_series(offer).inflight(1)

    def attempt_finished(self, offer: Offer, attempt: Attempt, ttft_s: float | None) -> None:
        series = self._offer_series(offer)
        series.inflight(-1)
        if attempt.error is None:
            series.attempts_ok(1)
        else:
            self._child(self.attempts, offer.backend, offer.model, _reason(attempt.error)).inc()
            if attempt.error == "misconfigured":
                self._child(self.misconfigured, offer.backend, offer.model).inc()
        if attempt.malformed_events:
            self._child(self.malformed_events, offer.backend).inc(attempt.malformed_events)

    def call_finished(self, outcome: CallOutcome) -> None:
        offer = outcome.offer
        route = outcome.route or ""
        series = self._series(route, offer.model, offer.backend) if offer else self._series(route, UNKNOWN_MODEL, "")
        status = outcome.status
        requests = series.requests.get(status)
        if requests is None:
            requests = series.requests[status] = adder(
                self.requests.labels(series.route, series.model, series.backend, str(status))
            )
        requests(1)
        (series.stream_duration if outcome.stream else series.duration)(outcome.latency_s)
        series.overhead(outcome.overhead_s)
        attempts = outcome.attempts
        if attempts:
            first = attempts[0]
            task = outcome.task
            if first.backend == series.backend and first.model == series.model:  # the first candidate answered
                decided = series.decisions.get(task)
                if decided is None:
                    decided = series.decisions[task] = adder(
                        self.route_decisions.labels(route, task, first.model, first.backend)
                    )
                decided(1)
            else:
                self._child(self.route_decisions, route, task, first.model, first.backend).inc()
            for attempt in attempts[:-1]:
                # Not a hedge's loser nor an attempt called off (the client left during a
                # race): the call did not move on from either.
                if attempt.error is not None and attempt.error not in _NOT_FALLBACKS:
                    self._child(self.fallbacks, route, attempt.backend, _reason(attempt.error)).inc()
                if attempt.usage is not None:
                    # A stream that broke and was continued elsewhere (what it delivered), a
                    # hedge that lost (its prompt): tokens and cost of ITS backend.
                    model, backend = attempt.model, attempt.backend
                    for kind, tokens in (
                        ("prompt", attempt.usage.prompt_tokens),
                        ("completion", attempt.usage.completion_tokens),
                    ):
                        if tokens:
                            self._child(self.tokens, model, backend, kind).inc(tokens)
                    if attempt.cost_usd > 0:
                        self._child(self.cost, model, backend).inc(attempt.cost_usd)
        if offer is None:
            return
        usage = outcome.usage
        if usage is None and attempts:
            # A stream that broke and that no candidate continued: the broken attempt, the
            # call's last, holds what its backend served (the prompt, the tokens delivered).
            usage = attempts[-1].usage
        if usage is not None:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            if prompt:
                series.prompt_tokens(prompt)
            if completion:
                series.completion_tokens(completion)
            if prompt >= MAX_TOKENS_PER_CALL or completion >= MAX_TOKENS_PER_CALL or outcome.cost_usd > MAX_COST_USD:
                self._usage_out_of_bounds(outcome)
        cost = outcome.upstream_cost_usd
        if cost > 0:
            series.cost(cost)
        if outcome.stream and status < 400 and outcome.ttft_s is not None and outcome.carried is None:
            # Non-streamed answers have no first token apart from the whole body: their time
            # is in the duration histogram, and mixing it in here would blur TTFT. A continued
            # stream's first token came from the backend that broke, not from this one.
            series.ttft(outcome.ttft_s)
            speed = outcome.completion_tokens_per_second
            if speed is not None:
                series.tokens_per_second(speed)

    def _usage_out_of_bounds(self, outcome: CallOutcome) -> None:
        """An upstream's usage past what one call can be (`gateway.proxy.usage`): it was read
        as the bound, and the ledger and the limits take the call at it. A backend fault the
        gateway survives, so it is counted and logged, never silent."""
        offer, usage = outcome.offer, outcome.usage
        assert offer is not None and usage is not None
        self._child(self.usage_out_of_bounds, offer.backend).inc()
        log.warning(
            "backend %s (model %s) reported usage past the bound for one call (%d prompt, %d completion "
            "tokens, %.2f USD; request %s): taken at the bound",
            offer.backend,
            offer.model,
            usage.prompt_tokens,
            usage.completion_tokens,
            outcome.cost_usd,
            outcome.request_id,
        )

    def _series(self, route: str, model: str, backend: str) -> _CallSeries:
        key = (route, model, backend)
        series = self._call_series.get(key)
        if series is None:
            series = self._call_series[key] = _CallSeries(self, route, model, backend)
        return series

    def _offer_series(self, offer: Offer) -> _OfferSeries:
        series = self._offers.get(offer.key)
        if series is None:
            series = self._offers[offer.key] = _OfferSeries(self, offer.backend, offer.model)
        return series

    # -- hooks for other parts -------------------------------------------------------------
    def request_rejected(self, status: int, route: str | None = None) -> None:
        """A call refused before any backend was chosen (bad request, auth, unknown model, 429)."""
        self._child(self.requests, route or "", UNKNOWN_MODEL, "", str(status)).inc()

    def rate_limit_hit(self) -> None:
        self.rate_limited.inc()

    def rate_limiter_error(self) -> None:
        self.rate_limiter_errors.inc()

    def routing_stats_sync_failed(self) -> None:
        """`routing.shared` reports each sync round with Redis that failed."""
        self.routing_stats_sync_failures.inc()

    def admitted_on_local_counts(self) -> None:
        self.limits_admitted_locally.inc()

    def auth_failed(self, result: str) -> None:
        self._child(self.auth_failures, result).inc()

    def key_store_error(self) -> None:
        self.key_store_errors.inc()

    def limit_refused(self, limit: str, scope: str) -> None:
        self._child(self.limit_refusals, limit, scope).inc()

    def candidate_skipped(self, backend: str, reason: str) -> None:
        self._child(self.candidates_skipped, backend, reason).inc()

    def set_circuit_state(self, backend: str, model: str, state: CircuitState | int) -> None:
        """Routing's circuit breakers report each transition here."""
        self._circuit_offers.add((backend, model))
        self._child(self.circuit_state, backend, model).set(int(state))

    def usage_events_dropped(self, n: int = 1) -> None:
        """The usage recorder reports events it had to drop (queue full, store down)."""
        self.usage_dropped.inc(n)

    def usage_write_failed(self) -> None:
        """The usage recorder reports each failed batch write (it keeps the batch and retries)."""
        self.usage_write_failures.inc()

    def response_store_error(self, op: str) -> None:
        """The stored-responses store failed an operation (`put`, `get` or `delete`)."""
        self._child(self.response_store_errors, op if op in ("put", "get", "delete") else "other").inc()

    def background_task_restarted(self, task: str) -> None:
        """`gateway.supervise` reports a background task it restarts (task names are fixed in code)."""
        self._child(self.background_task_restarts, task if task in BACKGROUND_TASKS else "other").inc()

    def http_rejection(self, reason: str) -> None:
        """The HTTP front door (gateway.api.wire) refused a request or closed a connection."""
        self._child(self.http_rejected, reason if reason in HTTP_REJECTION_REASONS else "other").inc()

    def config_reload(self, result: str) -> None:
        """Wired to `ConfigHolder.on_result`: 'success' or 'failure'."""
        self._child(self.config_reloads, "success" if result == "success" else "failure").inc()
        self.config_last_reload_successful.set(1 if result == "success" else 0)

    def track_offers(self, snapshot: ConfigSnapshot) -> None:
        """Give every configured offer a circuit-state series (closed until routing says
        otherwise) and zero misconfiguration/malformed/usage-bound counts, and drop the circuit series of
        offers a reload removed (with several workers, set them closed)."""
        current = {o.key for offers in snapshot.offers.values() for o in offers}
        for key in current - self._circuit_offers:
            self._child(self.circuit_state, *key).set(CircuitState.CLOSED)
            # Zeros for the counters the alerts compare, so they have data before any failure.
            self._child(self.misconfigured, *key)
            self._child(self.malformed_events, key[0])
            self._child(self.usage_out_of_bounds, key[0])
            for reason in ("full", "model_limit"):
                self._child(self.candidates_skipped, key[0], reason)
        for key in self._circuit_offers - current:
            if self.multiprocess_dir is None:
                self.circuit_state.remove(*key)
                self._children.pop((id(self.circuit_state), *key), None)
            else:
                # prometheus-client cannot remove a series across processes: it would keep the
                # last state routing reported, an open circuit alerting for an offer no longer
                # configured until a restart. Closed, it alerts on nothing.
                self._child(self.circuit_state, *key).set(CircuitState.CLOSED)
        self._circuit_offers = current

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The text exposition; with several workers, every worker's values merged.

        Reads files in multiprocess mode: call it off the event loop.
        """
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()
        MultiProcessCollector(merged, self.multiprocess_dir)
        return generate_latest(merged), CONTENT_TYPE_LATEST

    def process_started(self) -> None:
        """Forget the live gauges of workers that died without saying so (SIGKILL, OOM), so
        their in-flight counts do not haunt the sums."""
        if self.multiprocess_dir is None:
            return
        from prometheus_client.multiprocess import mark_process_dead

        for pid in _pids_with_live_gauges(Path(self.multiprocess_dir)):
            if pid != os.getpid() and not _alive(pid):
                mark_process_dead(pid, self.multiprocess_dir)

    def process_stopping(self) -> None:
        """This worker's live gauges leave the sums; its counters stay (totals survive)."""
        if self.multiprocess_dir is None:
            return
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(os.getpid(), self.multiprocess_dir)

    def _child(self, metric: _Metric, *labels: str) -> _Metric:
        """`metric.labels(*labels)`, remembered: the per-call label validation paid once."""
        key: tuple[int | str, ...] = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return cast(_Metric, child)  # keyed by the metric's id: a child of that metric


class _CallSeries:
    """What a finished call of one (route, model, backend) adds to, resolved once: a call
    then costs one dictionary lookup and the additions (see `gateway.metric_values`)."""

    __slots__ = (
        "backend",
        "completion_tokens",
        "cost",
        "decisions",
        "duration",
        "model",
        "overhead",
        "prompt_tokens",
        "requests",
        "route",
        "stream_duration",
        "tokens_per_second",
        "ttft",
    )

    def __init__(self, metrics: Metrics, route: str, model: str, backend: str) -> None:
        self.route, self.model, self.backend = route, model, backend
        self.requests: dict[int, Add] = {}  # status -> adder
        self.decisions: dict[str, Add] = {}  # task -> gateway_route_decisions_total when this offer was first
        self.duration = observer(metrics.duration.labels(route, model, backend, "false"))
        self.stream_duration = observer(metrics.duration.labels(route, model, backend, "true"))
        self.overhead = observer(metrics.overhead.labels(route))
        if not backend:
            return  # no backend answered: no tokens, cost or speed to count
        self.prompt_tokens = adder(metrics.tokens.labels(model, backend, "prompt"))
        self.completion_tokens = adder(metrics.tokens.labels(model, backend, "completion"))
        self.cost = adder(metrics.cost.labels(model, backend))
        self.ttft = observer(metrics.ttft.labels(model, backend))
        self.tokens_per_second = observer(metrics.tokens_per_second.labels(model, backend))


class _OfferSeries:
    """What each attempt on one backend+model adds to."""

    __slots__ = ("attempts_ok", "inflight")

    def __init__(self, metrics: Metrics, backend: str, model: str) -> None:
        self.inflight = adder(metrics.inflight.labels(backend))
        self.attempts_ok = adder(metrics.attempts.labels(backend, model, "ok"))


def _reason(value: str) -> str:
    """Failure reasons are bounded labels already; anything else is folded into `other`."""
    return value if _SAFE_REASON.fullmatch(value) else "other"


def _pids_with_live_gauges(directory: Path) -> set[int]:
    pids = set()
    for path in directory.glob("gauge_live*_*.db"):
        tail = path.stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """Called by `gateway serve` before workers start: with several workers, give them a
    clean shared directory (PROMETHEUS_MULTIPROC_DIR if the operator set one, else a fresh
    temporary one). Values left by an earlier run would otherwise be added to this one's."""
    if workers <= 1 and not os.environ.get(MULTIPROC_ENV):
        return None
    import tempfile

    preset = os.environ.get(MULTIPROC_ENV)
    directory = Path(preset) if preset else Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory
