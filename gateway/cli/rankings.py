"""`gateway rankings`: the rankings of GET /v1/rankings as terminal tables (or the same JSON).

Reads the configured store directly (GATEWAY_REDIS_URL, else the SQLite file in
GATEWAY_DATA_DIR), so it works whether or not a gateway is running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence, Set
from typing import TYPE_CHECKING, Any

from gateway.cli.policy import DEFAULT_POLICY, load_snapshot
from gateway.cli.store import add_store_flags, opened_store, settings_from

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.usage.rankings import Prices, RankingQuery


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rankings", help="OpenRouter-style rankings of this gateway's traffic")
    p.add_argument("--window", default="week", help="day | week | month (default: week)")
    p.add_argument("--end", help="last UTC day of the window, YYYY-MM-DD (default: today)")
    p.add_argument("--limit", type=int, default=20, help="rows per table (default: 20)")
    p.add_argument("--json", action="store_true", help="print the JSON that GET /v1/rankings returns")
    p.add_argument(
        "--config",
        help="routing YAML whose prices the throughput table shows (default: $GATEWAY_CONFIG, "
        f"else {DEFAULT_POLICY} when run where there is one)",
    )
    add_store_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import orjson

    from gateway.usage.rankings import QueryError, ranking_query
    from gateway.usage.scoped import Scope

    try:
        query = ranking_query(args.window, args.end, args.limit)
    except QueryError as exc:
        print(f"gateway rankings: {exc}", file=sys.stderr)
        return 2
    prices = _prices(args.config or os.environ.get("GATEWAY_CONFIG"))
    if prices is None:
        return 1
    body = asyncio.run(_rankings(settings_from(args), query, prices))
    if args.json:
        # Whose traffic it counts, as GET /v1/rankings says it: the CLI reads the whole store.
        body["scope"] = {**Scope().to_json(), "all_visible": True}
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(body))
    return 0


async def _rankings(settings: Settings, query: RankingQuery, prices: Prices) -> dict[str, Any]:
    async with opened_store(settings, "gateway rankings") as store:
        return await store.rankings(query, prices)


def _prices(named: str | None) -> Prices | None:
    """The prices of the policy the admin named (--config, GATEWAY_CONFIG); None, its problems
    printed, when it cannot be read, as `gateway models` refuses it: ranked without prices, a
    typo in the path would pass for a policy without any. Named none, the checkout's default
    when there is one, and no prices (a warning if it is broken) rather than no rankings."""
    from gateway.config.loader import ConfigError, load_config
    from gateway.config.snapshot import ConfigSnapshot
    from gateway.usage.rankings import prices_of

    if named:
        snapshot = load_snapshot(named)
        return None if snapshot is None else prices_of(snapshot)
    if not os.path.exists(DEFAULT_POLICY):
        return {}
    try:
        config, _ = load_config(DEFAULT_POLICY)
    except ConfigError as exc:
        print(f"warning: prices not shown, {DEFAULT_POLICY} is invalid: {exc}", file=sys.stderr)
        return {}
    return prices_of(ConfigSnapshot.build(config, DEFAULT_POLICY))


# -- rendering ---------------------------------------------------------------------------

_UNITS = ("K", "M", "B", "T")


def _three_digits(value: float) -> str:
    digits = 0 if value >= 99.95 else 1 if value >= 9.995 else 2
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def human_tokens(count: int) -> str:
    """791000000000 -> 791B, 1234567 -> 1.23M: three significant digits, like OpenRouter."""
    count = int(count)
    size = abs(count)
    if size < 1000:
        return str(count)
    exponent = min(len(_UNITS), (len(str(size)) - 1) // 3)
    text = _three_digits(size / 1000**exponent)
    if text == "1000" and exponent < len(_UNITS):  # 999,999 rounds up into the next unit
        exponent, text = exponent + 1, "1"
    return ("-" if count < 0 else "") + text + _UNITS[exponent - 1]


def _arrows() -> tuple[str, str]:
    try:
        "▲▼".encode(sys.stdout.encoding or "ascii")
        return "▲", "▼"
    except (UnicodeEncodeError, LookupError):
        return "^", "v"


def change(rank: int, previous_rank: int | None) -> str:
    up, down = _arrows()
    if previous_rank is None:
        return "new"
    if previous_rank > rank:
        return f"{up}{previous_rank - rank}"
    if previous_rank < rank:
        return f"{down}{rank - previous_rank}"
    return "="


def percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


def _number(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.1f}{unit}"


def _price(value: float | None) -> str:
    from gateway.money import usd

    return "-" if value is None else usd(value)


def table(rows: Sequence[Sequence[str]], right: Set[int] = frozenset()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render(body: dict[str, Any]) -> str:
    from gateway.money import usd

    window, previous, totals = body["window"], body["previous_window"], body["totals"]
    out = [
        f"Rankings, {window['name']} {window['start']} .. {window['end']} "
        f"(previous {previous['start']} .. {previous['end']})",
        f"{human_tokens(totals['tokens'])} tokens in {totals['requests']:,} requests, "
        f"{usd(totals['cost'])}, growth {percent(totals['growth'], signed=True)}",
        "",
        "Top models",
    ]
    rows: list[tuple[str, ...]] = [("#", "CHANGE", "MODEL", "TOKENS", "SHARE", "GROWTH")]
    for m in body["models"]:
        rows.append(
            (
                str(m["rank"]),
                change(m["rank"], m["previous_rank"]),
                m["model"],
                human_tokens(m["tokens"]),
                percent(m["share"]),
                percent(m["growth"], signed=True),
            )
        )
    others = body["others"]
    if others["models"]:
        rows.append(
            (
                "",
                "",
                f"Others ({others['models']} models)",
                human_tokens(others["tokens"]),
                percent(others["share"]),
                "",
            )
        )
    out += [table(rows, right={0, 3, 4, 5}), "", "Market share by author"]
    rows = [("#", "CHANGE", "AUTHOR", "TOKENS", "SHARE", "GROWTH")]
    for a in body["authors"]:
        rows.append(
            (
                str(a["rank"]),
                change(a["rank"], a["previous_rank"]),
                a["author"],
                human_tokens(a["tokens"]),
                percent(a["share"]),
                percent(a["growth"], signed=True),
            )
        )
    out.append(table(rows, right={0, 3, 4, 5}))
    categories = body["categories"]
    for category in sorted(categories, key=lambda c: c != "programming"):  # programming above all
        models = categories[category]
        out += ["", f"Category: {category}"]
        rows = [("#", "MODEL", "TOKENS", "SHARE")]
        rows += [(str(m["rank"]), m["model"], human_tokens(m["tokens"]), percent(m["share"])) for m in models]
        out.append(table(rows, right={0, 2, 3}))
    apps = body["apps"]
    if apps["top"]:
        out += ["", "Top apps"]
        rows = [("#", "APP", "TOKENS", "SHARE", "GROWTH")]
        rows += [
            (
                str(a["rank"]),
                a["title"] or a["app"],
                human_tokens(a["tokens"]),
                percent(a["share"]),
                percent(a["growth"], signed=True),
            )
            for a in apps["top"]
        ]
        out.append(table(rows, right={0, 2, 3, 4}))
        out += ["", "Trending apps"]
        rows = [("#", "APP", "TOKENS", "TREND")]
        rows += [
            (
                str(a["trending_rank"]),
                a["title"] or a["app"],
                human_tokens(a["tokens"]),
                ("+" if a["trend"] >= 0 else "") + human_tokens(round(a["trend"])),
            )
            for a in apps["trending"]
        ]
        out.append(table(rows, right={0, 2, 3}))
    if body["throughput"]:
        out += ["", "Throughput (medians)"]
        rows = [("MODEL", "BACKEND", "TOK/S", "LATENCY", "TTFT", "IN $/1M", "OUT $/1M", "UPTIME")]
        rows += [
            (
                t["model"],
                t["backend"],
                _number(t["median_tokens_per_second"]),
                _number(t["median_latency_ms"], " ms"),
                _number(t["median_ttft_ms"], " ms"),
                _price(t["input_price"]),
                _price(t["output_price"]),
                percent(t.get("uptime")),  # share of its attempts that answered
            )
            for t in body["throughput"]
        ]
        out.append(table(rows, right={2, 3, 4, 5, 6, 7}))
    return "\n".join(out)
