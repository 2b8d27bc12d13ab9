"""Ids made on every call: request ids, unique across processes and restarts, and secret
tokens (the ids of stored Responses), unguessable.

A random per-process prefix plus a counter costs a fraction of `uuid4()` (which reads the
OS's random source on every call) and still never repeats across replicas. A secret token
must be unguessable, not only unique: its bytes come from the OS's random source, as
`secrets.token_hex`'s do, but read for many tokens at once (one system call per `batch`).
"""

from __future__ import annotations

import itertools
import os
import weakref
from functools import partial


class RequestIds:
    def __init__(self) -> None:
        self._prefix = "req-" + os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"


class SecretTokens:
    """Hex tokens of `nbytes` random bytes each, from `os.urandom` read `batch` tokens at a
    time: each token is bytes no other token (or process) ever saw. A forked child starts
    with an empty buffer (it must not hand out its parent's bytes). For one thread, the
    event loop's: two threads could be handed the same token."""

    def __init__(self, nbytes: int = 24, batch: int = 128) -> None:
        self._nbytes = nbytes
        self._size = nbytes * batch
        self._buffer = b""
        self._at = 0
        os.register_at_fork(after_in_child=partial(_forget, weakref.ref(self)))

    def next(self) -> str:
        at = self._at
        if at >= len(self._buffer):
            self._buffer, at = os.urandom(self._size), 0
        self._at = at + self._nbytes
        return self._buffer[at : at + self._nbytes].hex()


def _forget(tokens: weakref.ref[SecretTokens]) -> None:
    live = tokens()
    if live is not None:
        live._buffer, live._at = b"", 0
