"""The HTTP/1.1 wire: uvicorn's httptools protocol, with the limits a public server needs.

uvicorn parses requests with httptools (llhttp), which bounds neither the number nor the
size of headers, has no timeout for a request's head or body (its keep-alive timer runs
only between requests), and answers malformed requests with a plain-text 400. Hostile or
broken clients could hold sockets forever and grow buffers without bound. This subclass
(`gateway serve` selects it) adds, below the ASGI app so the proxy path pays nothing:

- header limits: more than `max_headers` headers, or a request head (request line and
  headers) over `max_header_bytes`, gets a 431 and the connection is closed. Bytes are
  counted per socket read, so a 10 MB header is refused once 64 KiB of it (plus at most one
  read) has arrived, not parsed whole;
- a head timeout: a connection must deliver a whole request head within `header_timeout_s`
  of opening (or of the first byte of a keep-alive request), else it gets a 408 (or is just
  closed if it sent nothing);
- a body timeout: a request body that stops arriving for `body_timeout_s` (while the app is
  waiting for it) gets a 408; the app's receive() sees a disconnect, so nothing is forwarded;
- OpenAI-shaped JSON for the answers uvicorn writes itself: 400 for unparsable requests,
  503 past `limit_concurrency` (except the probes and /metrics, which a load balancer and
  Prometheus must always reach).

The timeouts cost no timer per request: one sweep per server (`_Sweeper`, a `call_later`
every quarter of the shortest timeout, only while connections are open) checks each
connection's phase and when it began. Per request the protocol stores a phase and a
timestamp at the head's start and end and per body chunk, and checks the header count and
size once, when the head is complete (`make bench`-style A/B: within the noise of 1-3% CPU).

With the h11 protocol, uvicorn bounds a head by `h11_max_incomplete_event_size` itself;
the gateway always runs httptools (gateway/cli/serve.py), so the limits live here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.api.leave import CONNECTION_SCOPE_KEY, ClientWatch
from gateway.protocol.errors import GatewayError

log = logging.getLogger("gateway.api")

_IDLE, _HEAD, _BODY, _LINGER = 0, 1, 2, 3  # where a connection is in reading a request
# After an error answer the gateway stops writing but reads (and drops) what the client is
# still sending, for up to this long or this much: closing a socket with unread input sends
# a TCP reset, which can destroy the answer before the client reads it.
LINGER_S = 2.0
LINGER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class WireLimits:
    max_headers: int = 100
    max_header_bytes: int = 65536
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    @property
    def sweep_interval_s(self) -> float:
        return min(1.0, max(0.05, min(self.header_timeout_s, self.body_timeout_s) / 4))


class ServeConfig(uvicorn.Config):
    """uvicorn's Config plus the wire limits (module-level, so it pickles to worker processes)."""

    def __init__(self, app: Any, *, wire: WireLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.wire = wire


def error_response(status: int, message: str, code: str, type_: str = "invalid_request_error") -> bytes:
    """A whole HTTP/1.1 answer in OpenAI's error shape, closing the connection."""
    body = orjson.dumps(GatewayError(status, message, code=code, type=type_).body())
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\nx-content-type-options: nosniff\r\n",
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        ]
    )


async def _json_service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    error = GatewayError(
        503,
        "The gateway is at its connection limit; retry shortly.",
        code="too_many_connections",
        type="service_unavailable",
    )
    body = orjson.dumps(error.body())
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 503, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# What uvicorn refuses in a header name (its HEADER_RE), and upper case (which it would
# rewrite); and in a value (its HEADER_VALUE_RE): deleted by `bytes.translate`, so a length
# that changes says one was there (a fraction of the cost of a regular expression per header).
_NOT_IN_NAMES = bytes(range(0x20)) + b'\x7f()<>@,;:[]={} \t\\"ABCDEFGHIJKLMNOPQRSTUVWXYZ'
_NOT_IN_VALUES = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])
# Liveness and readiness: answered past the connection limit, so a busy worker is neither
# restarted nor taken out of its load balancer (its neighbours would take its share). And
# Prometheus's scrape: refused, a busy replica read as down (GatewayDown) and its dashboard
# went blank while it was refusing calls.
_PROBES = frozenset({"/health", "/ready", "/metrics"})


