"""The `gateway` command. Each subcommand group lives in its own module and registers itself
through `add_parser(subparsers)`; add a module to COMMANDS to add a group."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "gateway.cli.serve",
    "gateway.cli.config",
    "gateway.cli.rankings",
    "gateway.cli.usage",
    "gateway.cli.explain",
    "gateway.cli.keys",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible routing gateway for open models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from gateway.settings import settings_problems

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        if exc.title != "Settings":  # not the environment's: a bug, with its traceback
            raise
        # A GATEWAY_* variable (or the flag that set it) the process cannot run with.
        print(f"gateway {args.command}: invalid setting(s):", file=sys.stderr)
        for line in settings_problems(exc):
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # before the clause below, which would re-raise it
        return 0
    except Exception as exc:
        from gateway.tenants.store import store_failure

        if not store_failure(exc):
            raise
        # The store the command works on (Redis down, a corrupt SQLite file): said in one line.
        print(f"gateway {args.command}: the store failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
