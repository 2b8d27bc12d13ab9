"""Request ids: unique across processes and restarts, and cheap enough for every call.

A random per-process prefix plus a counter costs a fraction of `uuid4()` (which reads the
OS's random source on every call) and still never repeats across replicas.
"""

from __future__ import annotations

import itertools
import os


class RequestIds:
    def __init__(self) -> None:
        self._prefix = "req-" + os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"
