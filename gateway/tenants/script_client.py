"""A lean, pipelined Redis connection for the one script admission runs on every request.

redis-py spends about 90-160 µs of client CPU on an EVALSHA (a pooled connection checked out
and back, the command packed through its generic path, the reply read through its stream
reader, several awaits): more than all of admission's own work. Admission needs one command
shape only, so here it is written by hand: the RESP bytes are built with one join, written on
one shared connection without waiting for earlier replies (requests in flight together are
pipelined; Redis answers in order), and the reply is parsed where it arrives
(`data_received`) and handed to the waiting request's future. The script and its answers are
exactly those of `RedisCounters`: only the transport changes, so counts stay exact.

What it does not do, and what then happens: TLS (`rediss://`), Unix sockets, Cluster and
Sentinel clients are left to redis-py (`ScriptClient.for_client` answers None). A lost
connection fails every call waiting on it with redis-py's `ConnectionError` (the limiter
counts locally meanwhile) and the next call connects again; so does one whose oldest call
has waited `stuck_after_s` without an answer (a hung server, a half-open socket), checked
when the next call starts. A Redis that lost the script
(restart, SCRIPT FLUSH) answers NOSCRIPT: the call loads it again and is retried once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from redis.asyncio import Redis

Reply = int | bytes | str | list[Any] | None


class _NoScript(Exception):
    pass


def command(*parts: bytes) -> bytes:
    """One RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n" % len(part))
        out.append(part)
        out.append(b"\r\n")
    return b"".join(out)


def parse(buffer: bytearray, start: int) -> tuple[Reply | Exception, int] | None:
    """One reply from `buffer` at `start`: (value, end), or None while it is incomplete.
    Error replies come back as exceptions (not raised)."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    kind = buffer[start]
    line = bytes(buffer[start + 1 : end])
    after = end + 2
    if kind == 58:  # ':' integer
        return int(line), after
    if kind == 43:  # '+' simple string
        return line.decode(), after
    if kind == 45:  # '-' error
        text = line.decode(errors="replace")
        return (_NoScript(text) if text.startswith("NOSCRIPT") else ResponseError(text)), after
    if kind == 36:  # '$' bulk string
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            return None
        return bytes(buffer[after : after + size]), after + size + 2
    if kind == 42:  # '*' array
        count = int(line)
        if count < 0:
            return None, after
        items: list[Any] = []
        position = after
        for _ in range(count):
            got = parse(buffer, position)
            if got is None:
                return None
            items.append(got[0])
            position = got[1]
        return items, position
    raise RedisConnectionError(f"unexpected reply byte {kind!r} from Redis")


class _Protocol(asyncio.Protocol):
    def __init__(self, lost: Any) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Reply]] = deque()
        self.sent_at: deque[float] = deque()  # when each waiting call was written (loop time)
        self._buffer = bytearray()
        self._lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass: no isinstance

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position = 0
        try:
            while position < len(buffer):
                got = parse(buffer, position)
                if got is None:
                    break
                value, position = got
                future = self.waiting.popleft()
                self.sent_at.popleft()
                if future.done():  # its caller gave up (timeout): the reply is read and dropped
                    continue
                if isinstance(value, Exception):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        except (RedisConnectionError, IndexError, ValueError) as exc:
            if self.transport is not None:
                self.transport.abort()
            self.connection_lost(exc)
            return
        del buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = RedisConnectionError(f"connection to Redis lost: {exc}" if exc else "connection to Redis closed")
        self.sent_at.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self._lost(self)


class ScriptClient:
    """Runs one Lua script with a single argument on one pipelined connection."""

    def __init__(
        self,
        script: str,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 2.0,
        stuck_after_s: float = 5.0,
    ) -> None:
        self._script = script.encode()
        self.sha = hashlib.sha1(self._script).hexdigest().encode()
        self._host, self._port, self._db = host, port, db
        self._username, self._password = username, password
        self._connect_timeout_s = connect_timeout_s
        self._stuck_after_s = stuck_after_s  # an unanswered call this old means the connection is dead
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self.connections = 0  # connections made: for tests and curiosity

    @classmethod
    def for_client(cls, redis: Redis, script: str) -> ScriptClient | None:
        """A client to the server `redis` talks to, when it is a plain TCP connection."""
        pool = getattr(redis, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None)
        connection_class = getattr(pool, "connection_class", None)
        if not isinstance(kwargs, dict) or connection_class is None or connection_class.__name__ != "Connection":
            return None  # TLS, Unix socket, Sentinel, or something this module does not speak
        host, port = kwargs.get("host"), kwargs.get("port", 6379)
        if not isinstance(host, str) or not isinstance(port, int):
            return None
        return cls(
            script,
            host,
            port,
            db=int(kwargs.get("db") or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            connect_timeout_s=float(kwargs.get("socket_connect_timeout") or 2.0),
        )

    def _forget(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol: _Protocol | None = None
        replies: list[asyncio.Future[Reply]] = []
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(lambda: _Protocol(self._forget), self._host, self._port)
                setup: list[bytes] = []
                if self._password is not None:
                    user = [self._username.encode()] if self._username else []
                    setup.append(command(b"AUTH", *user, self._password.encode()))
                if self._db:
                    setup.append(command(b"SELECT", str(self._db).encode()))
                setup.append(command(b"SCRIPT", b"LOAD", self._script))
                replies = [self._send(protocol, part) for part in setup]
                for reply in replies:
                    await reply  # an error reply (WRONGPASS, NOAUTH, a bad db) raises ResponseError
        except BaseException as exc:
            # No half-set-up connection stays open (one per retry would pile up) and no setup
            # reply is left unretrieved. A setup that failed is a connection failure: the
            # script never ran, so the caller keeps the settlements it carried.
            if protocol is not None and protocol.transport is not None:
                protocol.transport.close()
            for reply in replies:
                if reply.done() and not reply.cancelled():
                    reply.exception()
                else:
                    reply.cancel()
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"cannot connect to Redis at {self._host}:{self._port}: {exc}") from exc
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError(f"connecting to Redis at {self._host}:{self._port} timed out") from None
            if isinstance(exc, ResponseError):
                raise RedisConnectionError(f"Redis at {self._host}:{self._port} refused the setup: {exc}") from exc
            raise
        self.connections += 1
        self._protocol = protocol
        return protocol

    @staticmethod
    def _send(protocol: _Protocol, data: bytes) -> asyncio.Future[Reply]:
        transport = protocol.transport
        if transport is None:
            raise RedisConnectionError("connection to Redis closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        protocol.waiting.append(future)
        protocol.sent_at.append(loop.time())
        transport.write(data)
        return future

    async def run(self, arg: str) -> Reply:
        """The script's reply to `arg` (its only ARGV; no KEYS)."""
        payload = arg.encode()
        protocol = await self._connection()
        if protocol.sent_at and asyncio.get_running_loop().time() - protocol.sent_at[0] > self._stuck_after_s:
            # The oldest call has had no answer for that long: a hung server or a half-open
            # socket. Callers gave up on it (timeouts); drop the connection, dial again.
            if protocol.transport is not None:
                protocol.transport.abort()
            protocol.connection_lost(None)
            protocol = await self._connection()
        try:
            return await self._send(protocol, command(b"EVALSHA", self.sha, b"0", payload))
        except _NoScript:
            # Redis lost its scripts: EVAL loads the script again and runs it, once.
            return await self._send(await self._connection(), command(b"EVAL", self._script, b"0", payload))

    async def aclose(self) -> None:
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
