"""The routing decision, in one place: which offers to try for this request, in which order,
and why.

    resolve `model` (+ `models` array, `aliases:`)  ->  classify the task
        ->  gather the candidates that can answer the endpoint
        ->  filter (provider prefs, context, capabilities, price, circuit)  ->  rank by strategy

`plan()` returns a `RoutingDecision` whose `reports` (every candidate with each filter's
verdict, its score and rank) are what `POST /v1/route/explain` and `gateway explain` render;
`decide()` is what the request path calls: the same, but raising the OpenAI-shaped error when
nothing is eligible. The request path needs only the try order, so the reports are built
when first read (the explanation, the no-candidate error), from what the decision kept; the
per-request work is a pass/fail test and a score per candidate. Pure over its inputs
(request, config snapshot, observed state, clock, rng): no I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.config.schema import ClassifierConfig, FallbackSettings, MaxPrice, RoutingSettings
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.chat import ChatRequest
from gateway.protocol.errors import ContextLengthExceeded, GatewayError, echoed, retry_headers
from gateway.routing.admission import Admission
from gateway.routing.candidates import NATIVE_ONLY, Candidate, gather, kind_for, target_offers
from gateway.routing.classify import EMBEDDINGS, TaskGuess, classify
from gateway.routing.facts import RequestFacts, request_facts
from gateway.routing.filters import FilterContext, PromptOverflow, evaluate, price_ceilings
from gateway.routing.filters import eligible as filter_eligible
from gateway.routing.health import CircuitState
from gateway.routing.live import LiveState
from gateway.routing.overrides import ProviderPrefs, provider_prefs, requested_models
from gateway.routing.rank import Entry, first_per_model, order_candidates, ranked, try_order
from gateway.routing.reasons import Score, Verdict
from gateway.routing.resolve import Target, resolve
from gateway.routing.strategies import SORT_STRATEGY, Ranking


@dataclass(slots=True)
class CandidateReport:
    """One candidate as the decision saw it."""

    offer: Offer
    tier: int
    source: str
    verdicts: tuple[Verdict, ...]
    score: Score | None = None  # None when filtered out
    rank: int | None = None  # 1-based position in the try order; None when not tried

    @property
    def eligible(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def rejections(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]


@dataclass(slots=True)
class _Workings:
    """What the decision looked at, kept so the explanation can be built if someone reads it.

    Everything here was fixed when the decision was made (the admissions are the circuit
    states of that moment), so verdicts computed later are the ones the decision applied.
    """

    considered: Sequence[Candidate]
    admissions: Sequence[Admission | None]
    ctx: FilterContext
    ceilings: tuple[float | None, float | None]
    entries: list[Entry]  # every eligible candidate, ranked
    explored: bool  # exploration moved the first entry there
    tried: list[Entry]

    def reports(self) -> tuple[CandidateReport, ...]:
        scores = {id(r.candidate): r.score for r in ranked(self.entries, self.explored)}
        ranks = {id(r.candidate): position for position, r in enumerate(ranked(self.tried, False), 1)}
        out = []
        for candidate, admission in zip(self.considered, self.admissions):
            verdicts, _ = evaluate(candidate, self.ctx, self.ceilings, admission)
            key = id(candidate)
            out.append(
                CandidateReport(
                    candidate.offer, candidate.tier, candidate.source, verdicts, scores.get(key), ranks.get(key)
                )
            )
        return tuple(out)


@dataclass(slots=True)
class RoutingDecision:
    """What `plan()` decided; not changed afterwards (plain slots: built on every request)."""

    route: str | None
    task: str
    candidates: tuple[Offer, ...]  # the try order
    max_attempts: int = 3
    deadline_s: float = 120.0
    fallback: bool = True
    # For the explanation and the fallback loop.
    requested: str = ""
    strategy: str = "ordered"
    task_reason: str = ""
    facts: RequestFacts | None = None
    prefs: ProviderPrefs | None = None
    retry: FallbackSettings = field(default_factory=FallbackSettings)
    error: GatewayError | None = None  # set when no candidate is eligible
    workings: _Workings | None = field(default=None, repr=False)
    alias: str | None = None  # the `aliases:` pattern that mapped the requested name, if one did
    endpoint: str = "chat"  # the API asked: chat, messages, responses, completions, embeddings
    _reports: tuple[CandidateReport, ...] | None = field(default=None, init=False, repr=False)

    def probes(self, offer: Offer) -> bool:
        """Whether this request was admitted to `offer` as its half-open circuit's probe: the
        one call the backend sees per cooldown (no same-candidate retry after it fails)."""
        workings = self.workings
        if workings is None:
            return False
        for candidate, admission in zip(workings.considered, workings.admissions):
            if candidate.offer is offer:
                return admission is not None and admission.state is CircuitState.HALF_OPEN
        return False

    @property
    def reports(self) -> tuple[CandidateReport, ...]:
        """Every candidate with each filter's verdict, its score and rank: built when first
        read (explanations, the no-candidate error), not on every request."""
        if self._reports is None:
            self._reports = self.workings.reports() if self.workings is not None else ()
        return self._reports


@dataclass(frozen=True, slots=True)
class _RouteTerms:
    """What the decision reads of its first target's route and of the gateway's settings,
    read once per snapshot (`route_terms`): a pydantic model's field costs several times a
    slot's to read (its class's `__getattr__` keeps CPython from specialising the read), and
    the decision read a dozen of them on every request."""

    strategy: str  # the route's; "cost" for a canonical model id
    max_price: MaxPrice | None
    weights: Mapping[str, float]
    max_attempts: int  # the route's, else the gateway's fallback settings'
    deadline_s: float
    fallback: bool
    classifier: ClassifierConfig
    routing: RoutingSettings
    retry: FallbackSettings


def route_terms(target: Target, snapshot: ConfigSnapshot) -> _RouteTerms:
    """`_RouteTerms` of the target's route (or of no route: a canonical model id), kept in the
    snapshot's memo: one per route name, so bounded by the config."""
    key = ("route terms", target.route_name)
    found: _RouteTerms | None = snapshot.memo.get(key)
    if found is None:
        settings = snapshot.config.gateway
        fallback, route = settings.fallback, target.route
        found = snapshot.memo[key] = _RouteTerms(
            # A canonical model id: cheapest provider first, as OpenRouter does by default.
            route.strategy if route else "cost",
            route.max_price if route else None,
            route.weights if route else {},
            route.max_attempts if route and route.max_attempts else fallback.max_attempts,
            route.deadline_s if route and route.deadline_s else fallback.deadline_s,
            route.fallback if route else True,
            settings.classifier,
            settings.routing,
            fallback,
        )
    return found


