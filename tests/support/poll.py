"""Waiting for a condition with a deadline, instead of sleeping a guessed time.

Tests of real processes see effects some time after the action that causes them: a config
reload, a usage flush, a Prometheus scrape, a worker taking its first connection. Polling
returns as soon as the effect shows, so a quick machine waits little; the deadline is
generous because it only matters on a loaded one (CI: two cores, both test workers busy).
When it passes, the failure names what was awaited and what was seen last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_INTERVAL_S = 0.05


def poll(
    condition: Callable[[], T],
    *,
    what: str = "the condition",
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    ignore: tuple[type[BaseException], ...] = (),
    context: Callable[[], str] | None = None,
) -> T:
    """Call `condition` until it returns something truthy, and return that value.

    Exceptions of the types in `ignore` count as "not yet" (a server still starting).
    After `timeout` seconds the test fails with `what`, the last value or exception, and
    `context()` when given (e.g. the gateway's log).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: object = condition()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(what, timeout, last, context))
        time.sleep(interval)


async def apoll(
    condition: Callable[[], T | Awaitable[T]],
    *,
    what: str = "the condition",
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = 0.01,
) -> T:
    """`poll` for tests running in an event loop: yields to it between checks.

    `condition` may be a plain function or return an awaitable.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if asyncio.iscoroutine(last) or isinstance(last, asyncio.Future):
            last = await last
        if last:
            return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(what, timeout, last, None))
        await asyncio.sleep(interval)


def _timed_out(what: str, timeout: float, last: object, context: Callable[[], str] | None) -> str:
    message = f"timed out after {timeout:g}s waiting for {what}; last seen: {last!r}"
    if context is not None:
        message += "\n" + context()
    return message
