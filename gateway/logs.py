"""Logging setup: one line per record, to stderr, level from GATEWAY_LOG_LEVEL."""

from __future__ import annotations

import logging


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: on the proxy path that is a log line per call.
    # watchfiles logs every batch of file events at INFO; the config watcher sees many.
    for noisy in ("httpx", "httpcore", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
