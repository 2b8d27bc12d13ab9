"""`gateway usage report --by key|team|model --window day|week|month [--end DAY] [--json]`.

Reads the store a gateway would (see gateway.cli.store), whether or not one is running, and
prints what each key, team or model spent in the window (gateway.usage.spend) as a table, or
the same as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from typing import TYPE_CHECKING, Any

from gateway.cli.store import add_store_flags, opened_store, settings_from

if TYPE_CHECKING:
    from gateway.settings import Settings


def add_parser(usage_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = usage_sub.add_parser("report", help="spend per key, team or model over a day, week or month")
    r.add_argument("--by", choices=("key", "team", "model"), default="key", help="what to group by (default: key)")
    r.add_argument(
        "--window",
        choices=("day", "week", "month"),
        default="month",
        help="UTC day, ISO week or calendar month holding --end (default: month)",
    )
    r.add_argument("--end", help="a UTC day in the window, YYYY-MM-DD (default: today)")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_store_flags(r)
    r.set_defaults(func=run_report)


async def _report(settings: Settings, by: str, window: str, start: date, end: date) -> dict[str, Any]:
    from gateway.usage.rankings import Period
    from gateway.usage.spend import SpendTally, ledger_days

    async with opened_store(settings, "gateway usage report") as store:
        # The aggregates' count of each day's calls, what the raw events should add up to,
        # read first: calls a running gateway records meanwhile then add to the events only
        # (a store writes a call's aggregates no later than its raw event), never to a
        # shortfall the report would wrongly show.
        ledger = ledger_days(await store.read_aggregates({"model": Period(start, end)}))
        tally = SpendTally(by, start, end)
        async for event in store.export(start, end):  # summed as read: a month's events never held at once
            tally.add(event)
    return tally.report(window, ledger)


def missing_warning(missing: dict[str, Any]) -> str:
    """What a report short of the ledger misses, and why it may (see gateway.usage.spend)."""
    from gateway.money import usd

    calls = missing["requests"]
    days = missing["days"]
    shown = ", ".join(days[:5]) + (f" and {len(days) - 5} more days" if len(days) > 5 else "")
    return (
        f"Warning: the ledger counts {calls} more call{'s' if calls != 1 else ''} ({usd(missing['cost_usd'])}) "
        f"in this window than its raw events hold ({shown}): the rows miss them. The report reads raw events, "
        "which Redis trims at about 1,000,000 a day (and may evict from an allkeys-lru Redis) and "
        "GATEWAY_USAGE_EVENTS_RETENTION_DAYS prunes; budgets and GET /v1/key count every call."
    )


def render(body: dict[str, Any]) -> str:
    from gateway.cli.rankings import human_tokens, table
    from gateway.money import usd

    by, window = body["by"], body["window"]
    head = [by.capitalize(), "Requests", "Failed", "Prompt", "Completion", "Tokens", "Cost (USD)"]

    def cells(name: str, line: dict[str, Any]) -> list[str]:
        return [
            name,
            str(line["requests"]),
            str(line["failed"]),
            human_tokens(line["prompt_tokens"]),
            human_tokens(line["completion_tokens"]),
            human_tokens(line["tokens"]),
            usd(line["cost_usd"]),
        ]

    rows = [head, *(cells(row[by], row) for row in body["rows"]), cells("Total", body["totals"])]
    title = f"Spend by {by}, {window['name']} {window['start']} – {window['end']} (UTC)"
    if not body["rows"]:
        return f"{title}\nNo usage recorded in this window."
    return f"{title}\n{table(rows, right={1, 2, 3, 4, 5, 6})}"


def run_report(args: argparse.Namespace) -> int:
    import orjson

    from gateway.usage.rankings import today_utc
    from gateway.usage.spend import window_of

    try:
        end = date.fromisoformat(args.end) if args.end else today_utc()
    except ValueError:
        print(f"gateway usage report: --end must be YYYY-MM-DD, got {args.end!r}", file=sys.stderr)
        return 2
    start, last = window_of(args.window, end)
    body = asyncio.run(_report(settings_from(args), args.by, args.window, start, last))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        if "missing" in body:
            print(missing_warning(body["missing"]), file=sys.stderr)
    else:
        print(render(body))
        if "missing" in body:
            print(missing_warning(body["missing"]))
    return 0
