"""Noticing a client that leaves while its answer is being worked on.

A client that closes its connection mid-request must cancel the request's work, the
upstream call included (a model generating for nobody costs money). The handler arms a
watch once it has read the request body and stops it before its last body message (past
that, the server reports a disconnect that is no client leaving); in between, a lost
connection cancels the handler's task and sets `left`, so the handler can tell a client
leaving (a 499) from a shutdown (re-raised).

Two ways to notice, one surface (`left`, `stop()`):

- `ClientWatch`: armed on the connection itself. The gateway's HTTP protocol
  (`gateway.api.wire.GatewayHttpProtocol`) puts itself in the request's scope
  (`CONNECTION_SCOPE_KEY`), arms a watch on `watch_client()` and tells it from
  `connection_lost`: no task, no `receive()` call, one small object per request. Under `make bench` the task below cost about a tenth of the gateway's CPU
  per request (creating, scheduling and cancelling a task per call).
- `TaskWatch`: where the server is not the gateway's protocol (another ASGI server, an
  in-process test transport), one task per request waits on `receive()` for
  `http.disconnect`, which is what any ASGI server reports.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from starlette.types import Receive, Scope

# The scope key under which the gateway's HTTP protocol offers itself to the request's
# handler: its `watch_client()` arms a `ClientWatch` for the calling task.
CONNECTION_SCOPE_KEY = "gateway.connection"


class Watch(Protocol):
    left: bool

    def stop(self) -> None: ...


class ClientWatch:
    """Armed by the connection: `client_left()` (called when the connection is lost)
    cancels the owner task unless the watch was stopped first."""

    __slots__ = ("_owner", "left")

    def __init__(self, owner: asyncio.Task[object] | None) -> None:
        self.left = False
        self._owner = owner

    def client_left(self) -> None:
        owner = self._owner
        if owner is not None:
            self._owner = None
            self.left = True
            owner.cancel()

    def stop(self) -> None:
        self._owner = None


class TaskWatch:
    """One task per request, waiting on `receive()`: when the client leaves, it cancels
    the owner task (and with it the upstream call)."""

    __slots__ = ("_task", "left")

    def __init__(self, receive: Receive, owner: asyncio.Task[Any] | None = None) -> None:
        self.left = False
        if owner is None:
            owner = asyncio.current_task()
        self._task = asyncio.get_running_loop().create_task(self._watch(receive, owner))

    async def _watch(self, receive: Receive, owner: asyncio.Task[object] | None) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except asyncio.CancelledError:
            # Stopped: ends as a task that returned. A cancelled task keeps its CancelledError,
            # whose traceback holds this frame, which holds this watch and so the task: a
            # reference cycle, and `receive` (the request) with it, until a collection.
            return
        self.left = True
        if owner is not None:
            owner.cancel()

    def stop(self) -> None:
        self._task.cancel()


def watch_client(scope: Scope, receive: Receive, owner: asyncio.Task[Any] | None = None) -> Watch:
    """A watch for the calling task (`owner`, when the caller has it at hand: looking it up
    is a Python function on 3.11): on the connection when the server offers one, else a task."""
    connection = scope.get(CONNECTION_SCOPE_KEY)
    if connection is not None:
        watch: Watch = connection.watch_client(owner)
        return watch
    return TaskWatch(receive, owner)
