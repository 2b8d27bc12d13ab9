"""An OpenAI-compatible upstream that fails on cue, for failover tests.

Each chat request takes the next `Step` of a script (then the script's `then` step for
every request after it), or, while `down_for` runs, the outage's step. Every request is
logged with its arrival time (`time.monotonic()`, the test process's own clock: the server
runs in a thread of it), so a test can assert how many attempts a backend saw and how far
apart, whatever the gateway in between did.

It is a raw asyncio HTTP/1.1 server, not an ASGI app, because half of the faults live
below HTTP: a reset before any header, a connection that is accepted and never answered, a
chunked stream dropped mid-answer. Answers otherwise follow OpenAI's wire format exactly:
a `chat.completion` body, or SSE `data:` events (role, one event per content token, the
finish event, the usage chunk when `stream_options.include_usage` asks, `data: [DONE]`).

Steps (module functions build them): `ok()`, `status(429, retry_after=2)`, `status(503)`,
`reset()`, `hang()`, `context_length()`, `content_filter()`, `cut(after=40)`,
`stall(after=40)`, `pinging(after=40)`, `malformed(at=3)`, `no_done()`, `body({...})`, `truncated_json()`, `garbage_sse()`,
`rejects_prefill()`, `slow(2.0)`, `malformed_run(at=40)`, `at_once()`, `held_open()`,
`error_event(after=40, {...})`, `usage_twice()`.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.support.ports import free_port

TOKENS = 60  # content events in a full answer: "t0 ", "t1 ", ... "t59 "
PROMPT_TOKENS = 11


@dataclass(frozen=True)
class Step:
    """How one request is answered. `kind` names the fault; the rest parameterise it."""

    kind: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: dict | None = None  # the error body of a non-2xx answer
    at: int | None = None  # stream faults: after this many content events
    finish_reason: str = "stop"
    delay_s: float = 0.0  # `slow`: how long before the answer starts
    raw: tuple[bytes, ...] = ()  # `at_once`: these events instead of the usual answer
    cut: bool = False  # `error_event`: the connection closed after it, no `[DONE]`
    hold: bool = False  # `error_event`: the body left open after it, no `[DONE]`


def ok() -> Step:
    return Step()


def status(code: int, retry_after: float | None = None) -> Step:
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    kind = "rate_limited" if code == 429 else "server_error" if code >= 500 else "invalid_request_error"
    return Step("status", code, headers, {"error": {"message": f"fault upstream: {code}", "type": kind, "code": None}})


def context_length() -> Step:
    message = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    return Step("status", 400, error={"error": error})


def content_filter() -> Step:
    """A 200 whose answer the provider's filter stopped: partial content, `content_filter`."""
    return Step("content_filter", at=3, finish_reason="content_filter")


def reset() -> Step:
    return Step("reset")


def hang() -> Step:
    return Step("hang")


def slow(seconds: float) -> Step:
    """A healthy answer that starts only `seconds` after the request (a long queue, a slow
    first token): nothing at all is sent before then, headers included."""
    return Step("slow", delay_s=seconds)


def cut(after: int) -> Step:
    """Stream: drop the connection after `after` content events (no chunked terminator)."""
    return Step("cut", at=after)


def cut_after_finish() -> Step:
    """Stream: the whole answer to its finish_reason, then the connection dropped before the
    usage chunk and `[DONE]`."""
    return Step("cut_after_finish")


def stall(after: int) -> Step:
    """Stream: after `after` content events, send nothing more, connection left open."""
    return Step("stall", at=after)


def pinging(after: int) -> Step:
    """Stream: after `after` content events, nothing but SSE comments (`: ping`), one every
    250 ms until the client goes away: stuck, yet never silent."""
    return Step("pinging", at=after)


def malformed(at: int) -> Step:
    """Stream: an event whose JSON is broken after `at` content events, then the rest."""
    return Step("malformed", at=at)


def malformed_run(at: int) -> Step:
    """Stream: after `at` content events, nothing but malformed events, one every 50 ms until
    the client goes away: a run long enough that the stream counts as broken."""
    return Step("malformed_run", at=at)


