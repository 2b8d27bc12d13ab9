"""Logging setup: one line per record, to stderr, level from GATEWAY_LOG_LEVEL."""

from __future__ import annotations

import logging


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # watchfiles logs every batch of file events at INFO; the config watcher sees many.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