class _HeadTooLarge(Exception):
    pass


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: WireLimits = getattr(config, "wire", None) or WireLimits()
        self.phase = _IDLE
        self.phase_since = 0.0
        self._head_wire = 0  # bytes received while the head was still incomplete
        self._chunk = 0  # size of the chunk being parsed
        self._rejection: tuple[int, str, str] | None = None
        self._client_watch: ClientWatch | None = None  # armed by the request being answered

    # -- connection ------------------------------------------------------------------------
    # uvicorn declares it so too (asyncio.Protocol takes a BaseTransport): the same override.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.phase = _HEAD  # a new connection owes a request head within the timeout
        self.phase_since = self.loop.time()
        sweeper = getattr(self.server_state, "gateway_sweeper", None)
        if sweeper is None:
            sweeper = _Sweeper(self.loop, self.connections, self.limits)
            # uvicorn's ServerState is shared by all of a server's connections: one sweeper rides on it.
            self.server_state.gateway_sweeper = sweeper  # type: ignore[attr-defined]
        sweeper.ensure_running()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        watch = self._client_watch
        if watch is not None:  # a handler is still working on an answer: the client left
            self._client_watch = None
            watch.client_left()

    def watch_client(self, owner: asyncio.Task[Any] | None = None) -> ClientWatch:
        """A watch for the request's handler (`owner`, else the calling task), told when this
        connection is lost (gateway.api.leave): instead of a task per request waiting on `receive()`."""
        watch = self._client_watch = ClientWatch(owner if owner is not None else asyncio.current_task())
        return watch

    def write_head_and_body(
        self, scope: Any, send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more_body: bool
    ) -> bool:
        """`http.response.start` and a first `http.response.body`, written as uvicorn's
        `send` writes them (the same bytes, the same checks, the same state of the request
        afterwards) but in one socket write and without its two calls: uvicorn checks each
        header with two regular expressions and copies it into a list, about half a
        microsecond per header, and an answer carries a dozen. Here the head is joined once
        and its names and values checked with two `bytes.translate` calls (the character
        rules uvicorn applies to each: `_NOT_IN_NAMES`, `_NOT_IN_VALUES`).

        False (nothing sent) when the request is not this connection's current one, `send` is
        not the server's own (an operator's middleware wraps it, to add CORS headers or trace:
        it must see both messages), the answer cannot be written at once (started,
        disconnected, writes paused), or it is not the plain case written here (a HEAD
        request, an access log, a status without a body, a `connection` or
        `transfer-encoding` header, a header uvicorn would refuse or rewrite, a body that does
        not match its content-length): the caller then sends the two messages, and uvicorn
        does what it does."""
        cycle = self.cycle
        if (
            cycle is None
            or cycle.scope is not scope
            or send != cycle.send
            or cycle.response_started
            or cycle.disconnected
            or self.flow.write_paused
            or cycle.access_log
            or scope["method"] == "HEAD"
            or status in (204, 304)
        ):
            return False
        default = cycle.default_headers
        every = default + headers if default else headers
        names = b"".join([name for name, _ in every])
        fields = b"".join([b"%s: %s\r\n" % pair for pair in every])
        if (
            len(names.translate(None, _NOT_IN_NAMES)) != len(names)  # uvicorn: HEADER_RE, and lower-case
            # In the lines, the only control characters are the CR LF ending each: none in a
            # value (uvicorn: HEADER_VALUE_RE) nor, checked above, in a name.
            or len(fields) - len(fields.translate(None, _NOT_IN_VALUES)) != 2 * len(every)
        ):
            return False
        head = STATUS_LINE[status] + fields  # each line after a "\n", so a search can anchor on it
        if head.find(b"\nconnection: ") >= 0 or head.find(b"\ntransfer-encoding: ") >= 0:  # `find`: see proxy/relay.py
            return False
        at = head.find(b"\ncontent-length: ")  # uvicorn reads the first one
        if not cycle.keep_alive:
            head += b"connection: close\r\n"  # before transfer-encoding, where uvicorn writes it
        if at < 0:
            chunked = True
            head += b"transfer-encoding: chunked\r\n"
            framed = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                framed.append(b"0\r\n\r\n")
            remaining = 0
        else:
            chunked = False
            start = at + 17
            value = head[start : head.index(b"\r", start)]
            if not value.isdigit():
                return False
            remaining = int(value) - len(body)
            if remaining < 0 or (remaining and not more_body):
                return False  # uvicorn raises: let it
            framed = [body]
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.chunked_encoding = chunked
        cycle.expected_content_length = remaining
        transport = cycle.transport
        if not transport.is_closing():
            transport.write(b"".join([head, b"\r\n", *framed]))
        if not more_body:
            cycle.response_complete = True
            cycle.message_event.set()
            if not cycle.keep_alive:
                transport.close()
            cycle.on_response()
        return True

    def data_received(self, data: bytes) -> None:
        # uvicorn's, with the head's bytes counted and JSON error answers.
        self._unset_keepalive_if_required()
        if self.phase == _LINGER:  # answered already: drop the rest
            self._head_wire += len(data)
            if self._head_wire > LINGER_BYTES:
                self.transport.close()
            return
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self._rejection is not None:
                self._reject(*self._rejection, reason="headers_too_large")
            else:
                reason = str(exc).rstrip(".")
                log.info("invalid HTTP request from %s: %s", _peer(self.client), reason)
                self._reject(400, f"Invalid HTTP request received: {reason}.", "invalid_http_request")
            return
        if self.phase == _HEAD:  # the whole chunk was head: the head is still incomplete
            self._head_wire += self._chunk
            if self._head_wire > self.limits.max_header_bytes:
                self._reject(*self._head_too_large(), reason="headers_too_large")

    def send_400_response(self, msg: str) -> None:  # uvicorn's other callers (e.g. a bad upgrade)
        self._reject(400, msg, "invalid_http_request")

    def _reject(self, status: int, message: str, code: str, *, reason: str = "invalid_request") -> None:
        self._count(reason)
        transport = self.transport
        if transport.is_closing():
            self.phase = _IDLE
            return
        transport.write(error_response(status, message, code))
        if not transport.can_write_eof():
            self.phase = _IDLE
            transport.close()
            return
        transport.write_eof()  # the answer goes out, then a FIN; the sweep closes after LINGER_S
        self.phase = _LINGER
        self.phase_since = self.loop.time()
        self._head_wire = 0
        self.flow.resume_reading()

    def _count(self, reason: str) -> None:
        metrics = self.app_state.get("gateway_metrics")  # put there by the app's lifespan
        if metrics is not None:
            metrics.http_rejection(reason)

    def _head_too_large(self) -> tuple[int, str, str]:
        limits = self.limits
        return (
            431,
            f"Request headers too large: at most {limits.max_headers} headers "
            f"and {limits.max_header_bytes} bytes of request line and headers.",
            "request_header_fields_too_large",
        )

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[CONNECTION_SCOPE_KEY] = self  # type: ignore[literal-required]  # watch_client, send_head_and_body
        if self.phase != _HEAD:  # a keep-alive request: its head's time starts now
            self.phase = _HEAD
            self.phase_since = self.loop.time()
        self._head_wire = 0

    # on_header is uvicorn's: the limits are checked once the head is complete (below), or
    # by data_received while it is still arriving, so a request pays no extra call per header.

    def on_headers_complete(self) -> None:
        limits = self.limits
        headers = self.headers
        if len(headers) > limits.max_headers or (
            self._head_wire + self._chunk > limits.max_header_bytes  # else the head cannot be over
            and len(self.url) + sum(len(n) + len(v) for n, v in headers) > limits.max_header_bytes
        ):
            self._rejection = self._head_too_large()
            raise _HeadTooLarge  # stops the parser: data_received answers 431
        self.phase = _BODY
        self.phase_since = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.phase_since = self.loop.time()  # the body timeout is for a body that stops arriving
        # uvicorn's on_body, inline (it runs per chunk):
        cycle = self.cycle
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self.phase = _IDLE
        # uvicorn's on_message_complete, inline:
        cycle = self.cycle
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        cycle.more_body = False
        cycle.message_event.set()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if app is service_unavailable:  # past limit_concurrency: say so in JSON; the probes still answer
            if cycle.scope["path"] in _PROBES:
                app = self.app
            else:
                app = _json_service_unavailable
                self._count("too_many_connections")
        super()._start_asgi_task(cycle, app)

    # -- timeouts (called by the sweep) -----------------------------------------------------
    def expire_if_late(self, now: float) -> None:
        phase = self.phase
        if phase == _IDLE or self.transport.is_closing():
            return
        if phase == _LINGER:
            if now - self.phase_since >= LINGER_S:
                self.transport.close()
            return
        if self.flow.read_paused:  # the gateway stopped reading (app busy, pipelining): not the client's delay
            self.phase_since = now
            return
        if phase == _HEAD:
            if now - self.phase_since < self.limits.header_timeout_s:
                return
            if self._head_wire == 0:
                self.phase = _IDLE
                self._count("idle_connection")
                self.transport.close()  # nothing sent: nothing to answer
                return
            log.info(
                "closing %s: request head not received within %ss", _peer(self.client), self.limits.header_timeout_s
            )
            self._reject(408, "The request head did not arrive in time.", "request_timeout", reason="head_timeout")
            return
        if now - self.phase_since < self.limits.body_timeout_s:
            return
        log.info("closing %s: request body stalled for %ss", _peer(self.client), self.limits.body_timeout_s)
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.phase = _IDLE
            self._count("body_timeout")
            self.transport.close()
            return
        self._reject(408, "The request body stopped arriving.", "request_timeout", reason="body_timeout")
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() returns http.disconnect; its answer goes nowhere
            cycle.message_event.set()


async def send_head_and_body(
    scope: Any, send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more_body: bool = False
) -> None:
    """Start an answer and send its first body: in one socket write under the gateway's
    protocol, as two ASGI messages under any other server."""
    connection = scope.get(CONNECTION_SCOPE_KEY)
    if connection is None or not connection.write_head_and_body(scope, send, status, headers, body, more_body):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": more_body})


class _Sweeper:
    """One periodic check of every open connection of a server, instead of a timer per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: AbstractSet[object], limits: WireLimits) -> None:
        self._loop = loop
        self._connections = connections
        self._interval = limits.sweep_interval_s
        self._handle: asyncio.TimerHandle | None = None

    def ensure_running(self) -> None:
        if self._handle is None:
            self._handle = self._loop.call_later(self._interval, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        now = self._loop.time()
        for connection in list(self._connections):
            expire = getattr(connection, "expire_if_late", None)
            if expire is not None:
                try:
                    expire(now)
                except Exception:
                    log.exception("checking a connection's timeouts failed")
        if self._connections:
            self.ensure_running()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
