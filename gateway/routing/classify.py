"""Task detection: what kind of work a request is, so a route can send it to the right model.

Tasks: code, math, reasoning, translation, long_context, tool_use, vision, chat (general).
Order of precedence: the `X-Gateway-Task` header; images (vision); tools (tool_use); prompt
size (long_context); then the text of the system prompt and the last user message (code,
math, translation, reasoning); else chat.

The default classifier is deterministic and cheap: it reads at most a bounded window of the
text (the head and tail of the last user message, where instructions sit) with precompiled
patterns, plus a search of the whole message for code fences: about 0.2 ms for a 10k-token
prompt, under 10 us for a short one (`bench/routing_decision.py`).

A semantic (embedding) classifier plugs in through `gateway.classifier.kind:
"module:callable"`; it is called as `callable(chat_request, request_facts)` and returns a task
name, or None to defer to the heuristic.
"""

from __future__ import annotations

import importlib
import logging
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, get_args

from gateway.config.schema import ClassifierConfig, Task
from gateway.protocol.chat import ChatRequest
from gateway.protocol.errors import invalid_request
from gateway.routing.facts import RequestFacts

log = logging.getLogger("gateway.routing")

TASKS: tuple[str, ...] = get_args(Task)
TASK_HEADER = "x-gateway-task"
_WINDOW = 2000  # characters read from each end of a message by the patterns

Classifier = Callable[[ChatRequest, RequestFacts], "str | None"]


@dataclass(frozen=True, slots=True)
class TaskGuess:
    task: str
    reason: str


# Unmistakable signs, found by substring checks.
_CODE_MARKS = ("Traceback (most recent call last)", "Exception in thread", "panicked at", "Segmentation fault", "#include <")
_CODE_LINE = re.compile(
    r"^\s*(?:def \w+\(|class \w+[:(]|import \w+|from [\w.]+ import|function \w*\(|const \w+ =|let \w+ =|var \w+ =|"
    r"fn \w+\(|func \w+\(|public (?:static )?\w+|#include|SELECT .+ FROM|package \w+;|using System)",
    re.MULTILINE,
)
# Vocabulary is matched as a set intersection with the window's words (a regex alternation
# with IGNORECASE costs ~1 ms on a long prompt; splitting and intersecting costs ~50 us).
_CODE_WORDS = frozenset(
    "python javascript typescript java rust golang kotlin swift c++ c# php ruby sql bash regex function functions "
    "method methods class classes compile compiler compiled debug debugging bug bugs refactor refactoring "
    "exception api endpoint json yaml dockerfile kubernetes git npm pip variable variables recursion algorithm "
    "code script syntax segfault repository deploy async".split()
)
_CODE_PHRASES = ("unit test", "stack trace", "shell script", "runtime error", "pull request", "null pointer")
_MATH_MARKS = ("\\frac", "\\int", "\\sum", "\\sqrt", "$$", "\\begin{equation", "\\lim", "\\partial")
_MATH_WORDS = frozenset(
    "solve equation equations integral integrate derivative differentiate calculate compute prove proof theorem "
    "lemma probability matrix matrices eigenvalue eigenvalues eigenvector polynomial factorial primes algebra "
    "algebraic geometry calculus logarithm sqrt modulo arithmetic quadratic hypotenuse".split()
)
_MATH_PHRASES = ("prime number", "sum of", "product of", "square root")
# Leading `\d` lets the regex engine skip ahead to digits; powers like `x^2` are checked apart.
_ARITHMETIC = re.compile(r"\d\s*[-+*/^×÷=<>]\s*\(?-?\d")
_POWER = re.compile(r"[a-zA-Z)]\s*\^\s*\d")
_TRANSLATE_WORDS = frozenset("translate translation translating translated traduire traduis traducir traduce übersetze übersetzen".split())
_TRANSLATE_MARKS = ("翻译", "翻譯", "翻訳", "번역")
_TRANSLATE_TAIL = re.compile(
    r"\b(?:in|into|to) (?:english|french|spanish|german|chinese|mandarin|japanese|korean|russian|italian|portuguese|"
    r"arabic|hindi|dutch|turkish|polish|vietnamese|thai|indonesian|ukrainian|swedish)\W*$"
)
_REASONING_PHRASES = (
    "step by step", "step-by-step", "think carefully", "think hard", "think it through", "reason through",
    "reason about", "logic puzzle", "riddle", "brain teaser", "pros and cons",
)
_REASONING_WORDS = frozenset(
    "why explain analyze analyse tradeoff tradeoffs trade-offs compare evaluate plan strategy deduce infer justify "
    "consequences implications argument".split()
)
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation if c not in "+#-"})
_EXPR_WINDOW = 1000  # math expressions are looked for near the ends only


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _window(text: str) -> str:
    if len(text) <= 2 * _WINDOW:
        return text
    return text[:_WINDOW] + "\n" + text[-_WINDOW:]


