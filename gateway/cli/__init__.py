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
        print(f"gateway {_typed(args)}: invalid setting(s):", file=sys.stderr)
        for line in settings_problems(exc):
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # before the clauses below, which would re-raise it
        return 0
    except OSError as exc:
        if not (exc.filename and hasattr(args, "store_file")):
            raise
        # A store command's data directory or store file this user cannot make or open (a
        # missing parent, a read-only mount): said in one line, as a store failure is below.
        named = _named(args)
        if named.endswith(f" {exc.filename})"):  # the store file itself: named once is enough
            named = ""
        print(
            f"gateway {_typed(args)}: the store failed: cannot use {exc.filename}: {exc.strerror}{named}",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:
        from gateway.tenants.store import store_failure

        if not store_failure(exc):
            raise
        # The store the command works on (Redis down, a corrupt SQLite file): said in one line.
        print(f"gateway {_typed(args)}: the store failed: {type(exc).__name__}: {exc}{_named(args)}", file=sys.stderr)
        return 1


def _typed(args: argparse.Namespace) -> str:
    """The command as typed (`usage import`, `keys create`, `rankings`), for the line saying it
    failed: `gateway usage:` did not say whether the import, the export or the report did. A
    group's subcommand is in `<group>_command` (the `dest` of its subparsers)."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else args.command


def _named(args: argparse.Namespace) -> str:
    """` (Redis redis://host/0)` or ` (SQLite /path/keys.sqlite3)`: which store failed, for a
    command that opens one (gateway.cli.store.add_store_flags); the error alone may not say."""
    from gateway.cli.store import describe_store, settings_from

    if not hasattr(args, "store_file"):
        return ""
    try:
        return f" ({describe_store(settings_from(args), args.store_file)})"
    except Exception:  # the settings themselves fail (the very error being reported): named by it alone
        return ""


if __name__ == "__main__":
    sys.exit(main())
