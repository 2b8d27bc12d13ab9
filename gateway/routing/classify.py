"""Task detection: what kind of work a request is, so a route can send it to the right model.

Tasks: code, math, reasoning, translation, long_context, tool_use, vision, chat (general).
Order of precedence: the `X-Gateway-Task` header; a coding agent's tool set or system prompt
(code: see `routing.agents`); images (vision); prompt size (long_context); then the text of
the system prompt and the last user message (code, math, translation, reasoning); then
offered tools (tool_use); else chat.

Tool use is a capability, not a category: a request with tools is routed to models that
declare `tools` by the capability filter whatever its task, so the task says what the work
is. Coding agents send tools on every turn, and a classifier that answered `tool_use` for
any request with tools would never count their traffic as programming; a request with tools
whose text says nothing more specific is still `tool_use`.

The default classifier is deterministic and cheap: it reads at most a bounded window of the
text (the head and tail of the last user message, where instructions sit), plus a search of
the whole message for code fences. Splitting the window into a set of words is most of its
cost; every other test is either a set lookup or gated by one (a phrase is only searched
for when its first word is among the words, so it must start a word), or a search the C
code does without the regex engine's per-character step (a fence only if the message has
a backtick, a source line only after a newline, digits before arithmetic): about 50 us for
a 10k-token prompt, a few us for a short one (`bench/routing_decision.py`).

A semantic (embedding) classifier plugs in through `gateway.classifier.kind:
"module:callable"`; it is called as `callable(chat_request, request_facts)` and returns a task
name, or None to defer to the heuristic.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.schema import ClassifierConfig
from gateway.config.tasks import TASKS, load_classifier
from gateway.protocol.chat import ChatRequest
from gateway.protocol.errors import echoed, invalid_request
from gateway.routing.agents import coding_agent
from gateway.routing.facts import RequestFacts

log = logging.getLogger("gateway.routing")

TASK_HEADER = "x-gateway-task"
_WINDOW = 2000  # characters read from each end of a message by the patterns

Classifier = Callable[[ChatRequest, RequestFacts], "str | None"]


@dataclass(frozen=True, slots=True)
class TaskGuess:
    task: str
    reason: str


# The guesses whose reason names nothing from the request, built once.
_FENCE = TaskGuess("code", "contains a code fence")
_SOURCE_LINE = TaskGuess("code", "has a line of source code")
_TRANSLATION = TaskGuess("translation", "asks for a translation")
_VISION = TaskGuess("vision", "has image parts")
_TOOLS = TaskGuess("tool_use", "offers tools")
_REASONING_EFFORT = TaskGuess("reasoning", "asks for reasoning effort")
_CHAT = TaskGuess("chat", "general conversation")
# Not a task a route can name: what routing records for `/v1/embeddings` (never classified).
EMBEDDINGS = TaskGuess("embeddings", "embeddings endpoint")


# Unmistakable signs, found by substring checks.
_CODE_MARKS = (
    "Traceback (most recent call last)",
    "Exception in thread",
    "panicked at",
    "Segmentation fault",
    "#include <",
)
# Anchored on a newline (the text is searched with one prepended) rather than on `^` with
# MULTILINE: the same matches, but the engine jumps from newline to newline.
_CODE_LINE = re.compile(
    r"\n\s*(?:def \w+\(|class \w+[:(]|import \w+|from [\w.]+ import|function \w*\(|const \w+ =|let \w+ =|var \w+ =|"
    r"fn \w+\(|func \w+\(|public (?:static )?\w+|#include|SELECT .+ FROM|package \w+;|using System)",
)
# Vocabulary is matched as a set intersection with the window's words (a regex alternation
# with IGNORECASE costs ~1 ms on a long prompt; splitting and intersecting costs ~50 us).
_CODE_WORDS = frozenset(
    [
        "python",
        "javascript",
        "typescript",
        "java",
        "rust",
        "golang",
        "kotlin",
        "swift",
        "c++",
        "c#",
        "php",
        "ruby",
        "sql",
        "bash",
        "regex",
        "function",
        "functions",
        "method",
        "methods",
        "class",
        "classes",
        "compile",
        "compiler",
        "compiled",
        "debug",
        "debugging",
        "bug",
        "bugs",
        "refactor",
        "refactoring",
        "exception",
        "api",
        "endpoint",
        "json",
        "yaml",
        "dockerfile",
        "kubernetes",
        "git",
        "npm",
        "pip",
        "variable",
        "variables",
        "recursion",
        "algorithm",
        "code",
        "script",
        "syntax",
        "segfault",
        "repository",
        "deploy",
        "async",
    ]
)
_CODE_PHRASES = ("unit test", "stack trace", "shell script", "runtime error", "pull request", "null pointer")
_MATH_MARKS = ("\\frac", "\\int", "\\sum", "\\sqrt", "$$", "\\begin{equation", "\\lim", "\\partial")
_MATH_WORDS = frozenset(
    [
        "solve",
        "equation",
        "equations",
        "integral",
        "integrate",
        "derivative",
        "differentiate",
        "calculate",
        "compute",
        "prove",
        "proof",
        "theorem",
        "lemma",
        "probability",
        "matrix",
        "matrices",
        "eigenvalue",
        "eigenvalues",
        "eigenvector",
        "polynomial",
        "factorial",
        "primes",
        "algebra",
        "algebraic",
        "geometry",
        "calculus",
        "logarithm",
        "sqrt",
        "modulo",
        "arithmetic",
        "quadratic",
        "hypotenuse",
    ]
)
_MATH_PHRASES = ("prime number", "sum of", "product of", "square root")
# Leading `\d` lets the regex engine skip ahead to digits; powers like `x^2` are checked apart.
_ARITHMETIC = re.compile(r"\d\s*[-+*/^×÷=<>]\s*\(?-?\d")
_ASCII_ARITHMETIC = re.compile(r"[0-9]\s*[-+*/^×÷=<>]\s*\(?-?[0-9]")  # the same on ASCII text, twice as fast
_DIGITS = "0123456789"
_POWER = re.compile(r"[a-zA-Z)]\s*\^\s*\d")
_TRANSLATE_WORDS = frozenset(
    [
        "translate",
        "translation",
        "translating",
        "translated",
        "traduire",
        "traduis",
        "traducir",
        "traduce",
        "übersetze",
        "übersetzen",
    ]
)
_TRANSLATE_MARKS = ("翻译", "翻譯", "翻訳", "번역")
_LANGUAGES = (
    "english",
    "french",
    "spanish",
    "german",
    "chinese",
    "mandarin",
    "japanese",
    "korean",
    "russian",
    "italian",
    "portuguese",
    "arabic",
    "hindi",
    "dutch",
    "turkish",
    "polish",
    "vietnamese",
    "thai",
    "indonesian",
    "ukrainian",
    "swedish",
)
_TRANSLATE_TAIL = re.compile(r"\b(?:in|into|to) (?:" + "|".join(_LANGUAGES) + r")\W*$")
# What `\W*$` may leave after the language in ASCII text: the tail is only searched when,
# stripped of these, it ends with a language name.
_ASCII_NON_WORD = "".join(c for c in map(chr, range(128)) if not re.match(r"\w", c))
_REASONING_PHRASES = (
    "step by step",
    "step-by-step",
    "think carefully",
    "think hard",
    "think it through",
    "reason through",
    "reason about",
    "logic puzzle",
    "riddle",
    "brain teaser",
    "pros and cons",
)
_REASONING_WORDS = frozenset(
    [
        "why",
        "explain",
        "analyze",
        "analyse",
        "tradeoff",
        "tradeoffs",
        "trade-offs",
        "compare",
        "evaluate",
        "plan",
        "strategy",
        "deduce",
        "infer",
        "justify",
        "consequences",
        "implications",
        "argument",
    ]
)
# Punctuation that separates words; `+`, `#` and `-` do not ("c++", "c#", "trade-offs").
_PUNCTUATION_CHARS = tuple(c for c in string.punctuation if c not in "+#-")
_PUNCTUATION = str.maketrans({c: " " for c in _PUNCTUATION_CHARS})


def _gated(phrases: tuple[str, ...]) -> tuple[tuple[str | None, str], ...]:
    """(first word, phrase): a phrase of several words is searched for only when its first
    word is among the text's words, so it must start a word ("sum of" is not found in
    "checksum of"); a one-word phrase ("riddle") is always searched for."""
    return tuple((p.split()[0] if " " in p else None, p) for p in phrases)


_CODE_PHRASES_GATED = _gated(_CODE_PHRASES)
_MATH_PHRASES_GATED = _gated(_MATH_PHRASES)
_REASONING_PHRASES_GATED = _gated(_REASONING_PHRASES)
# Every word a test looks for (vocabularies and the first words of phrases).
_VOCABULARY = frozenset(
    _CODE_WORDS
    | _MATH_WORDS
    | _TRANSLATE_WORDS
    | _REASONING_WORDS
    | {
        first
        for gated in (_CODE_PHRASES_GATED, _MATH_PHRASES_GATED, _REASONING_PHRASES_GATED)
        for first, _ in gated
        if first
    }
)
# The first words of the gated reasoning phrases: when the text has none of them, only the
# ungated phrases can match (a short chat message then costs two substring checks, not eleven).
_REASONING_FIRSTS = frozenset(first for first, _ in _REASONING_PHRASES_GATED if first)
_REASONING_UNGATED = tuple(pair for pair in _REASONING_PHRASES_GATED if pair[0] is None)
# ASCII text (most prompts) is split into words as bytes: `bytes.translate` with a table
# costs a fraction of `str.translate` with a mapping, which looks each character up in a
# dict (about 0.4 us less on a one-line message, 3 us on a 4 KB window). \x1c-\x1f are
# whitespace to `str.split` but not to `bytes.split`: spaces too, so both split alike.
_ASCII_SEPARATORS = "".join(_PUNCTUATION_CHARS) + "\x1c\x1d\x1e\x1f"
_ASCII_PUNCTUATION = bytes.maketrans(_ASCII_SEPARATORS.encode(), b" " * len(_ASCII_SEPARATORS))
_ASCII_VOCABULARY = frozenset(w.encode() for w in _VOCABULARY if w.isascii())
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
    if "`" in user and "```" in user:  # a fence anywhere, even mid-document
        return _FENCE
    window = _window(user)
    for mark in _CODE_MARKS:
        if mark in window:
            return TaskGuess("code", f"contains {mark!r}")
    if system:
        window = system + "\n" + window
    if _CODE_LINE.search("\n" + window):
        return _SOURCE_LINE
    lower = window.lower()
    words = _words(lower)
    code = sorted(words & _CODE_WORDS) + _phrases(_CODE_PHRASES_GATED, words, lower) if words else []
    if len(code) >= 2:
        return TaskGuess("code", "programming vocabulary: " + ", ".join(code[:4]))
    if "\\" in window or "$$" in window:
        for mark in _MATH_MARKS:
            if mark in window:
                return TaskGuess("math", f"math notation {mark!r}")
    math = sorted(words & _MATH_WORDS) + _phrases(_MATH_PHRASES_GATED, words, lower) if words else []
    if math:  # an expression counts only beside math vocabulary: alone it is not enough
        ends = window if len(window) <= 2 * _EXPR_WINDOW else window[:_EXPR_WINDOW] + "\n" + window[-_EXPR_WINDOW:]
        if _has_arithmetic(ends):
            math.append("an arithmetic expression")
        if len(math) >= 2:
            return TaskGuess("math", "math vocabulary/expressions: " + ", ".join(math[:4]))
    if words & _TRANSLATE_WORDS or _asks_for_a_language(window, lower):
        return _TRANSLATION
    for first, phrase in _REASONING_PHRASES_GATED if not words.isdisjoint(_REASONING_FIRSTS) else _REASONING_UNGATED:
        if (first is None or first in words) and phrase in lower:
            return TaskGuess("reasoning", f"asks to reason: {phrase!r}")
    reasoning = sorted(words & _REASONING_WORDS) if words else []
    if len(reasoning) >= 2:
        return TaskGuess("reasoning", "reasoning vocabulary: " + ", ".join(reasoning[:4]))
    return None


def _words(lower: str) -> frozenset[str]:
    """The words of `lower` that some test looks for: most texts share none or few with the
    vocabulary, so only those are kept."""
    if lower.isascii():
        found = _ASCII_VOCABULARY.intersection(lower.encode().translate(_ASCII_PUNCTUATION).split())
        return frozenset([w.decode() for w in found]) if found else _NO_WORDS
    return _VOCABULARY.intersection(lower.translate(_PUNCTUATION).split())


_NO_WORDS: frozenset[str] = frozenset()


def _phrases(gated: tuple[tuple[str | None, str], ...], words: frozenset[str], lower: str) -> list[str]:
    return [phrase for first, phrase in gated if (first is None or first in words) and phrase in lower]


def _has_arithmetic(ends: str) -> bool:
    if ends.isascii():
        # On a long text, ten scans for a digit (memchr) cost less than the regex's own.
        if len(ends) > 256 and not any(d in ends for d in _DIGITS):
            return False
        found = _ASCII_ARITHMETIC.search(ends)
    else:
        found = _ARITHMETIC.search(ends)
    return bool(found) or ("^" in ends and _POWER.search(ends) is not None)


def _asks_for_a_language(window: str, lower: str) -> bool:
    """Translation marks (CJK: never in ASCII text), or "... into French." at the very end."""
    if not window.isascii():
        return any(m in window for m in _TRANSLATE_MARKS) or _TRANSLATE_TAIL.search(lower[-200:]) is not None
    tail = lower[-200:]
    return tail.rstrip(_ASCII_NON_WORD).endswith(_LANGUAGES) and _TRANSLATE_TAIL.search(tail) is not None


def _request_text(chat: ChatRequest) -> tuple[str, str]:
    """`_instruction_text` of the request's messages; from a pass-through's view when it has
    one (its last user content and system text, as its translation would hold them)."""
    prompt = chat.prompt
    if prompt is None:
        return _instruction_text(chat.messages)
    return _text(prompt.last_user), prompt.system[:_WINDOW]


def heuristic(chat: ChatRequest, facts: RequestFacts, config: ClassifierConfig) -> TaskGuess:
    tools = chat.fields.get("tools")
    text: tuple[str, str] | None = None
    if tools:
        text = _request_text(chat)
        agent = coding_agent(tools, text[1])
        if agent is not None:
            return TaskGuess("code", agent)
    if "vision" in facts.needs:
        return _VISION
    if facts.prompt_tokens >= config.long_context_tokens:
        return TaskGuess("long_context", f"~{facts.prompt_tokens:,} prompt tokens >= {config.long_context_tokens:,}")
    user, system = text or _request_text(chat)
    guess = classify_text(user, system)
    if guess is not None:
        return guess
    if "tools" in facts.needs:
        return _TOOLS
    if facts.reasoning_asked:
        return _REASONING_EFFORT
    return _CHAT


def classify(chat: ChatRequest, headers: Mapping[str, str], facts: RequestFacts, config: ClassifierConfig) -> TaskGuess:
    forced = headers.get(TASK_HEADER)
    if forced:
        task = forced.strip().lower()
        if task not in TASKS:
            raise invalid_request(
                f"X-Gateway-Task must be one of {', '.join(TASKS)}; got '{echoed(forced)}'.", param="X-Gateway-Task"
            )
        return TaskGuess(task, "X-Gateway-Task header")
    if config.kind != "heuristic":
        plugged = _plugged(chat, facts, config.kind)
        if plugged is not None:
            return TaskGuess(plugged, f"classifier {config.kind}")
    return heuristic(chat, facts, config)


def _plugged(chat: ChatRequest, facts: RequestFacts, kind: str) -> str | None:
    try:
        task = load_classifier(kind)(chat, facts)
    except Exception:
        log.exception("classifier %s failed; using the heuristic", kind)
        return None
    if task is None:
        return None
    if task not in TASKS:
        log.warning("classifier %s returned unknown task %r; using the heuristic", kind, task)
        return None
    return task