def _instruction_text(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """(whole last user message, system prompt head) - the text that says what is wanted."""
    last_user = ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            last_user = _text(message.get("content"))
            break
    system = ""
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") in ("system", "developer"):
        system = _text(first.get("content"))[:_WINDOW]
    return last_user, system


def classify_text(user: str, system: str) -> TaskGuess | None:
    """The text-only part of the heuristic (code, math, translation, reasoning)."""
    if "```" in user:  # a fence anywhere, even mid-document
        return TaskGuess("code", "contains a code fence")
    window = _window(user)
    for mark in _CODE_MARKS:
        if mark in window:
            return TaskGuess("code", f"contains {mark!r}")
    if system:
        window = system + "\n" + window
    if _CODE_LINE.search(window):
        return TaskGuess("code", "has a line of source code")
    lower = window.lower()
    words = set(lower.translate(_PUNCTUATION).split())
    code = sorted(words & _CODE_WORDS) + [p for p in _CODE_PHRASES if p in lower]
    if len(code) >= 2:
        return TaskGuess("code", "programming vocabulary: " + ", ".join(code[:4]))
    for mark in _MATH_MARKS:
        if mark in window:
            return TaskGuess("math", f"math notation {mark!r}")
    math = sorted(words & _MATH_WORDS) + [p for p in _MATH_PHRASES if p in lower]
    ends = window if len(window) <= 2 * _EXPR_WINDOW else window[:_EXPR_WINDOW] + "\n" + window[-_EXPR_WINDOW:]
    if _ARITHMETIC.search(ends) or ("^" in ends and _POWER.search(ends)):
        math.append("an arithmetic expression")
    if len(math) >= 2:
        return TaskGuess("math", "math vocabulary/expressions: " + ", ".join(math[:4]))
    if words & _TRANSLATE_WORDS or any(m in window for m in _TRANSLATE_MARKS) or _TRANSLATE_TAIL.search(lower[-200:]):
        return TaskGuess("translation", "asks for a translation")
    for phrase in _REASONING_PHRASES:
        if phrase in lower:
            return TaskGuess("reasoning", f"asks to reason: {phrase!r}")
    reasoning = sorted(words & _REASONING_WORDS)
    if len(reasoning) >= 2:
        return TaskGuess("reasoning", "reasoning vocabulary: " + ", ".join(reasoning[:4]))
    return None


def heuristic(chat: ChatRequest, facts: RequestFacts, config: ClassifierConfig) -> TaskGuess:
    if "vision" in facts.needs:
        return TaskGuess("vision", "has image parts")
    if "tools" in facts.needs:
        return TaskGuess("tool_use", "offers tools")
    if facts.prompt_tokens >= config.long_context_tokens:
        return TaskGuess("long_context", f"~{facts.prompt_tokens:,} prompt tokens >= {config.long_context_tokens:,}")
    user, system = _instruction_text(chat.messages)
    guess = classify_text(user, system)
    if guess is not None:
        return guess
    if facts.reasoning_asked:
        return TaskGuess("reasoning", "asks for reasoning effort")
    return TaskGuess("chat", "general conversation")


@lru_cache(maxsize=16)
def load_classifier(kind: str) -> Classifier:
    """Import `module:callable` once; the config loader reports a failure as a problem."""
    module_name, sep, attr = kind.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"classifier kind must be \"heuristic\" or \"module:callable\", got {kind!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import classifier module `{module_name}`: {exc}") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"`{module_name}` has no attribute `{attr}`")
    if not callable(target):
        raise ValueError(f"`{kind}` is not callable")
    return target


def classify(chat: ChatRequest, headers: Mapping[str, str], facts: RequestFacts, config: ClassifierConfig) -> TaskGuess:
    forced = headers.get(TASK_HEADER)
    if forced:
        task = forced.strip().lower()
        if task not in TASKS:
            raise invalid_request(f"X-Gateway-Task must be one of {', '.join(TASKS)}; got {forced!r}.", param="X-Gateway-Task")
        return TaskGuess(task, "X-Gateway-Task header")
    if config.kind != "heuristic":
        task = _plugged(chat, facts, config.kind)
        if task is not None:
            return TaskGuess(task, f"classifier {config.kind}")
    return heuristic(chat, facts, config)


def _plugged(chat: ChatRequest, facts: RequestFacts, kind: str) -> str | None:
    try:
        task = load_classifier(kind)(chat, facts)
    except Exception:  # noqa: BLE001 - a plug-in bug must not fail requests
        log.exception("classifier %s failed; using the heuristic", kind)
        return None
    if task is None:
        return None
    if task not in TASKS:
        log.warning("classifier %s returned unknown task %r; using the heuristic", kind, task)
        return None
    return task
