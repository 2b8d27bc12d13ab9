"""Which offers a request may go to, before filters and ranking.

For a route: its `tasks[task]` list when the task has one (then, as a fallback tier, its
`models` unless `task_fallback: false`), else its `models`. For a canonical model id: every
enabled backend serving it. A request's `models` array appends further targets, each a tier
after the previous one, so its order is kept whatever the strategy. Only offers that can
answer the endpoint at all are gathered: of its kind (`kind: embedding` offers for
`/v1/embeddings`, chat offers for every other endpoint), and for the endpoints that have no
translation through chat (embeddings, legacy completions) only offers whose backend serves
the endpoint natively (`apis:`). Another offer is not a candidate rather than one a filter
rejects; `target_offers` tells the error path what the target would have had.

What one target offers for one task depends on the config alone, so it is worked out once
per snapshot (kept in `snapshot.memo`) and shared by every request: a request naming one
target gets that tuple as is; only a `models` array builds a new list, to renumber tiers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from gateway.config.schema import ModelKind
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.config.tasks import Task
from gateway.protocol.errors import GatewayError
from gateway.routing.resolve import Target, resolve

# The kind of model each endpoint needs: embeddings from embedding models, the rest from chat.
EMBEDDINGS_ENDPOINT = "embeddings"
# Endpoints with no translation through chat: only a backend serving them natively can answer.
NATIVE_ONLY = frozenset({"completions", "embeddings"})


def kind_for(endpoint: str) -> ModelKind:
    return "embedding" if endpoint == EMBEDDINGS_ENDPOINT else "chat"


def can_answer(offer: Offer, endpoint: str) -> bool:
    """Whether the offer can answer the endpoint at all (worked out once per snapshot)."""
    if offer.spec.kind != kind_for(endpoint):
        return False
    return endpoint not in NATIVE_ONLY or endpoint in offer.apis


@dataclass(frozen=True, slots=True)
class Candidate:
    """One offer as this request may use it. Shared between requests: never changed."""

    offer: Offer
    tier: int  # 0 first; a later tier is only tried after every earlier one
    position: int  # order of appearance in the config/request, the last tie-break
    source: str  # where it came from, for the explanation
    key: tuple[str, str]  # (backend, model)
    names: tuple[str, str]  # what a client may call its provider: backend name and type, lower-cased
    # Declared capabilities (`json_schema` implies `json`); None: undeclared, assumed capable.
    capabilities: frozenset[str] | None = None
    # The offer's figures every request's filters and cost ranking read, copied from its
    # spec: a slots attribute is several times cheaper to read than a pydantic field.
    context_length: int = 0
    max_output_tokens: int | None = None
    input_price: float = 0.0
    output_price: float = 0.0


@dataclass(frozen=True, slots=True)
class _TargetCandidates:
    candidates: tuple[Candidate, ...]  # tiers and positions counted from 0
    tiers: int  # tiers this target takes, empty ones included


def gather(
    targets: Sequence[Target], task: str, snapshot: ConfigSnapshot, endpoint: str = "chat"
) -> Sequence[Candidate]:
    if len(targets) == 1:
        return _for_target(targets[0], task, snapshot, endpoint).candidates
    # A `models` array: remembered too, but only the first MAX_REMEMBERED_LISTS distinct
    # ones of at most MAX_REMEMBERED_LIST_CHARS characters, as clients choose these lists
    # (counted alone, 1,024 lists of 100,000 aliased names each were held until a reload).
    names = tuple(t.requested for t in targets)
    if sum(map(len, names)) > MAX_REMEMBERED_LIST_CHARS:
        return _combine(targets, task, snapshot, endpoint)
    memo_key = ("candidate lists", names, task, endpoint)
    found = snapshot.memo.get(memo_key)
    if found is None:
        found = _combine(targets, task, snapshot, endpoint)
        remembered = snapshot.memo.get(_LISTS, 0)
        if remembered < MAX_REMEMBERED_LISTS:
            snapshot.memo[memo_key] = found
            snapshot.memo[_LISTS] = remembered + 1
    return found


MAX_REMEMBERED_LISTS = 1024
MAX_REMEMBERED_LIST_CHARS = 4096
_LISTS = "candidate lists remembered"


def _combine(targets: Sequence[Target], task: str, snapshot: ConfigSnapshot, endpoint: str) -> tuple[Candidate, ...]:
    out: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    tier = 0
    for target in targets:
        found = _for_target(target, task, snapshot, endpoint)
        for c in found.candidates:
            if c.key not in seen:
                seen.add(c.key)
                out.append(replace(c, tier=tier + c.tier, position=len(out)))
        tier += found.tiers
    return tuple(out)


def _for_target(target: Target, task: str, snapshot: ConfigSnapshot, endpoint: str) -> _TargetCandidates:
    route = target.route
    memo_key = (
        ("candidates", target.route_name, task, endpoint)
        if route is not None
        else ("candidates", target.model, endpoint)
    )
    found = snapshot.memo.get(memo_key)
    if found is None:
        found = snapshot.memo[memo_key] = _build(target, task, snapshot, endpoint)
    return found


def may_answer_natively(fields: Mapping[str, Any], model: str, snapshot: ConfigSnapshot, endpoint: str) -> bool:
    """Whether an offer the request names could serve `endpoint` natively (its `apis`): if
    none can, an ingress translates the request up front rather than routing it on a view of
    its body and translating it afterwards. True when unsure (a `models` list, a name routing
    will refuse). Remembered per snapshot for the names `resolve` remembers."""
    if fields.get("models") is not None:
        return True
    key = ("natively", model, endpoint)
    found: bool | None = snapshot.memo.get(key)
    if found is None:
        try:
            target = resolve(model, snapshot)
        except GatewayError:
            return True  # routing says why
        found = any(endpoint in offer.apis for offer in target_offers(target, snapshot))
        if ("resolve", model) in snapshot.memo:  # bounded as resolve's memo is
            snapshot.memo[key] = found
    return found


def target_offers(target: Target, snapshot: ConfigSnapshot) -> list[Offer]:
    """Every enabled offer of the target's models, whatever the endpoint (for errors)."""
    route = target.route
    models = [target.model] if route is None else [*route.models, *(m for ms in route.tasks.values() for m in ms)]
    return [o for m in dict.fromkeys(models) if m is not None for o in snapshot.offers.get(m, ())]


