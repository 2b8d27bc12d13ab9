"""One tenant's rankings rebuilt from the ledger (gateway.usage.scoped), on each store."""

from __future__ import annotations

import dataclasses
from datetime import date

from gateway.usage.rankings import compute_rankings, compute_series, ranking_query, series_query
from gateway.usage.scoped import Scope, scoped_aggregates
from tests.usage.fixtures import EVENTS, WEEK_END

OWNERS = ("alice", "bob", None)  # None: a call of an open gateway, nobody's key


def owned_events():
    """The fixture's events dealt round-robin to alice (team red), bob (team blue) and nobody."""
    out = []
    for i, event in enumerate(EVENTS):
        key = OWNERS[i % 3]
        team = {"alice": "red", "bob": "blue"}.get(key or "")
        out.append(dataclasses.replace(event, key=key, team=team))
    return out


async def test_everything_rebuilt_from_events_ranks_as_the_stored_aggregates(store):
    await store.record(owned_events())
    query = ranking_query("week", WEEK_END, 3)
    stored = compute_rankings(query, await store.read_aggregates(query.spans()))
    rebuilt = compute_rankings(query, await scoped_aggregates(store, query.spans(), Scope()))
    assert rebuilt == stored
    series = series_query("week", 4, WEEK_END, 10)
    assert compute_series(series, await scoped_aggregates(store, series.spans(), Scope())) == compute_series(
        series, await store.read_aggregates(series.spans())
    )


async def test_a_key_or_team_scope_counts_only_its_own_calls(store):
    events = owned_events()
    await store.record(events)
    query = ranking_query("week", WEEK_END, 20)
    period = query.period

    def in_week(e, key=None, team=None):
        return (
            e.final
            and period.start <= e.day <= period.end
            and (key is None or e.key == key)
            and (team is None or e.team == team)
        )

    for scope in (Scope(key="alice"), Scope(team="blue"), Scope(key="alice", team="blue")):
        mine = [e for e in events if in_week(e, scope.key, scope.team)]
        body = compute_rankings(query, await scoped_aggregates(store, query.spans(), scope))
        assert body["totals"]["requests"] == len(mine)
        assert body["totals"]["tokens"] == sum(e.prompt_tokens + e.completion_tokens for e in mine)
        assert {m["model"] for m in body["models"]} == {e.model for e in mine if e.prompt_tokens + e.completion_tokens}
        assert {a["app"] for a in body["apps"]["top"]} == {e.app for e in mine if e.app}
    assert Scope(key="alice", team="blue").admits(events[0]) is False
    assert len([e for e in events if in_week(e, "alice")]) > 0  # the scopes above are not vacuous


async def test_a_scope_with_no_calls_is_empty_not_everything(store):
    await store.record(owned_events())
    query = ranking_query("week", WEEK_END, 20)
    body = compute_rankings(query, await scoped_aggregates(store, query.spans(), Scope(key="carol")))
    assert body["totals"]["requests"] == 0 and body["models"] == [] and body["apps"]["top"] == []
    assert await scoped_aggregates(store, {}, Scope(key="alice")) == {}
    assert date.fromisoformat(WEEK_END) == query.end


async def test_a_scope_counts_its_failed_attempts_in_the_providers_uptime(store):
    """Hostile testing: a key's view dropped the failed attempts before each call's final row
    (it kept final rows only, older than the uptime measure that reads every row), so the
    provider that failed a tenant's calls showed no failures, or no row, in its view."""
    mine = []
    for i, event in enumerate(EVENTS):
        event = dataclasses.replace(event, key="alice", team="red")
        mine.append(event)
        if i % 4 == 0:  # a failed attempt on another backend first, as a fallback leaves it
            mine.append(
                dataclasses.replace(
                    event,
                    id=event.id + "-failed",
                    backend="flaky",
                    status=502,
                    error="http_502",
                    final=False,
                    attempt=1,
                    prompt_tokens=0,
                    completion_tokens=0,
                    cost=0.0,
                )
            )
    assert any(not e.final for e in mine)
    await store.record(mine)
    query = ranking_query("week", WEEK_END, 20)
    stored = compute_rankings(query, await store.read_aggregates(query.spans()))
    for scope in (Scope(key="alice"), Scope(team="red")):
        assert compute_rankings(query, await scoped_aggregates(store, query.spans(), scope)) == stored
    flaky = [row for row in stored["throughput"] if row["backend"] == "flaky"]
    assert flaky and all(row["attempts_failed"] == row["attempts"] > 0 for row in flaky)  # not vacuous
