"""Rate-limit windows are aligned to the wall-clock minute."""

from __future__ import annotations

import time


def clear_of_minute_edge(margin_s: float = 10.0) -> None:
    """Return when the next `margin_s` seconds lie within one rate-limit window.

    A test that counts requests against a per-minute limit calls this first: the sliding
    estimate across a window edge is exact only to one request, and such a test asserts
    exact counts. Waits at most `margin_s` seconds.
    """
    into = time.time() % 60
    if into > 60 - margin_s:
        time.sleep(60 - into + 0.05)
