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
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
