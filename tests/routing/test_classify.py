import pytest

from gateway.config.schema import ClassifierConfig, GatewaySettings
from gateway.config.tasks import load_classifier
from gateway.protocol.errors import GatewayError
from gateway.routing.classify import _PUNCTUATION, _VOCABULARY, _words, classify, classify_text
from gateway.routing.facts import request_facts
from tests.routing.support import chat

SETTINGS = GatewaySettings()


def task_of(request, headers=None, config: ClassifierConfig | None = None) -> str:
    facts = request_facts(request, SETTINGS)
    return classify(request, headers or {}, facts, config or SETTINGS.classifier).task


@pytest.mark.parametrize(
    "prompt, task",
    [
        ("What is the capital of Australia?", "chat"),
        ("Who won the 1998 football world cup?", "chat"),
        ("Tell me a fun fact about octopuses.", "chat"),
        ("hi", "chat"),
        ("Write a Python function that reverses a linked list.", "code"),
        ("Why does this fail?\n```js\nconst x = undefined.foo;\n```", "code"),
        ("Traceback (most recent call last):\n  File \"app.py\", line 3\nKeyError: 'id'", "code"),
        ("def add(a, b):\n    return a - b\n\nfix it", "code"),
        ("My SQL query is slow, how do I debug it?", "code"),
        ("Translate this Python script into Rust.", "code"),
        ("Solve the equation 3x + 5 = 20.", "math"),
        ("Compute the integral of x^2 from 0 to 1.", "math"),
        ("What is \\frac{1}{2} + \\frac{1}{3}?", "math"),
        ("Prove that there are infinitely many prime numbers.", "math"),
        ("Translate 'good morning' into French.", "translation"),
        ("How do you say thank you in Japanese?", "translation"),
        ("请把这段话翻译成英文", "translation"),
        ("Think step by step: a bat and a ball cost $1.10 in total...", "reasoning"),
        ("Explain why the Roman empire fell and compare it with the Han dynasty.", "reasoning"),
        ("Here is a riddle for you: what has keys but no locks?", "reasoning"),
    ],
)
def test_heuristic_tasks(prompt, task):
    assert task_of(chat(prompt)) == task


def test_system_prompt_counts():
    request = chat(
        "How should I structure this?",
        messages=[
            {"role": "system", "content": "You are a senior Python engineer reviewing code."},
            {"role": "user", "content": "How should I structure this?"},
        ],
    )
    assert task_of(request) == "code"


def test_only_the_last_user_message_is_read():
    request = chat(
        "x",
        messages=[
            {"role": "user", "content": "Write a Python function to sort a list."},
            {"role": "assistant", "content": "def f(x): return sorted(x)"},
            {"role": "user", "content": "Thanks! What's the capital of Peru?"},
        ],
    )
    assert task_of(request) == "chat"


def test_images_and_size_take_precedence_over_text():
    image = [
        {"type": "text", "text": "Write Python code for this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]
    assert task_of(chat("x", messages=[{"role": "user", "content": image}])) == "vision"
    assert task_of(chat("word " * 40000)) == "long_context"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert task_of(chat("word " * 40000, tools=tools)) == "long_context"
    assert task_of(chat("word " * 400), config=ClassifierConfig(long_context_tokens=100)) == "long_context"


def test_a_code_fence_deep_inside_a_long_message_is_found():
    prose = "The meeting went well and everyone agreed on the plan. " * 200
    assert (
        task_of(
            chat(
                prose + "```\nSELECT 1\n```" + prose,
            )
        )
        == "code"
    )
    assert task_of(chat(prose + "the pasted snippet was lost" + prose)) == "chat"


def test_reasoning_fields_make_reasoning_when_the_text_says_nothing():
    assert task_of(chat("Hello", reasoning_effort="high")) == "reasoning"
    assert task_of(chat("Hello", reasoning={"effort": "high"})) == "reasoning"


def test_header_overrides_everything():
    assert task_of(chat("Write a Python function"), {"x-gateway-task": "Translation"}) == "translation"


def test_unknown_header_task_is_400():
    with pytest.raises(GatewayError) as e:
        task_of(chat("hi"), {"x-gateway-task": "poetry"})
    assert e.value.status == 400 and e.value.param == "X-Gateway-Task"


def test_plugged_classifier_wins_and_can_defer():
    plugged = ClassifierConfig(kind="tests.routing.plugin_classifier:always_math")
    assert task_of(chat("What is the capital of Australia?"), config=plugged) == "math"
    assert task_of(chat("hi"), {"x-gateway-task": "code"}, plugged) == "code"  # the header still wins
    deferring = ClassifierConfig(kind="tests.routing.plugin_classifier:defer")
    assert task_of(chat("Write a Python function"), config=deferring) == "code"


@pytest.mark.parametrize("name", ["nonsense", "broken"])
def test_a_misbehaving_plugged_classifier_falls_back_to_the_heuristic(name, caplog):
    config = ClassifierConfig(kind=f"tests.routing.plugin_classifier:{name}")
    assert task_of(chat("Write a Python function"), config=config) == "code"
    assert "classifier tests.routing.plugin_classifier" in caplog.text


@pytest.mark.parametrize(
    "kind, message",
    [
        ("nocolon", "module:callable"),
        ("no_such_module_xyz:f", "cannot import"),
        ("tests.routing.plugin_classifier:missing", "no attribute"),
        ("tests.routing.plugin_classifier:not_callable", "not callable"),
    ],
)
def test_load_classifier_explains_what_is_wrong(kind, message):
    with pytest.raises(ValueError, match=message):
        load_classifier(kind)


def test_classification_is_deterministic():
    request = chat("Explain why this algorithm is slow and compare it with quicksort.")
    assert len({task_of(request) for _ in range(20)}) == 1


@pytest.mark.parametrize(
    "text",
    [
        "say hello.",
        "fix the bug in my python function, then refactor the class",
        "c++ and c# trade-offs: why?",
        "debug\x1cpython\x1fcode",  # separators only `str.split` knows as whitespace
        "übersetze das: python, code",  # not ASCII: the other path
        "",
    ],
)
def test_ascii_text_is_split_into_the_same_words_as_any_other(text):
    """ASCII text is split as bytes (cheaper); what it finds must be what the str split finds."""
    assert _words(text) == _VOCABULARY.intersection(text.translate(_PUNCTUATION).split())


@pytest.mark.parametrize(
    "prompt, reason",
    [
        ("Hello there", None),
        ("Here is a riddle for you", "asks to reason: 'riddle'"),
        ("Solve it step-by-step", "asks to reason: 'step-by-step'"),
        ("Give me the pros and cons, step by step, riddle", "asks to reason: 'step by step'"),
        ("Explain the tradeoffs", "reasoning vocabulary: explain, tradeoffs"),
    ],
)
def test_reasoning_phrases_are_found_in_their_order_with_or_without_gated_words(prompt, reason):
    guess = classify_text(prompt, "")
    assert (guess.reason if guess else None) == reason
