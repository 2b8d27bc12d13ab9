"""Which routing YAML a CLI command reads, and how it reports one it cannot use.

`gateway models` and `gateway explain` both read a policy as the gateway would (the same
loader, the same snapshot) and print its problems and warnings the same way; `gateway
validate` prints them in its own report form. Imports are deferred: `gateway --help`
should not load pydantic.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config.snapshot import ConfigSnapshot

DEFAULT_POLICY = "policies/default.yaml"


def add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG") or DEFAULT_POLICY)  # empty: unset


def load_snapshot(path: str) -> ConfigSnapshot | None:
    """The snapshot the gateway would build from `path`; None, with every problem printed to
    stderr, when the file is not a valid policy."""
    from gateway.config.loader import ConfigError, load_config
    from gateway.config.snapshot import ConfigSnapshot

    try:
        config, warnings = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        if path == DEFAULT_POLICY and not os.environ.get("GATEWAY_CONFIG"):  # the default read, as `serve` says
            print("pass the policy's path as --config FILE (or GATEWAY_CONFIG)", file=sys.stderr)
        return None
    return ConfigSnapshot.build(config, path, warnings)


def print_warnings(warnings: tuple[str, ...] | list[str]) -> None:
    """Last on stderr, after the command's own output, so they are not lost above it."""
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
