"""Routing: from what the client sent to an ordered list of candidates, as plain functions
over data (the request's facts, the config snapshot, observed stats). No I/O in the decision.

    pipeline    plan()/decide(): the one place the decision is made, in this order:
    resolve     `model` -> route / canonical id / `:floor` / `:nitro`
    overrides   the request's `models` array and `provider` object (OpenRouter's shape)
    facts       estimated prompt tokens, completion budget, capabilities the request needs
    classify    task detection (header, heuristic, or a plugged-in classifier)
    candidates  the offers a route/model/`models` array allows, in tiers
    filters     provider prefs, context length, capabilities, price ceiling, circuit
    rank        the try order: tiers, Retry-After, provider.order, then the strategy's score
    strategies  the registry: cost / latency / throughput / ordered / weighted (one function each)
    reasons     why a filter passed or a score is what it is, formatted only when read
    admission   a candidate's circuit admission, read by the filters and the ranking
    explain     the decision as a document (POST /v1/route/explain, `gateway explain`)

Observed state, outside the decision: `stats` (EWMA per backend+model), `health` (circuit
breakers, Retry-After, active probes), `live` (the observer that learns and the view the
pipeline reads), `shared` (merging it across replicas through Redis), `runtime` (wiring
into the app's lifespan), `outcomes` (the fields of an attempt and a finished call that
routing reads, as protocols: the proxy that defines them sits above).
"""
