"""The answer formats of OpenAI's embeddings and legacy completions endpoints, as the fallback
loop and the relay read them (beside `formats.CHAT`).

- `EMBEDDINGS`: a JSON object with a `data` list of at least one embedding object (its
  `embedding` a list or a base64 string), one per input when the request's inputs are known
  (`EmbeddingsFormat(vectors=...)`: clients read vector i as input i's); usage is
  `prompt_tokens` (and `total_tokens`), no completion. Never streamed.
- `COMPLETIONS`: a `text_completion` object with a `choices` list of at least one choice
  object with its `text` (as chat's check wants a `message` in each: the SDKs index
  `choices[0].text`, `data[0].embedding`), or its SSE chunks, whose
  content is `choices[].text` (chat's is `choices[].delta`); the usage chunk, the `[DONE]`
  and the error events are chat's, so the stream is read by chat's accountant with only the
  first-content test and the estimated closing chunk changed.

Both are passed through: the client gets the upstream's bytes (the relay's structural check
and usage stripping aside), `encoding_format: base64` vectors included. One exception: float
lists answering a request for base64 (`EmbeddingsFormat(base64=True)`), which several
OpenAI-compatible servers send whatever is asked, are encoded as base64 for the client.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import orjson

from gateway.config.snapshot import Offer
from gateway.protocol.embeddings import as_base64
from gateway.protocol.redact import Redactor
from gateway.protocol.sse import data_of
from gateway.protocol.tokens import estimate_text_tokens
from gateway.proxy.formats import AnswerFormat, StreamAccountant, error_text, json_object
from gateway.proxy.relay import MalformedAnswer, SseAccountant, StreamFailedEarly
from gateway.proxy.usage import Usage, token_count

# Float values past which an answer's vectors are encoded as base64 in a worker thread: about
# 40 ns a value (struct's packing; array's is slower), so 2,048 x 3,072 floats held the event
# loop for about 270 ms. Below it, a few milliseconds at most: not worth a thread's hop.
ENCODE_ON_LOOP_MAX = 65_536


class EmbeddingsFormat(AnswerFormat):
    name = "embeddings"
    expected = "an embeddings list"

    def __init__(self, vectors: int | None = None, base64: bool = False) -> None:
        self.vectors = vectors  # the request's inputs, each owed a vector; None: not checked
        self.base64 = base64  # the client asked for base64 vectors
        self.finishes_answers = base64  # float lists are encoded by `finish_answer`

    def check_body(self, offer: Offer, body: bytes) -> Usage | None:
        return self.read_body(offer, body)[0]

    def read_body(self, offer: Offer, body: bytes) -> tuple[Usage | None, Any]:
        """The usage, and the answer when the client asked for base64 and got float lists
        (else None: the body is relayed as it came), which `finish_answer` encodes as base64.
        The SDKs ask for base64 when the app names no encoding, and the npm SDK decodes
        whatever comes back as base64 without looking: a float list becomes a vector a quarter
        as long, silently wrong."""
        answer = json_object(offer, body)
        data = answer.get("data")
        if "error" in answer and not data:
            raise StreamFailedEarly(error_text(answer) or "upstream error", 502)
        if (
            not isinstance(data, list)
            or not data
            or not all(type(d) is dict and _vector(d.get("embedding")) for d in data)
        ):
            raise MalformedAnswer(
                f"{offer.backend}: the upstream's 200 body is not an embeddings list "
                "(no `data` list with a vector in each)"
            )
        if self.vectors is not None and len(data) != self.vectors:
            raise MalformedAnswer(
                f"{offer.backend}: the upstream's 200 body holds {len(data)} embeddings for {self.vectors} inputs"
            )
        usage = embeddings_usage(answer.get("usage"))
        if not self.base64 or all(type(d["embedding"]) is str for d in data):
            return usage, None
        return usage, answer

    async def finish_answer(self, offer: Offer, answer: Any) -> Any:
        """The answer's float lists encoded as base64: in a worker thread past
        `ENCODE_ON_LOOP_MAX` values, so that a large batch does not hold the event loop (the
        encoding is Python-level, a call per vector: the loop gets its turns meanwhile).
        A vector that is not float32 numbers fails the attempt."""
        data = answer["data"]
        values = sum(len(d["embedding"]) for d in data if type(d["embedding"]) is list)
        try:
            if values > ENCODE_ON_LOOP_MAX:
                await asyncio.to_thread(as_base64, data)
            else:
                as_base64(data)
        except (struct.error, OverflowError):
            raise MalformedAnswer(
                f"{offer.backend}: the upstream's 200 body holds a vector that is not float32 numbers"
            ) from None
        return answer

    def accountant(self, *, include_usage: bool, redactor: Redactor) -> StreamAccountant:
        raise TypeError("embeddings are never streamed")


def _vector(embedding: Any) -> bool:
    """Whether an embedding can be a vector: a list with values, or base64 of float32s (what
    `encoding_format: base64` answers; the SDKs decode it with numpy's `frombuffer`), judged
    by its length alone (decoding a batch's megabytes to check it would cost more than the
    call): whole base64 quads, decoding to a whole number of 4-byte floats."""
    if type(embedding) is list:
        return bool(embedding)
    if type(embedding) is not str:
        return False
    size = len(embedding)
    if not size or size % 4:
        return False
    padding = 2 if embedding.endswith("==") else 1 if embedding.endswith("=") else 0
    return (size // 4 * 3 - padding) % 4 == 0


def embeddings_usage(usage: Any) -> Usage | None:
    """OpenAI's embeddings usage: `prompt_tokens` (some servers send only `total_tokens`),
    each count read as chat's are (`token_count`: a whole float or a string of digits too,
    at most `MAX_TOKENS_PER_CALL`)."""
    if not isinstance(usage, dict):
        return None
    tokens = token_count(usage.get("prompt_tokens"))
    if tokens is None:
        tokens = token_count(usage.get("total_tokens"))
    if tokens is None:
        return None
    return Usage(tokens, 0)


class CompletionsFormat(AnswerFormat):
    name = "completions"
    expected = "a valid text completion"

    def check_body(self, offer: Offer, body: bytes) -> Usage | None:
        return self.read_body(offer, body)[0]

    def read_body(self, offer: Offer, body: bytes) -> tuple[Usage | None, Any]:
        answer = json_object(offer, body)
        choices = answer.get("choices")
        if "error" in answer and not choices:
            raise StreamFailedEarly(error_text(answer) or "upstream error", 502)
        if (
            not isinstance(choices, list)
            or not choices
            or not all(type(c) is dict and isinstance(c.get("text"), str) for c in choices)
        ):
            raise MalformedAnswer(
                f"{offer.backend}: the upstream's 200 body is not a text completion "
                "(no `choices` list with a `text` in each)"
            )
        return Usage.from_openai(answer.get("usage")), answer

    def generated_tokens(self, answer: Any) -> int:
        return sum(estimate_text_tokens(choice["text"]) for choice in answer["choices"])

    def accountant(self, *, include_usage: bool, redactor: Redactor) -> StreamAccountant:
        return CompletionsAccountant(strip_usage=not include_usage, hold_done=include_usage, redactor=redactor)


class CompletionsAccountant(SseAccountant):
    """Chat's accountant, for `text_completion` chunks: content is a choice's `text`.

    Only the events before the first content are looked at again (chat's test reads
    `delta`); once content flows, chat's per-chunk path runs unchanged. Before it, a chunk
    whose choices are not text completion choices (chat's `delta` chunks: a backend that
    answers this endpoint in chat's format) fails the attempt, as its non-streamed answer
    does: the client's SDK would read `text` None from each."""

    __slots__ = ()

    def _inspect(self, event: bytes) -> bytes | None:
        if self._started:
            return super()._inspect(event)
        choices = _choices_before_content(event)
        if choices and not all(type(c) is dict and isinstance(c.get("text"), str) for c in choices):
            raise MalformedAnswer("the upstream stream is not a text completion (a choice without `text`)")
        kept = super()._inspect(event)
        if not self._started and kept is not None and choices and _has_text(choices):
            self._started = True
            self.first_content_at = time.perf_counter()
        return kept

    @staticmethod
    def _carries_content(choices: Any) -> bool:
        return _has_text(choices)

    def closing_events(self, usage: Usage) -> bytes:
        """The usage chunk the upstream did not send (estimated), then the held `[DONE]`."""
        chunk_id, created, model = self.meta or (None, None, None)
        event: dict[str, Any] = {
            "id": chunk_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        }
        return b"data: " + orjson.dumps(event) + b"\n\ndata: [DONE]\n\n"


def _choices_before_content(event: bytes) -> list[Any] | None:
    """The choices of a chunk that is no error event, else None (the accountant's own
    reading then judges it: malformed, an error before content, a comment)."""
    payload = data_of(event) if event.find(b'"choices"') >= 0 else None
    try:
        obj = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("error") is not None:
        return None
    choices = obj.get("choices")
    return choices if isinstance(choices, list) else None


def _has_text(choices: Any) -> bool:
    """Whether text completion choices hold any of the answer: text, or a choice's end."""
    return any(isinstance(c, dict) and (c.get("text") or c.get("finish_reason")) for c in choices)


EMBEDDINGS: AnswerFormat = EmbeddingsFormat()
COMPLETIONS: AnswerFormat = CompletionsFormat()
