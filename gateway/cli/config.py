"""`gateway validate` and `gateway models`: check a routing YAML and show what it serves."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway.cli.policy import add_config_flag, load_snapshot, print_warnings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = sub.add_parser("validate", help="check a routing YAML; exit 0 when valid")
    v.add_argument("file")
    v.set_defaults(func=validate)
    m = sub.add_parser("models", help="table of routes, models, backends, prices, context lengths")
    add_config_flag(m)
    m.set_defaults(func=models)


def validate(args: argparse.Namespace) -> int:
    from gateway.config.loader import ConfigError, load_config

    try:
        config, warnings = load_config(args.file)
    except ConfigError as exc:
        print(f"{exc.source}: invalid", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print_warnings(warnings)
    print(f"{args.file}: valid ({_count(len(config.backends), 'backend')}, {_count(len(config.routes), 'route')})")
    return 0


def _count(n: int, noun: str) -> str:
    """`1 backend`, `2 routes`: the line a new user reads first, in plain English."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def models(args: argparse.Namespace) -> int:
    from gateway.money import usd

    snapshot = load_snapshot(args.config)
    if snapshot is None:
        return 1
    config = snapshot.config
    rows = [("MODEL", "BACKEND", "UPSTREAM ID", "CONTEXT", "IN $/1M", "OUT $/1M", "STATUS")]
    for name, backend in config.backends.items():
        status = "enabled" if name in snapshot.backends else "disabled"
        for model_id, offer in backend.models.items():
            rows.append(
                (
                    model_id,
                    name,
                    offer.upstream_id or model_id,
                    f"{offer.context_length:,}",
                    usd(offer.input_price),
                    usd(offer.output_price),
                    status,
                )
            )
    print(_table(rows))
    print()
    route_rows = [("ROUTE", "STRATEGY", "MODELS", "TASKS")]
    for name, route in config.routes.items():
        tasks = "; ".join(f"{t}: {', '.join(ms)}" for t, ms in route.tasks.items()) or "-"
        route_rows.append((name, route.strategy, ", ".join(route.models), tasks))
    print(_table(route_rows))
    print_warnings(snapshot.warnings)
    return 0


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
