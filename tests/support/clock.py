"""Rate-limit windows are aligned to the wall-clock minute."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

WINDOW_S = 60


def clear_of_minute_edge(margin_s: float = 10.0) -> None:
    """Return when the next `margin_s` seconds lie within one rate-limit window.

    A test that counts requests against a per-minute limit calls this first: the sliding
    estimate across a window edge is exact only to one request, and such a test asserts
    exact counts. Waits at most `margin_s` seconds.
    """
    into = time.time() % WINDOW_S
    if into > WINDOW_S - margin_s:
        time.sleep(WINDOW_S - into + 0.05)


@contextmanager
def one_rate_limit_window(margin_s: float = 10.0) -> Iterator[None]:
    """Run a quick burst of requests inside one window, and say so plainly if it was not.

    The block should only send requests and collect answers (no polls, no waits on other
    processes); assert on the answers after it, so that a burst that somehow outlasted
    `margin_s` fails with this message rather than an off-by-one count.
    """
    clear_of_minute_edge(margin_s)
    window = int(time.time() // WINDOW_S)
    yield
    assert int(time.time() // WINDOW_S) == window, (
        f"the burst took longer than {margin_s:g}s and crossed a minute's edge"
    )