def _strategy(targets: list[Target], prefs: ProviderPrefs, terms: _RouteTerms) -> str:
    if prefs.sort:
        return SORT_STRATEGY[prefs.sort]
    first = targets[0]
    if first.sort:
        return SORT_STRATEGY[first.sort]
    return terms.strategy


def plan(
    chat: ChatRequest,
    headers: Mapping[str, str],
    snapshot: ConfigSnapshot,
    live: LiveState | None = None,
    *,
    now: float | None = None,
    explore: bool = True,
    endpoint: str = "chat",
) -> RoutingDecision:
    """The decision, its explanation readable from `reports`. Raises only for a bad request (400/404)."""
    # A pass-through's prompt is read first (its view, or the translation when the view gives
    # up): a malformed body gets its 400 before routing's own errors (an unknown model's 404),
    # and a translation made now is what every field below is read from.
    chat.prompt  # noqa: B018  (a property read for its effect)
    settings = snapshot.config.gateway
    payload = chat.fields
    names = requested_models(payload, chat.model)
    targets = [resolve(name, snapshot) for name in names]
    prefs = provider_prefs(payload)
    facts = request_facts(chat, settings)
    terms = route_terms(targets[0], snapshot)
    kind = kind_for(endpoint)
    # Embeddings are their own category (text to embed says nothing about a chat task).
    guess: TaskGuess = EMBEDDINGS if kind == "embedding" else classify(chat, headers, facts, terms.classifier)
    strategy = _strategy(targets, prefs, terms)
    if now is None:
        now = live.clock() if live is not None else time.time()

    ctx = FilterContext(facts, prefs, terms.max_price, snapshot)
    ceilings = price_ceilings(ctx)
    considered = gather(targets, guess.task, snapshot, endpoint)
    admissions: Sequence[Admission | None] = (
        live.admissions(considered, now, snapshot) if live is not None else [None] * len(considered)
    )
    eligible = filter_eligible(considered, admissions, ctx, ceilings)

    rng = live.rng if live is not None and explore else None
    entries, explored = order_candidates(
        eligible, Ranking(strategy, facts, live, terms.routing, terms.weights, prefs.order, rng)
    )
    tried = first_per_model(entries) if not prefs.allow_fallbacks and not prefs.order else entries

    decision = RoutingDecision(  # positionally: this runs on every request
        targets[0].route_name,  # route
        guess.task,  # task
        try_order(tried),  # candidates
        terms.max_attempts,
        terms.deadline_s,
        terms.fallback,
        chat.model,  # requested
        strategy,
        guess.reason,  # task_reason
        facts,
        prefs,
        terms.retry,
        None,  # error
        _Workings(considered, admissions, ctx, ceilings, entries, explored, tried),
        targets[0].alias,  # alias
        endpoint,
    )
    if not tried:
        decision.error = (
            _no_candidate_error(chat.model, decision.reports, endpoint, admissions)
            if considered
            else _cannot_answer_error(chat.model, endpoint, kind, targets, snapshot)
        )
    return decision


