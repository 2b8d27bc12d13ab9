"""Filters: can this candidate serve this request at all?

Each filter looks at one candidate and returns a `Verdict` (passed or not, and why). For an
explanation (and the error when nothing is eligible) all of them run for every candidate, so
the whole picture shows. The request path only needs to know whether a candidate passes:
`eligible()` answers that with the same comparisons and builds no verdict. A candidate that
fails any filter is not tried.

- `provider`: the request's `provider.only` / `ignore`, and `order` with `allow_fallbacks: false`;
- `context_length`: estimated prompt tokens + completion budget must fit the model's window,
  and an explicit `max_tokens` must not exceed the backend's `max_output_tokens`;
- `capabilities`: tools, json / json_schema response formats, images, when the model (or this
  backend's deployment of it) declares `capabilities`; undeclared means assumed capable;
- `max_price`: list prices under the request's `provider.max_price` or the route's `max_price`;
- `circuit`: circuit breaker not open, backend not failing its health checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config.schema import MaxPrice
from gateway.config.snapshot import ConfigSnapshot
from gateway.money import Dollars
from gateway.routing.admission import Admission
from gateway.routing.candidates import Candidate
from gateway.routing.facts import RequestFacts
from gateway.routing.overrides import NO_PREFS, ProviderPrefs
from gateway.routing.reasons import Verdict

__all__ = [
    "FILTERS",
    "FilterContext",
    "PromptOverflow",
    "Verdict",
    "completion_budget",
    "eligible",
    "evaluate",
    "passes",
    "price_ceilings",
]

FILTERS = ("provider", "context_length", "capabilities", "max_price", "circuit")


@dataclass(slots=True)
class FilterContext:
    """Everything filters read besides the candidate; built once per request."""

    facts: RequestFacts
    prefs: ProviderPrefs
    route_max_price: MaxPrice | None
    snapshot: ConfigSnapshot


# Shared verdicts for the common passes: no object built per candidate for them.
NO_PREFERENCES = Verdict("provider", True, "no provider preferences")
NEEDS_NOTHING = Verdict("capabilities", True, "needs nothing special")
NO_CEILING = Verdict("max_price", True, "no price ceiling")
NO_OBSERVATIONS = Verdict("circuit", True, "no observations")


class PromptOverflow(Verdict):
    """The context filter's refusal of a prompt too long for this candidate, with its figures:
    the no-candidate error gives them to clients that read them (Anthropic's `prompt is too
    long: N tokens > M maximum`, which Claude Code compacts on)."""

    __slots__ = ("prompt_tokens", "room")

    def __init__(self, prompt_tokens: int, budget: int, context: int) -> None:
        super().__init__(
            "context_length",
            False,
            "~{:,} prompt + {:,} completion tokens exceed the context of {:,}",
            prompt_tokens,
            budget,
            context,
        )
        self.prompt_tokens = prompt_tokens
        self.room = max(context - budget, 0)  # the longest prompt this candidate takes


def check_provider(candidate: Candidate, ctx: FilterContext) -> Verdict:
    prefs = ctx.prefs
    if prefs is NO_PREFS:
        return NO_PREFERENCES
    names = candidate.names
    if prefs.only is not None and not any(n in prefs.only for n in names):
        return Verdict("provider", False, "not in provider.only")
    if any(n in prefs.ignore for n in names):
        return Verdict("provider", False, "listed in provider.ignore")
    if prefs.order and not prefs.allow_fallbacks and not any(n in prefs.order for n in names):
        return Verdict("provider", False, "not in provider.order and allow_fallbacks is false")
    return Verdict("provider", True, "allowed by provider preferences")


def completion_budget(candidate: Candidate, facts: RequestFacts) -> int:
    """Tokens to reserve for the answer: what was asked, else the reserve capped by the backend.
    The context filter and the cost strategy both read it (`eligible` repeats it in line)."""
    limit = candidate.max_output_tokens
    reserve = facts.completion_tokens
    if facts.completion_asked or limit is None or reserve <= limit:
        return reserve
    return limit


def check_context(candidate: Candidate, ctx: FilterContext) -> Verdict:
    spec = candidate.offer.spec
    facts = ctx.facts
    if (
        facts.completion_asked
        and spec.max_output_tokens is not None
        and facts.completion_tokens > spec.max_output_tokens
    ):
        return Verdict(
            "context_length",
            False,
            "max_tokens {:,} exceeds this backend's max output {:,}",
            facts.completion_tokens,
            spec.max_output_tokens,
        )
    budget = completion_budget(candidate, facts)
    need = facts.prompt_tokens + budget
    if need > spec.context_length:
        return PromptOverflow(facts.prompt_tokens, budget, spec.context_length)
    return Verdict("context_length", True, "~{:,} of {:,} tokens", need, spec.context_length)


def check_capabilities(candidate: Candidate, ctx: FilterContext) -> Verdict:
    needs = ctx.facts.needs
    if not needs:
        return NEEDS_NOTHING
    declared = candidate.capabilities  # the offer's, else its model's; worked out when gathered
    if declared is None:
        return Verdict("capabilities", True, "capabilities not declared: assumed capable")
    missing = needs - declared
    if missing:
        return Verdict("capabilities", False, "does not declare {}", ", ".join(sorted(missing)))
    return Verdict("capabilities", True, "declares {}", ", ".join(sorted(needs)))


def price_ceilings(ctx: FilterContext) -> tuple[float | None, float | None]:
    """The tighter of the request's and the route's ceilings, per prompt and completion."""
    prompt, completion = ctx.prefs.max_prompt_price, ctx.prefs.max_completion_price
    route = ctx.route_max_price
    if route is not None:
        prompt = route.prompt if prompt is None else (prompt if route.prompt is None else min(prompt, route.prompt))
        completion = (
            route.completion
            if completion is None
            else (completion if route.completion is None else min(completion, route.completion))
        )
    return prompt, completion


def check_price(candidate: Candidate, ctx: FilterContext, ceilings: tuple[float | None, float | None]) -> Verdict:
    prompt, completion = ceilings
    if prompt is None and completion is None:
        return NO_CEILING
    spec = candidate.offer.spec
    if prompt is not None and spec.input_price > prompt:
        return Verdict(
            "max_price", False, "input {}/1M over the ceiling {}", Dollars(spec.input_price), Dollars(prompt)
        )
    if completion is not None and spec.output_price > completion:
        return Verdict(
            "max_price", False, "output {}/1M over the ceiling {}", Dollars(spec.output_price), Dollars(completion)
        )
    return Verdict("max_price", True, "under the price ceiling")


def check_circuit(admission: Admission | None) -> Verdict:
    if admission is None:
        return NO_OBSERVATIONS
    return admission.verdict


def passes(
    candidate: Candidate, ctx: FilterContext, ceilings: tuple[float | None, float | None], admission: Admission | None
) -> bool:
    """Whether `evaluate` would pass every filter, without building its verdicts."""
    return bool(eligible((candidate,), (admission,), ctx, ceilings))


def eligible(
    candidates: Sequence[Candidate],
    admissions: Sequence[Admission | None],
    ctx: FilterContext,
    ceilings: tuple[float | None, float | None],
) -> list[tuple[Candidate, Admission | None]]:
    """The candidates `evaluate` would pass, each with its admission, without building verdicts.

    The same comparisons as the `check_*` functions, in line and with what is the same for
    every candidate read once: this runs for every candidate of every request. The property
    tests hold both to the same oracle.
    """
    prefs = ctx.prefs
    any_prefs = prefs is not NO_PREFS
    facts = ctx.facts
    reserve, asked, prompt_tokens, needs = (
        facts.completion_tokens,
        facts.completion_asked,
        facts.prompt_tokens,
        facts.needs,
    )
    max_prompt, max_completion = ceilings
    out: list[tuple[Candidate, Admission | None]] = []
    for candidate, admission in zip(candidates, admissions):
        if admission is not None and not admission.admitted:
            continue
        if any_prefs:
            names = candidate.names
            if prefs.only is not None and not any(n in prefs.only for n in names):
                continue
            if any(n in prefs.ignore for n in names):
                continue
            if prefs.order and not prefs.allow_fallbacks and not any(n in prefs.order for n in names):
                continue
        limit = candidate.max_output_tokens
        budget = reserve
        if limit is not None and budget > limit:
            if asked:
                continue
            budget = limit
        if prompt_tokens + budget > candidate.context_length:
            continue
        if needs:
            declared = candidate.capabilities
            if declared is not None and not needs <= declared:
                continue
        if max_prompt is not None and candidate.input_price > max_prompt:
            continue
        if max_completion is not None and candidate.output_price > max_completion:
            continue
        out.append((candidate, admission))
    return out


def evaluate(
    candidate: Candidate, ctx: FilterContext, ceilings: tuple[float | None, float | None], admission: Admission | None
) -> tuple[tuple[Verdict, ...], bool]:
    """Every filter's verdict, and whether the candidate passed them all."""
    verdicts = (
        check_provider(candidate, ctx),
        check_context(candidate, ctx),
        check_capabilities(candidate, ctx),
        check_price(candidate, ctx, ceilings),
        check_circuit(admission),
    )
    for verdict in verdicts:
        if not verdict.passed:
            return verdicts, False
    return verdicts, True