def at_once(*raw: bytes) -> Step:
    """Stream: the whole answer (head, every event, the chunked terminator) in one write, as
    a fast upstream's short answer arrives: the client reads it all at once. `raw`: these
    events (bytes as sent) instead of the usual answer."""
    return Step("at_once", raw=raw)


def error_event(
    after: int, error: dict, *, openrouter: bool = False, then_cut: bool = False, then_hold: bool = False
) -> Step:
    """Stream: after `after` content events the upstream's own error event `{"error": error}`,
    then `[DONE]` and the body's end (`then_cut`: the connection closed instead, the chunked
    body unfinished; `then_hold`: nothing more, the body left open until the client goes). `openrouter`: as OpenRouter sends one mid-stream (its docs' "Streaming
    Error Formats"): the error beside the chunk's id and model and a choice finished with
    `"error"`. A pause comes first, so the event arrives in a read of its own, after the
    reads that began the stream."""
    kind = "openrouter_error_event" if openrouter else "error_event"
    return Step(kind, at=after, error=error, cut=then_cut, hold=then_hold)


def held_open(at_once: bool = False) -> Step:
    """Stream: the whole answer to its `[DONE]`, then the body left unfinished, the connection
    open (a server that ends the answer but not its response). `at_once`: the answer in one
    write, so the client reads it whole in its first read."""
    return Step("held_open_at_once" if at_once else "held_open")


def usage_twice() -> Step:
    """Stream: the whole answer, then its usage chunk twice, each in a read of its own (the
    first counting 10 fewer completion tokens, as an upstream sending an early count and
    then the final one), then `[DONE]`."""
    return Step("usage_twice")


def no_done() -> Step:
    """Stream: the whole answer and its usage, then the end of the body without `[DONE]`."""
    return Step("no_done")


def body(answer: dict) -> Step:
    """Not streamed: a 200 whose body is `answer` (whatever it holds)."""
    return Step("body", raw=(orjson.dumps(answer),))


def truncated_json() -> Step:
    """A 200 `application/json` answer whose body stops mid-object (non-streamed)."""
    return Step("truncated_json")


def rejects_prefill() -> Step:
    """Healthy, except that a request ending in an assistant message (a prefill) gets the
    400 a provider without prefill support answers."""
    error = {"message": "the last message must be from the user", "type": "invalid_request_error", "code": None}
    return Step("rejects_prefill", 400, error={"error": error})


def garbage_sse() -> Step:
    """A 200 `text/event-stream` of lines that are neither SSE fields nor JSON, then `[DONE]`."""
    return Step("garbage_sse")


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when the request's body was read
    body: dict[str, Any]
    headers: dict[str, str]
    step: str  # the kind of the step that answered it


