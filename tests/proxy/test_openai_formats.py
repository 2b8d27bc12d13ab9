"""The embeddings and legacy completions answer formats: what the fallback loop accepts as
an answer, the usage it reads, and how a text_completion stream is accounted."""

from __future__ import annotations

import orjson
import pytest

from gateway.config.schema import ModelOffer
from gateway.config.snapshot import Offer
from gateway.protocol.redact import Redactor
from gateway.proxy.openai_formats import COMPLETIONS, EMBEDDINGS, EmbeddingsFormat
from gateway.proxy.relay import MalformedAnswer, StreamFailedEarly
from gateway.proxy.usage import Usage

OFFER = Offer("acme/m", "up", "m", ModelOffer())


def event(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def test_an_embeddings_body_is_a_data_list_with_prompt_usage():
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AAAAAA=="}], "model": "m"}
    assert EMBEDDINGS.check_body(
        OFFER, orjson.dumps({**body, "usage": {"prompt_tokens": 8, "total_tokens": 8}})
    ) == Usage(8, 0)
    assert EMBEDDINGS.check_body(OFFER, orjson.dumps({**body, "usage": {"total_tokens": 5}})) == Usage(5, 0)
    assert EMBEDDINGS.check_body(OFFER, orjson.dumps(body)) is None  # none reported: the edge estimates


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", MalformedAnswer),
        (b'{"object": "chat.completion", "choices": []}', MalformedAnswer),
        (b'{"error": {"message": "overloaded"}}', StreamFailedEarly),
        # Hostile testing: these were relayed as 200s and billed; the client's code read
        # `data[0].embedding` from an empty list, an integer, an object without one.
        (b'{"object": "list", "data": []}', MalformedAnswer),
        (b'{"object": "list", "data": [1, 2]}', MalformedAnswer),
        (b'{"object": "list", "data": [{"object": "embedding", "index": 0}]}', MalformedAnswer),
        (b'{"object": "list", "data": [{"index": 0, "embedding": 0.5}]}', MalformedAnswer),
        # A vector with no values, or base64 that cannot be a vector of float32s (the SDK's
        # `np.frombuffer(base64.b64decode(...))` fails or reads garbage): no answer either.
        (b'{"object": "list", "data": [{"index": 0, "embedding": []}]}', MalformedAnswer),
        (b'{"object": "list", "data": [{"index": 0, "embedding": ""}]}', MalformedAnswer),
        (b'{"object": "list", "data": [{"index": 0, "embedding": "AAAAAA"}]}', MalformedAnswer),
        (b'{"object": "list", "data": [{"index": 0, "embedding": "AAAA"}]}', MalformedAnswer),  # 3 bytes
        (
            b'{"object": "list", "data": [{"index": 0, "embedding": [0.5]}, {"index": 1, "embedding": []}]}',
            MalformedAnswer,
        ),
    ],
)
def test_a_body_that_is_not_embeddings_fails_the_attempt(body, error):
    with pytest.raises(error):
        EMBEDDINGS.check_body(OFFER, body)


def test_a_completions_body_needs_choices():
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    body = {
        "object": "text_completion",
        "choices": [{"text": "x", "index": 0, "finish_reason": "stop"}],
        "usage": usage,
    }
    assert COMPLETIONS.check_body(OFFER, orjson.dumps(body)) == Usage(3, 4)
    with pytest.raises(MalformedAnswer):
        COMPLETIONS.check_body(OFFER, b'{"object": "list", "data": []}')


@pytest.mark.parametrize(
    "choices",
    [[], [1], [{"index": 0, "finish_reason": "stop"}], [{"text": "a", "index": 0}, {"text": None, "index": 1}]],
)
def test_a_completions_body_whose_choices_have_no_text_fails_the_attempt(choices):
    """Hostile testing: relayed as 200s and billed, these crashed the openai SDK's caller
    (`choices[0].text`: an IndexError, an AttributeError) or handed it None as the text."""
    with pytest.raises(MalformedAnswer):
        COMPLETIONS.check_body(OFFER, orjson.dumps({"object": "text_completion", "choices": choices}))