def _build(target: Target, task: str, snapshot: ConfigSnapshot, endpoint: str) -> _TargetCandidates:
    out: list[Candidate] = []
    seen: set[tuple[str, str]] = set()

    def add(models: Sequence[str], tier: int, source: str) -> None:
        for model in models:
            for offer in snapshot.offers.get(model, ()):
                if offer.key not in seen and can_answer(offer, endpoint):
                    seen.add(offer.key)
                    out.append(_candidate(offer, tier, len(out), source, snapshot))

    route = target.route
    if route is None:
        model = target.model
        assert model is not None  # a Target names exactly one of route / model
        add((model,), 0, f"model {model}")
        return _TargetCandidates(tuple(out), 1)
    tier = 0
    # The YAML's keys are Task names; a name from a plugged classifier that is none finds nothing.
    task_models = route.tasks.get(cast(Task, task))
    if task_models:
        add(task_models, tier, f"route {target.route_name} tasks.{task}")
        tier += 1
        if not route.task_fallback:
            return _TargetCandidates(tuple(out), tier)
    add(route.models, tier, f"route {target.route_name} models")
    return _TargetCandidates(tuple(out), tier + 1)


def _candidate(offer: Offer, tier: int, position: int, source: str, snapshot: ConfigSnapshot) -> Candidate:
    config = snapshot.backends.get(offer.backend)
    names = (offer.backend.lower(), (config.type if config else offer.backend).lower())
    spec = offer.spec
    return Candidate(
        offer,
        tier,
        position,
        source,
        offer.key,
        names,
        _declared(offer, snapshot),
        spec.context_length,
        spec.max_output_tokens,
        spec.input_price,
        spec.output_price,
    )


def _declared(offer: Offer, snapshot: ConfigSnapshot) -> frozenset[str] | None:
    declared = offer.spec.capabilities
    if declared is None:
        info = snapshot.model_info(offer.model)
        declared = info.capabilities if info else None
    if declared is None:
        return None
    caps = set(declared)
    if "json_schema" in caps:
        caps.add("json")  # a model that follows a schema can emit plain JSON
    return frozenset(caps)
