"""A minimal HTTP/1.1 keep-alive client for the proxy path: one pool per backend.

Why it exists (issue 14). A proxy needs to write one prebuilt buffer, read a status line and
three headers, and hand the body over as it arrives. aiohttp's client builds a request and a
response model, header multidicts, timer contexts, payload objects and trace hooks on every
call: profiled under wrk at c=16 with a JSON answer, it was about 53% of the floor proxy's
CPU per request (~45 µs of ~89 µs) and ~25% of the gateway's (`OpenAICompatBackend.post ->
ClientSession._request` plus read and release, of ~168 µs). This module is that client cut
to what the gateway uses: an `asyncio.Protocol` per connection and httptools' C parser
(llhttp, already here for uvicorn). Measured against aiohttp on this machine
(`bench/ab.py --base main --rounds 7 --duration 3`, main at 3c2cc2c), the gateway's CPU per
request went to 0.64x non-streamed and 0.67x streamed at c=16 (0.60x/0.74x at c=1,
0.65x/0.67x at c=64); in py-spy's samples the client went from about 35% (JSON) and 29%
(SSE) of the gateway's CPU to 17% and 12%, most of which is now the `send` system call of
the request itself.

What a call costs: one `transport.write` of the request (request line, Host and the
backend's static headers prebuilt once per path, then the call's few extra headers,
content-length and body); the parser's callbacks for the head, which keep only
content-type, content-length and retry-after; body bytes appended to a list the reader
drains whole. No timer per call or per chunk: one timer per connection, re-armed lazily
(each `data_received` records `loop.time()`; when the timer fires, it re-schedules itself
if data came since).

What it keeps of aiohttp's conduct (`ClientTimeout(sock_connect=connect_timeout_s,
sock_read=timeout_s)`, `TCPConnector(limit=max_connections)`, `trust_env=False`):
- a connect timeout (`UpstreamUnreachable`), a first-byte timeout (no response head within
  the read limit: `FirstByteTimeout`) and a per-read idle limit (`StreamIdleTimeout`), which
  `stream_started(idle_s)` changes for a stream; a reader that is behind (reading paused) is
  not the upstream's silence, but one that takes nothing for `PAUSED_MAX_S` has left without
  `aclose()` and its answer is dropped (its connection would hold a slot forever);
- at most `max_connections` per backend: callers queue (FIFO) when all are busy; a released
  connection, or the slot of a closed one, is handed to the first waiter (still counted, so a
  newcomer cannot take it first), and a cancelled waiter passes on what it was handed; the
  slot belongs to the `Connection` from before it connects, so it is given back once however
  the connection ends; idle keep-alive connections are reused last-in first-out and closed
  after `KEEPALIVE_S` unused (`KEEPALIVE_PLAIN_S` for plain http: before local servers close them);
- a connection is dropped, not reused, when its answer said `connection: close`, was
  HTTP/1.0 or read until close, was abandoned mid-body (the upstream sees the connection
  end: that is how it learns the client left), or failed, or answered before the request's
  body was all sent (a 401 to a large body: the connection is aborted, not pooled mid-write);
  a caller cancelled at any await closes its connection while the exchange still owns it (an
  answer received whole has already handed it back, maybe to the next caller);
- a request is never sent twice: only a connection known closed before a byte of the
  request is written (the pool's `is_closing()` check, or `exchange`'s) is replaced by a new
  one. A connection lost after the write, even a reused one with no byte of answer, is an
  `UpstreamProtocolError`: the upstream may have read and acted on the request (billed it),
  and the fallback loop decides, as it did with aiohttp, which never resent a POST;
- response heads are bounded (`MAX_HEADERS`, `MAX_HEAD_BYTES`: past them the answer is an
  `UpstreamProtocolError`); unread body past `READ_HIGH_WATER` pauses reading; a large
  request body waits for the transport to drain.
- https through `ssl.create_default_context()` (made once per backend, or the context given)
  with SNI; http URLs stay plain; no proxy support (`HTTP(S)_PROXY` are not read, as aiohttp
  ran with `trust_env=False`);
- redirects are not followed (aiohttp followed them, re-POSTing on 307/308): for an API
  upstream a 3xx is a misconfigured base_url, so the caller gets it with its `location`
  (bounded by `MAX_LOCATION`) and `openai_compat` raises `Redirected` naming it. The base_url
  is used as written (no credentials, ASCII, path already percent-encoded: config rejects the
  rest, `gateway.config.schema._check_base_url`).

Everything that goes wrong leaves as a `gateway.backends.errors` class; the caller
(`openai_compat`) classifies non-2xx statuses.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

from gateway.backends.base import DEFAULT_MAX_RESPONSE_BYTES, UpstreamResponse, response_too_large
from gateway.backends.errors import (
    FirstByteTimeout,
    StreamBroken,
    StreamIdleTimeout,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnreachable,
)

MAX_HEADERS = 100  # response header lines
MAX_HEAD_BYTES = 64 * 1024  # a response head (all its header names and values)
READ_HIGH_WATER = 256 * 1024  # unread body bytes past which the socket is not read (until the reader takes them)
KEEPALIVE_S = 15.0  # an idle connection to an https upstream unused this long is closed (aiohttp's default)
# ... to a plain-http one: below the 5 s after which uvicorn (vLLM, SGLang, this gateway),
# llama.cpp's server and Node close an idle connection themselves. Past that, a request
# written as the server closes is lost, never resent (see above), and a route of one local
# model answers 502. Reconnecting there costs no TLS handshake; hosted https APIs keep idle
# connections a minute or more.
KEEPALIVE_PLAIN_S = 4.0
PAUSED_MAX_S = 120.0  # an answer whose reader has taken nothing for this long (reading paused) is dropped
MAX_LOCATION = 256  # characters of a redirect's Location kept for the error that names it
_JOIN_BELOW = 64 * 1024  # request bodies up to this are joined with the head into one write
_NO_BODY_STATUSES = frozenset({204, 304})


class Target:
    """Where a backend's calls go, parsed once from its base_url."""

    __slots__ = ("host", "host_header", "port", "prefix", "tls")

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if parts.username is not None or not (parts.hostname + parts.path).isascii():
            raise ValueError(f"credentials or non-ASCII in the URL (config rejects these): {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname  # without the brackets of an IPv6 literal
        default = 443 if self.tls else 80
        self.port = parts.port or default
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default else f"{host}:{self.port}"
        self.prefix = parts.path.rstrip("/")


class _Refused(Exception):
    """A response head past the bounds, or not HTTP/1.x as the gateway takes it."""


class Http1Response(UpstreamResponse):
    """One answer, its head read, its body arriving; the connection goes back to the pool
    as soon as the body has been received whole (the bytes stay here until read)."""

    __slots__ = (
        "_backend",
        "_chunks",
        "_complete",
        "_conn",
        "_error",
        "_loop",
        "_waiter",
        "buffered",
        "content_length",
        "head_done",
        "location",
        "retry_after",
    )

    def __init__(self, conn: Connection, backend: str, max_bytes: int) -> None:
        self._conn: Connection | None = conn
        self._backend = backend
        self._loop = conn.loop
        self._chunks: list[bytes] = []
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.buffered = 0
        self.head_done = False
        self.status = 0
        self.media_type = "application/json"
        self.content_length: int | None = None
        self.retry_after: str | None = None
        self.location: str | None = None  # of a 3xx (not followed: see Http1Client)
        self.max_bytes = max_bytes

    # -- fed by the connection --

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.buffered += len(chunk)

    def _finish(self) -> None:
        self._complete = True
        self._conn = None
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if not self._complete and self._error is None:
            self._error = error
        self._conn = None
        self._wake()

    # -- read by the caller --

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        except asyncio.CancelledError:
            self._abandon()  # the caller left: so does the connection
            raise
        finally:
            self._waiter = None

    def _take(self) -> bytes:
        chunks = self._chunks
        chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        conn = self._conn
        if conn is not None and conn.reading_paused:
            conn.resume()
        return chunk

    @property
    def exhausted(self) -> bool:
        return self._complete and not self._chunks

    async def wait_head(self) -> None:
        while not self.head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self

    def __aiter__(self) -> Http1Response:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks:
                return self._take()
            if self._error is not None:
                raise self._error
            if self._complete:
                raise StopAsyncIteration
            await self._wait()

    async def aread(self) -> bytes:
        limit = self.max_bytes
        if self.content_length is not None and self.content_length > limit:
            raise response_too_large(limit)  # refused unread: aclose() drops the connection
        parts: list[bytes] = []
        size = 0
        while True:
            if self._chunks:
                chunk = self._take()
                size += len(chunk)
                if size > limit:
                    raise response_too_large(limit)
                parts.append(chunk)
            elif self._error is not None:
                raise self._error
            elif self._complete:
                break
            else:
                await self._wait()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_bounded(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body (an error body); a failure ends the read, not the call."""
        out = bytearray()
        while len(out) < limit:
            if self._chunks:
                out += self._take()
            elif self._complete or self._error is not None:
                break
            else:
                await self._wait()
        return bytes(out[:limit])

    @property
    def connection(self) -> Connection | None:
        """The connection still carrying this answer (None once received whole, or failed)."""
        return self._conn

    def stream_started(self, idle_s: float) -> None:
        conn = self._conn
        if conn is not None:
            conn.set_read_limit(idle_s)

    def _abandon(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.close()  # mid-body: the upstream sees the connection end
        if not self._complete and self._error is None:
            self._error = StreamBroken(f"{self._backend}: answer abandoned")

    async def aclose(self) -> None:
        self._abandon()
        if self._error is not None:
            # Closed, read no more. The error raised to the reader has a traceback holding
            # the reader's frames, which hold this answer: kept here, a reference cycle that
            # holds the request until a collection. A fresh one stands in its place.
            self._error = StreamBroken(f"{self._backend}: answer closed")


class Connection(asyncio.Protocol):
    """One keep-alive connection to a backend, carrying one exchange at a time."""

    def __init__(self, client: Http1Client) -> None:
        self.client = client
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Http1Response | None = None
        self.closed = False
        self.counted = False  # holds one of the client's max_connections slots
        self.reused = False  # has answered before (so may have been closed by the server since)
        self.idle_since = 0.0
        self.reading_paused = False
        self._got_bytes = False  # of the current exchange's answer
        self._message_done = False
        self._keep_alive = False  # the finished answer allows the connection's reuse
        self._interim = False  # a 1xx head: skipped
        self._chunked = False  # transfer-encoding: chunked
        self._until_close = False  # body delimited by the connection's end
        self._headers = 0  # header lines of this head
        self._head_bytes = 0  # their names and values
        self._raw_head = 0  # bytes received while the head was incomplete
        self._last = 0.0  # loop time of the last sign of life from the upstream
        self._limit = client.read_timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._big = False  # this exchange's body was written apart (it may still be going out)
        self._paused_at = 0.0  # loop time reading was last paused

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection is not in a known state
            self.close()
            return
        self._last = self.loop.time()
        self._got_bytes = True
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            if self._message_done:  # the answer was whole; what followed it was not asked for
                self._message_done = False
                self.response = None
                response._finish()
                self.close()
            else:
                self._protocol_failure(exc)
            return
        if not response.head_done:
            self._raw_head += len(data)
            if self._raw_head > MAX_HEAD_BYTES + 8192:  # names and values, plus their framing
                self._protocol_failure(_Refused(f"response head over {MAX_HEAD_BYTES} bytes"))
                return
        if self._message_done:
            self._message_done = False
            self.response = None
            response._finish()
            if self._keep_alive and not self.closed and not self._sending():
                self.client.release(self)
            else:  # an answer before the request was sent whole (a 401 to a large body) included
                self.close()
        else:
            if response._waiter is not None:  # a reader waits for these bytes: once per read, not per chunk
                response._wake()
            if response.buffered > READ_HIGH_WATER and not self.reading_paused and self.transport is not None:
                self.reading_paused = True
                self._paused_at = self._last
                self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost says what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()
        response = self.response
        if response is None:
            return
        self.response = None
        if response.head_done and self._until_close and exc is None:
            response._finish()  # the body was everything until the end
        elif response.head_done:
            response._fail(StreamBroken(f"{self.client.name}: upstream broke off mid-answer"))
        else:
            # Lost after the request was written, even on a reused connection: the upstream may
            # have read and acted on it, so it is not sent again (the fallback loop decides).
            response._fail(
                UpstreamProtocolError(f"{self.client.name}: upstream closed the connection without answering")
            )

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._last = self.loop.time()  # the upstream reads what we send: alive
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._head_bytes += len(name) + len(value)
        if self._headers > MAX_HEADERS:
            raise _Refused(f"more than {MAX_HEADERS} response headers")
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _Refused(f"response head over {MAX_HEAD_BYTES} bytes")
        key = name.lower()
        response = self.response
        if response is None:
            return
        if key == b"content-type":
            response.media_type = value.decode("latin-1").partition(";")[0].strip()
        elif key == b"content-length":
            try:
                response.content_length = int(value)
            except ValueError:
                raise _Refused("content-length is not a number") from None
        elif key == b"retry-after":
            response.retry_after = value.decode("latin-1")
        elif key == b"location":
            response.location = value[:MAX_LOCATION].decode("latin-1")
        elif key == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            raise _Refused("an answer nobody asked for")
        status = self.parser.get_status_code()
        if status == 101:
            raise _Refused("the upstream switched protocols")
        if status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._interim = True
            self._headers = 0
            self._head_bytes = 0
            self._raw_head = 0
            response.media_type = "application/json"
            response.content_length = None
            response.retry_after = None
            return
        response.status = status
        response.head_done = True
        # Neither a length nor chunks: the body ends with the connection (RFC 9112 6.3).
        self._until_close = response.content_length is None and not self._chunked and status not in _NO_BODY_STATUSES
        response._wake()

    def on_message_begin(self) -> None:
        if self._message_done:
            raise _Refused("bytes after the answer")
        self._chunked = False

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._message_done = True
        # Read now (the parser resets once it returns); an HTTP/1.0 answer is never kept.
        self._keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() == "1.1"

    # -- driven by the client --

    async def exchange(self, data: bytes, body: bytes | None, max_bytes: int) -> Http1Response:
        """Send one request; return its response once the head (status, headers) is read."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            self.close()  # its slot is free now, for the retry
            raise (  # known dead before a byte of the request was written: safe to send elsewhere
                _StaleError(self.client.name)
                if self.reused
                else UpstreamProtocolError(f"{self.client.name}: connection closed before the request")
            )
        response = self.response = Http1Response(self, self.client.name, max_bytes)
        self._got_bytes = False
        self._message_done = False
        self._interim = False
        self._until_close = False
        self._chunked = False
        self._headers = 0
        self._head_bytes = 0
        self._raw_head = 0
        self._limit = self.client.read_timeout_s
        now = self._last = self.loop.time()
        self._arm(now + self._limit)
        if body is None:
            self._big = False
            transport.write(data)
        else:
            self._big = True
            transport.writelines((data, body))
        try:
            if self._write_paused:
                drain = self._drain = self.loop.create_future()
                try:
                    await drain  # resolved by resume_writing, or by the connection's end
                finally:
                    if self._drain is drain:
                        self._drain = None
            await response.wait_head()
        except (asyncio.CancelledError, UpstreamError):
            # The caller left, or the answer failed: the upstream sees the connection end. Only
            # while this exchange still owns it: an answer received whole has already handed
            # the connection back to the pool, maybe to another caller.
            if self.response is response:
                self.close()
            raise
        return response

    def set_read_limit(self, seconds: float) -> None:
        """The longest silence from now on (a stream's idle limit), armed now."""
        self._limit = seconds
        self._last = now = self.loop.time()
        self._arm(now + seconds)

    def resume(self) -> None:
        self.reading_paused = False
        if self.transport is not None and not self.closed:
            self._last = self.loop.time()
            self.transport.resume_reading()

    def close(self) -> None:
        transport = self.transport
        if transport is not None:
            if transport.get_write_buffer_size():
                transport.abort()  # a request body still going out: not flushed first
            else:
                transport.close()
        self._closed()
        response = self.response
        if response is not None:  # an exchange under way: it ends here
            self.response = None
            response._fail(StreamBroken(f"{self.client.name}: connection closed mid-answer"))

    # -- internals --

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)  # the exchange's own wait sees the failure
        if self.counted:
            self.counted = False
            self.client.discard(self)

    def _sending(self) -> bool:
        """The request is still going out (its body written apart, not yet all sent)."""
        transport = self.transport
        return self._big and (self._write_paused or (transport is not None and transport.get_write_buffer_size() > 0))

    def _arm(self, when: float) -> None:
        timer = self._timer
        if timer is not None:
            if self._timer_at <= when:
                return  # fires earlier and re-arms then
            timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.loop.time()
        response = self.response
        if response is None:  # idle in the pool
            expires = self.idle_since + self.client.keepalive_s
            if now >= expires:
                self.close()
            else:
                self._arm(expires)
            return
        name = self.client.name
        if self.reading_paused:  # our reader is behind, not the upstream silent...
            stop = self._paused_at + PAUSED_MAX_S
            if now < stop:
                self._arm(min(now + self._limit, stop))
                return
            # ...but a reader that takes nothing for this long has left without aclose()
            self.response = None
            response._fail(StreamBroken(f"{name}: answer unread for {PAUSED_MAX_S:g} s"))
            self.close()
            return
        deadline = self._last + self._limit
        if now < deadline:
            self._arm(deadline)
            return
        self.response = None
        if response.head_done:
            response._fail(StreamIdleTimeout(f"{name}: upstream stalled mid-answer ({self._limit:g} s)"))
        else:
            response._fail(FirstByteTimeout(f"{name}: upstream sent no answer in {self._limit:g} s"))
        self.close()

    def _protocol_failure(self, exc: Exception) -> None:
        response = self.response
        self.response = None
        if response is not None:
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
            what = str(cause) if isinstance(cause, _Refused) else type(exc).__name__
            name = self.client.name
            if response.head_done:
                response._fail(StreamBroken(f"{name}: upstream broke off mid-answer ({what})"))
            else:
                response._fail(UpstreamProtocolError(f"{name}: upstream answered badly ({what})"))
        self.close()


class _StaleError(UpstreamProtocolError):
    """A kept-alive connection found closed before the request was written to it."""

    def __init__(self, backend: str) -> None:
        super().__init__(f"{backend}: upstream closed the connection before the request")


class Http1Client:
    """A backend's connection pool and request writer (see the module docstring)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.target = Target(base_url)
        self.loop = asyncio.get_running_loop()
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        # The TLS context of an https upstream (None: plain http); tests aim a client at a local
        # server by replacing it.
        self.ssl_context = (ssl_context or ssl.create_default_context()) if self.target.tls else None
        self.keepalive_s = KEEPALIVE_S if self.target.tls else KEEPALIVE_PLAIN_S
        # Static headers by lower-cased name (a later spelling replaces an earlier one).
        static: dict[str, tuple[str, str]] = {}
        for key, value in headers.items():
            _check_header(key, value)
            static[key.lower()] = (key, value)
        static.pop("host", None)
        static.pop("content-length", None)
        self._static = static
        self._heads: dict[str, bytes] = {}  # path -> request line + static headers (paths come from code)
        self._idle: list[Connection] = []
        self._open = 0  # connections open or opening: at most max_connections
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self.attempts = 0  # connections opened, for tests and curiosity
        self._closing = False

    def _head(self, path: str, skip: frozenset[str] = frozenset()) -> bytes:
        head = self._heads.get(path) if not skip else None
        if head is None:
            lines = [f"POST {self.target.prefix}{path} HTTP/1.1\r\nHost: {self.target.host_header}\r\n"]
            lines += [f"{k}: {v}\r\n" for lower, (k, v) in self._static.items() if lower not in skip]
            head = "".join(lines).encode()
            if not skip:
                self._heads[path] = head
        return head

    def request_bytes(self, path: str, body: bytes, extra: Mapping[str, str] | None) -> tuple[bytes, bytes | None]:
        """The request's bytes: one buffer, or (head, body) when the body is large."""
        tail = b"content-length: %d\r\n\r\n" % len(body)
        if extra:
            static = self._static
            lines = []
            clash = False
            for key, value in extra.items():
                if "\r" in value or "\n" in value or "\r" in key or "\n" in key:
                    continue  # a line break would start a header (or a request) of its own
                lines.append(f"{key}: {value}\r\n")
                clash = clash or key.lower() in static
            skip = frozenset(k.lower() for k in extra) if clash else frozenset()
            head = self._head(path, skip) + "".join(lines).encode() + tail
        else:
            head = self._head(path) + tail
        if len(body) <= _JOIN_BELOW:
            return head + body, None
        return head, body

    async def post(
        self,
        path: str,
        body: bytes,
        extra: Mapping[str, str] | None = None,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> Http1Response:
        """POST; return the response once its head is read (any status), body unread."""
        data, large = self.request_bytes(path, body, extra)
        conn = await self.acquire(fresh=False)
        try:
            return await conn.exchange(data, large, max_bytes)
        except _StaleError:
            pass  # the request never reached a live server: once more, on a new connection
        conn = await self.acquire(fresh=True)
        return await conn.exchange(data, large, max_bytes)

    async def acquire(self, fresh: bool = False) -> Connection:
        """A connection for one exchange: an idle one (unless `fresh`), a new one while under
        max_connections, else the next one released or the next slot freed, first come first
        served. Give it back with `release`."""
        if self._closing:
            raise UpstreamUnreachable(f"{self.name}: backend closed")
        idle = self._idle
        if fresh:
            if idle and self._open >= self.max_connections:
                idle.pop(0).close()  # the oldest idle one makes room for a new connection
        else:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                transport = conn.transport
                alive = not conn.closed and transport is not None and not transport.is_closing()
                if alive and now - conn.idle_since < self.keepalive_s:
                    return conn
                conn.close()
        reserved = False  # a slot handed over by a closed connection, counted in _open already
        while not reserved and self._open >= self.max_connections:
            waiter: asyncio.Future[Connection | None] = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    given = waiter.result()  # handed over just as the caller left: pass it on
                    if given is not None:
                        self.release(given)
                    else:
                        self._pass_slot()
                else:
                    try:
                        self._waiters.remove(waiter)
                    except ValueError:
                        pass
                raise
            if handed is None:
                reserved = True  # the slot is this caller's: no newcomer took it meanwhile
            elif handed.closed:
                continue  # lost before this caller ran; its slot went to the next in line
            elif not fresh:
                return handed
            else:  # a reused connection for a caller that needs a new one: take its slot instead
                handed.counted = False
                handed.close()
                reserved = True
        if not reserved:
            self._open += 1
        conn = Connection(self)
        conn.counted = True  # holds the slot from now on: closing it, even mid-connect, gives it back once
        try:
            await self._connect(conn)
        except BaseException:
            conn.close()
            raise
        if conn.closed:
            raise UpstreamUnreachable(f"{self.name}: upstream closed the connection as it opened")
        return conn

    async def _connect(self, conn: Connection) -> None:
        target = self.target
        self.attempts += 1
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self.loop.create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=self.ssl_context,
                    server_hostname=target.host if self.ssl_context is not None else None,
                )
        except TimeoutError:
            raise UpstreamUnreachable(f"{self.name}: cannot reach upstream (connect timeout)") from None
        except OSError as exc:  # refused, unresolvable, TLS handshake (ssl.SSLError is an OSError)
            raise UpstreamUnreachable(f"{self.name}: cannot reach upstream ({type(exc).__name__})") from None

    def release(self, conn: Connection) -> None:
        """A connection whose answer was received whole: to the first waiter, else idle."""
        conn.reused = True
        conn.idle_since = self.loop.time()
        if conn.reading_paused:
            conn.resume()
        if self._closing:
            conn.close()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)
        conn._arm(conn.idle_since + self.keepalive_s)

    def discard(self, conn: Connection) -> None:
        """A connection closed (by either side): its slot is free."""
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._pass_slot()

    def _pass_slot(self) -> None:
        """A slot is free: handed to the first waiter (still counted, so no newcomer takes it
        first), else given back."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._open -= 1

    @property
    def idle(self) -> tuple[Connection, ...]:
        """The idle connections, the next one to be reused last."""
        return tuple(self._idle)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """Callers queued for a connection."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    @property
    def open_count(self) -> int:
        return self._open

    async def aclose(self) -> None:
        self._closing = True
        while self._idle:
            self._idle.pop().close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamUnreachable(f"{self.name}: backend closed"))


def _check_header(key: str, value: str) -> None:
    if "\r" in key + value or "\n" in key + value or ":" in key or not key.strip():
        raise ValueError(f"invalid header {key!r}")
