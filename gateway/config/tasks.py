"""The task vocabulary, and the import of a pluggable classifier: what the config checks
about classification.

The names live here, below both `config.schema` (a route's `tasks:` keys) and
`routing.classify` (what a request is guessed to be), so the two read one list and the
loader never reaches up into routing. The classifier itself, the heuristic and how its
answer is used, stays in `routing.classify`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal, get_args

Task = Literal["code", "math", "reasoning", "translation", "long_context", "tool_use", "vision", "chat"]
TASKS: tuple[str, ...] = get_args(Task)  # for checks and for messages that list the task names


@lru_cache(maxsize=16)
def load_classifier(kind: str) -> Callable[..., str | None]:
    """Import `module:callable` (`gateway.classifier.kind`) once: the loader calls it to
    report a bad name as a config problem, `routing.classify` to call the classifier as
    callable(chat_request, request_facts) -> task name or None."""
    module_name, sep, attr = kind.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'classifier kind must be "heuristic" or "module:callable", got {kind!r}')
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
    # Only callability can be checked here; the signature is the plugin's promise, and
    # `routing.classify` treats anything but a task name as no answer.
    classifier: Callable[..., str | None] = target
    return classifier