def decide(
    chat: ChatRequest,
    headers: Mapping[str, str],
    snapshot: ConfigSnapshot,
    stats: LiveState | None = None,
    endpoint: str = "chat",
) -> RoutingDecision:
    """The request path's entry point: the try order, or the error that says why there is none."""
    decision = plan(chat, headers, snapshot, stats, endpoint=endpoint)
    error = decision.error
    if error is not None:
        # The error's traceback holds this frame: were the frame to hold the error still
        # (through `decision` or `error`), the request's frames, its body among them, would
        # wait in a reference cycle for the collector instead of going when the 4xx/5xx is sent.
        del decision
        try:
            raise error
        finally:
            del error
    return decision


def _cannot_answer_error(
    model: str, endpoint: str, kind: str, targets: Sequence[Target], snapshot: ConfigSnapshot
) -> GatewayError:
    """No offer of the request's targets can answer this endpoint: why, for the client.

    Offers of the right kind whose backends lack the endpoint's native API (completions and
    embeddings have no translation): a 400 naming the API. Offers of the other kind only: the
    client called the wrong endpoint. None at all: no enabled backend (503)."""
    offers = [o for t in targets for o in target_offers(t, snapshot)]
    if endpoint in NATIVE_ONLY and any(o.spec.kind == kind for o in offers):
        return GatewayError(
            400,
            f"No backend of `{echoed(model)}` serves POST /v1/{endpoint}: it has no translation through chat, so it "
            f"needs a backend whose `apis` include `{endpoint}` (vLLM and OpenAI-compatible servers do by default).",
            code="endpoint_not_supported",
            param="model",
        )
    return wrong_kind_error(model, endpoint, kind, offers) or _no_candidate_error(model, ())