def chunk(text: str, finish=None) -> bytes:
    return event(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }
    )


def test_a_text_completion_stream_starts_at_its_first_text_and_strips_the_usage_asked_for_it():
    accountant = COMPLETIONS.accountant(include_usage=False, redactor=Redactor(()))
    assert accountant.feed(chunk("")) == chunk("") and not accountant.started  # no text yet: fallback still possible
    assert accountant.feed(chunk("def")) == chunk("def") and accountant.started
    assert accountant.first_content_at is not None
    usage = event(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "choices": [],
            "usage": {"prompt_tokens": 2, "completion_tokens": 5},
        }
    )
    assert (
        accountant.feed(chunk(" f", "length") + usage + b"data: [DONE]\n\n")
        == chunk(" f", "length") + b"data: [DONE]\n\n"
    )
    assert accountant.usage == Usage(2, 5) and accountant.saw_done and accountant.content_events == 3


def test_an_error_before_the_first_text_fails_the_attempt():
    accountant = COMPLETIONS.accountant(include_usage=False, redactor=Redactor(()))
    with pytest.raises(StreamFailedEarly):
        accountant.feed(event({"error": {"message": "overloaded", "code": 503}}))


def test_an_upstream_without_usage_gets_an_estimated_text_completion_usage_chunk():
    accountant = COMPLETIONS.accountant(include_usage=True, redactor=Redactor(()))
    assert accountant.feed(chunk("x", "stop") + b"data: [DONE]\n\n") == chunk("x", "stop")
    assert accountant.done_held
    closing = accountant.closing_events(Usage(4, 1, estimated=True)).split(b"\n\n")
    assert orjson.loads(closing[0].removeprefix(b"data: ")) == {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
    }
    assert closing[1] == b"data: [DONE]"


def test_text_chunks_carrying_usage_are_relayed_when_their_usage_is_stripped():
    """vLLM's `continuous_usage_stats` puts the usage so far on every text chunk; the client
    did not ask for usage, so it is stripped, but never with the text (it dropped them all)."""
    accountant = COMPLETIONS.accountant(include_usage=False, redactor=Redactor(()))
    counted = [
        event({**orjson.loads(chunk(text, finish)[6:]), "usage": {"prompt_tokens": 2, "completion_tokens": n}})
        for n, (text, finish) in enumerate([("def", None), (" f", None), ("", "stop")], start=1)
    ]
    usage_only = event(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "choices": [],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3},
        }
    )
    assert accountant.feed(counted[0]) == counted[0] and accountant.started
    assert (
        accountant.feed(b"".join(counted[1:]) + usage_only + b"data: [DONE]\n\n")
        == b"".join(counted[1:]) + b"data: [DONE]\n\n"
    )
    assert accountant.usage == Usage(2, 3)


def test_a_chat_chunk_before_the_first_text_fails_the_attempt():
    """A backend answering /v1/completions with chat's `delta` chunks: malformed, as its
    non-streamed answer in chat's shape is, and not relayed (the SDK read `text` None)."""
    accountant = COMPLETIONS.accountant(include_usage=False, redactor=Redactor(()))
    delta = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    with pytest.raises(MalformedAnswer):
        accountant.feed(event(delta))
    # An error chunk with choices (OpenRouter's) is still the upstream's error, not malformed.
    openrouter = {
        "error": {"message": "overloaded", "code": 503},
        "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
    }
    with pytest.raises(StreamFailedEarly):
        COMPLETIONS.accountant(include_usage=False, redactor=Redactor(())).feed(event(openrouter))


def test_an_embeddings_body_owes_one_vector_per_input():
    item = {"object": "embedding", "index": 0, "embedding": [0.5]}
    body = orjson.dumps({"object": "list", "data": [item], "usage": {"prompt_tokens": 3}})
    assert EmbeddingsFormat(vectors=1).check_body(OFFER, body) == Usage(3, 0)
    with pytest.raises(MalformedAnswer, match="1 embeddings for 3 inputs"):
        EmbeddingsFormat(vectors=3).check_body(OFFER, body)