class FaultUpstream:
    """One scripted upstream on a free port; `start()` it, `stop()` it."""

    def __init__(self, name: str = "fault", *, tokens: int = TOKENS) -> None:
        self.name = name
        self.tokens = tokens
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.seen: list[Seen] = []
        self.health_checks = 0
        self._steps: list[Step] = []
        self._then = ok()
        self._down: tuple[float, Step] | None = None  # (until, step)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- the script ------------------------------------------------------------------------
    def script(self, *steps: Step, then: Step | None = None) -> FaultUpstream:
        """The next requests take `steps` in order; every request after them takes `then`
        (default: a healthy answer). Clears the request log."""
        self._steps = list(steps)
        self._then = then or ok()
        self._down = None
        self.seen.clear()
        return self

    def always(self, step: Step) -> FaultUpstream:
        """A persistent fault."""
        return self.script(then=step)

    def down_for(self, seconds: float, step: Step | None = None) -> float:
        """Answer `step` (default 503) to every request, and fail health checks, for `seconds`
        from now; healthy after. Returns the recovery moment (monotonic)."""
        until = time.monotonic() + seconds
        self.script()
        self._down = (until, step or status(503))
        return until

    def _next_step(self, now: float) -> Step:
        if self._down is not None and now < self._down[0]:
            return self._down[1]
        return self._steps.pop(0) if self._steps else self._then

    def arrivals(self, kind: str | None = None) -> list[float]:
        return [s.at for s in self.seen if kind is None or s.step == kind]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FaultUpstream:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"fault upstream {self.name} did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=5)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            # Handlers holding a connection open on purpose (hang, stall) return on
            # `_stopping`; idle keep-alive connections end when their transport does.
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.sleep(0)

    # -- HTTP ------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:  # keep-alive: one request after another on the connection
                request = await _read_request(reader)
                if request is None:
                    break
                method, path, headers, body = request
                keep = await self._answer(method, path, headers, body, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    async def _answer(self, method: str, path: str, headers: dict, body: bytes, writer) -> bool:
        now = time.monotonic()
        if method == "GET":
            self.health_checks += 1
            down = self._down is not None and now < self._down[0]
            if down:
                return await _send(writer, 503, b'{"error": "down"}')
            return await _send(writer, 200, b'{"object": "list", "data": []}')
        if path != "/v1/chat/completions":
            return await _send(writer, 404, b'{"error": {"message": "not found"}}')
        payload = orjson.loads(body)
        step = self._next_step(now)
        self.seen.append(Seen(now, payload, headers, step.kind))
        kind = step.kind
        if kind == "reset":
            _reset(writer)
            return False
        if kind == "hang":
            await self._stopping.wait()
            return False
        if kind == "slow":
            try:
                await asyncio.wait_for(self._stopping.wait(), step.delay_s)
                return False  # stopping
            except TimeoutError:
                pass
            if writer.transport.is_closing():
                return False  # the client gave up meanwhile (a hedge that lost)
        if kind == "status" or (kind == "rejects_prefill" and _ends_in_prefill(payload)):
            return await _send(writer, step.status, orjson.dumps(step.error), step.headers)
        if kind == "body":
            return await _send(writer, 200, step.raw[0])
        if kind == "truncated_json":
            whole = orjson.dumps(self._completion(payload, step))
            return await _send(writer, 200, whole[: len(whole) // 2])
        if not payload.get("stream"):
            return await _send(writer, 200, orjson.dumps(self._completion(payload, step)))
        if kind == "held_open_at_once":
            collected = _Collected()
            await self._stream(payload, Step("held_open_collected"), collected)
            writer.write(b"".join(collected.parts))
            await writer.drain()
            await self._stopping.wait()
            return False
        if kind == "at_once":
            collected = _Collected()
            if step.raw:
                await _start_chunked(collected)
                for event in [*step.raw, b""]:
                    await _chunk(collected, event)
            else:
                await self._stream(payload, ok(), collected)
            writer.write(b"".join(collected.parts))
            await writer.drain()
            return True
        return await self._stream(payload, step, writer)

    def _content(self, step: Step, payload: dict) -> list[str]:
        """The answer's tokens. A request ending in an assistant message (a prefill, as a
        continuation sends) is continued from the token after the ones it holds, and from
        where its text ends, as a model goes on: a prefill without its trailing space (as
        one to Anthropic must be) gets that space first, " t40 " after "... t39"."""
        prefill = _ends_in_prefill(payload)
        text = str(prefill.get("content") or "") if prefill else ""
        start = len(text.split())
        end = step.at if step.kind == "content_filter" else self.tokens
        tokens = [f"t{i} " for i in range(start, end)]
        if text and not text[-1].isspace() and tokens:
            tokens[0] = " " + tokens[0]
        return tokens

    def _usage(self, step: Step, payload: dict) -> dict:
        completion = len(self._content(step, payload))
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion,
            "total_tokens": PROMPT_TOKENS + completion,
        }

    def _completion(self, payload: dict, step: Step) -> dict:
        message = {"role": "assistant", "content": "".join(self._content(step, payload))}
        return {
            "id": f"chatcmpl-{self.name}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": step.finish_reason}],
            "usage": self._usage(step, payload),
        }

    async def _stream(self, payload: dict, step: Step, writer) -> bool:
        base = {"id": f"chatcmpl-{self.name}", "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = payload.get("model")

        def event(delta: dict, finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return _sse({**base, "choices": [choice]})

        await _start_chunked(writer)
        if step.kind == "garbage_sse":
            await _chunk(writer, b"this is not an event stream\n\n<html>502 Bad Gateway</html>\n\n")
            await _chunk(writer, b"data: [DONE]\n\n")
            await _chunk(writer, b"")
            return True
        await _chunk(writer, event({"role": "assistant", "content": ""}))
        for i, token in enumerate(self._content(step, payload)):
            if step.at == i:
                if step.kind == "cut":
                    await writer.drain()
                    writer.close()  # FIN with the chunked body unfinished
                    return False
                if step.kind == "stall":
                    await self._stopping.wait()
                    return False
                if step.kind == "malformed":
                    await _chunk(writer, b'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": \n\n')
                if step.kind == "pinging":
                    while not self._stopping.is_set() and not writer.transport.is_closing():
                        await _chunk(writer, b": ping\n\n")
                        await asyncio.sleep(0.25)
                    return False
                if step.kind in ("error_event", "openrouter_error_event"):
                    await asyncio.sleep(0.1)
                    failure = {"error": step.error}
                    if step.kind == "openrouter_error_event":
                        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
                        failure = {**base, "provider": "fake", **failure, "choices": [choice]}
                    await _chunk(writer, _sse(failure))
                    if step.cut:
                        await writer.drain()
                        writer.close()  # FIN with the chunked body unfinished
                        return False
                    if step.hold:
                        while not self._stopping.is_set() and not writer.transport.is_closing():
                            await asyncio.sleep(0.05)
                        return False
                    await _chunk(writer, b"data: [DONE]\n\n")
                    await _chunk(writer, b"")
                    return True
                if step.kind == "malformed_run":
                    while not self._stopping.is_set() and not writer.transport.is_closing():
                        await _chunk(writer, b'data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n')
                        await asyncio.sleep(0.05)
                    return False
            await _chunk(writer, event({"content": token}))
        await _chunk(writer, event({}, step.finish_reason))
        if step.kind == "cut_after_finish":
            await writer.drain()
            writer.close()
            return False
        if (payload.get("stream_options") or {}).get("include_usage"):
            usage = self._usage(step, payload)
            if step.kind == "usage_twice":
                early = {**usage, "completion_tokens": usage["completion_tokens"] - 10}
                early["total_tokens"] = early["prompt_tokens"] + early["completion_tokens"]
                await _chunk(writer, _sse({**base, "choices": [], "usage": early}))
                await asyncio.sleep(0.05)
            await _chunk(writer, _sse({**base, "choices": [], "usage": usage}))
            if step.kind == "usage_twice":
                await asyncio.sleep(0.05)  # `[DONE]` in a read of its own too
        if step.kind != "no_done":
            await _chunk(writer, b"data: [DONE]\n\n")
        if step.kind == "held_open":
            await self._stopping.wait()
            return False
        if step.kind == "held_open_collected":
            return False  # the caller writes it all, and holds the body open
        await _chunk(writer, b"")
        return True


def _ends_in_prefill(payload: dict) -> dict | None:
    """The request's last message when it is the assistant's (a prefill to continue)."""
    messages = payload.get("messages") or [None]
    last = messages[-1]
    return last if isinstance(last, dict) and last.get("role") == "assistant" else None


def _sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed the connection between requests
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            parts.append(await reader.readexactly(size + 2))
        await reader.readuntil(b"\r\n")
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


async def _send(writer, code: int, body: bytes, headers: dict[str, str] | None = None) -> bool:
    lines = [f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}", "content-type: application/json"]
    lines += [f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    return True


async def _start_chunked(writer) -> None:
    head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()


async def _chunk(writer, data: bytes) -> None:
    """One HTTP chunk (the empty one ends the body), flushed so the client sees it now."""
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


class _Collected:
    """A writer that keeps what is written, for an answer sent in one write."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    async def drain(self) -> None:
        pass


def _reset(writer) -> None:
    """Close with RST rather than FIN: what a crashed or overloaded server's kernel sends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