def wrong_kind_error(model: str, endpoint: str, kind: str, offers: Sequence[Offer]) -> GatewayError | None:
    """The 400 for a model whose offers are all of the other kind (an embedding model asked to
    chat, a chat model asked to embed): the client called the wrong endpoint. None otherwise."""
    if not offers or any(o.spec.kind == kind for o in offers):
        return None
    if kind == "embedding":
        message = (
            f"`{echoed(model)}` is not an embedding model: /v1/embeddings needs a model or route of `kind: embedding`."
        )
    else:
        message = (
            f"`{echoed(model)}` is an embedding model: call POST /v1/embeddings with it, not the {endpoint} endpoint."
        )
    return GatewayError(400, message, code="model_not_supported", param="model")


# The field that holds each endpoint's prompt: what a context-length 400 names as `param`.
PROMPT_PARAM = {
    "chat": "messages",
    "messages": "messages",
    "responses": "input",
    "completions": "prompt",
    "embeddings": "input",
}


def _no_candidate_error(
    model: str,
    reports: Sequence[CandidateReport],
    endpoint: str = "chat",
    admissions: Sequence[Admission | None] = (),
) -> GatewayError:
    """400 when the prompt fits no candidate's context, or when every candidate is refused for
    what the request asks; 503 when a circuit refused one (a wait may help), with a
    Retry-After when the soonest such circuit half-opens at a known time; each reason named.
    `admissions` are the reports' candidates' own, in order."""
    if not reports:
        return GatewayError(
            503,
            f"No enabled backend serves `{echoed(model)}` (check API keys and `enabled`).",
            code="no_backend_available",
        )
    reasons = []
    metadata = []
    for rep in reports:
        rejected = rep.rejections
        # `model on backend`: backend/author/slug reads as a doubled prefix (mock/mock/mock-small).
        reasons.append(f"{rep.offer.model} on {rep.offer.backend}: " + "; ".join(v.reason for v in rejected))
        metadata.append(
            {"backend": rep.offer.backend, "model": rep.offer.model, "reasons": {v.filter: v.reason for v in rejected}}
        )
    detail = " | ".join(reasons)
    if all(any(v.filter == "context_length" for v in rep.rejections) for rep in reports):
        message = f"The request does not fit the context window of any candidate for `{echoed(model)}`: {detail}"
        param = PROMPT_PARAM.get(endpoint, "messages")
        overflows = [v for rep in reports for v in rep.rejections if isinstance(v, PromptOverflow)]
        if not overflows:  # every max_tokens above its candidate's max output: not the prompt
            return GatewayError(
                400, message, code="context_length_exceeded", param=param, metadata={"candidates": metadata}
            )
        return ContextLengthExceeded(
            message,
            param=param,
            prompt_tokens=overflows[0].prompt_tokens,
            maximum=max(v.room for v in overflows),  # the longest prompt any candidate takes
            metadata={"candidates": metadata},
        )
    # 503 (try again) only when waiting can help: some candidate was refused by its circuit
    # alone. Refused for what the request asks (tools, images, a price ceiling, provider
    # preferences), no retry will find one: a 503 made the SDKs retry it, and Anthropic's
    # clients, which read it as 529 overloaded, retry for minutes (Claude Code against a
    # route of models without tools).
    passing = [i for i, rep in enumerate(reports) if all(v.filter == "circuit" for v in rep.rejections)]
    headers = None
    if passing and admissions:
        # The SDKs retry a 503 within a second or two, well inside a circuit's cooldown, and
        # give up: told when the first circuit half-opens, they wait for it (up to a minute).
        waits = [a.opens_in_s if (a := admissions[i]) is not None else None for i in passing]
        known = [wait for wait in waits if wait is not None]
        if known and len(known) == len(waits):
            headers = retry_headers(max(1, math.ceil(min(known))))
    return GatewayError(
        503 if passing else 400,
        f"No backend can take this request for `{echoed(model)}`: {detail}",
        code="no_backend_available",
        metadata={"candidates": metadata},
        headers=headers,
    )
