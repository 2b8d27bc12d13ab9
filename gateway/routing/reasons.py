"""Why routing judged a candidate as it did, formatted only when someone reads it.

Every request judges every candidate (a filter verdict each, a score each), but only an
explanation or the no-candidate error reads the words. So a judgement keeps its format
string and arguments, and `Reason.text` formats them on demand. `Verdict` (one filter's
pass/fail) and `Score` (a ranking value) are the two kinds; both live here, below the
filters, the circuit admissions and the ranking that build them.
"""

from __future__ import annotations


class Reason:
    """A format string and its arguments, formatted when read."""

    __slots__ = ("_args", "_text")

    def __init__(self, text: str, *args: object) -> None:
        self._text = text
        self._args = args

    @property
    def text(self) -> str:
        return self._text.format(*self._args) if self._args else self._text


class Verdict(Reason):
    """One filter's judgement of one candidate."""

    __slots__ = ("filter", "passed")

    def __init__(self, filter: str, passed: bool, text: str, *args: object) -> None:
        self.filter = filter
        self.passed = passed
        self._text = text
        self._args = args

    @property
    def reason(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Verdict({self.filter!r}, {self.passed}, {self.text!r})"


class Score(Reason):
    """A candidate's score (lower ranks first) and why."""

    __slots__ = ("explored", "value")

    def __init__(self, value: float, text: str, *args: object, explored: bool = False) -> None:
        self.value = value
        self.explored = explored  # moved first by exploration
        self._text = text
        self._args = args

    @property
    def detail(self) -> str:
        text = self.text
        return text + ", picked by exploration" if self.explored else text

    def __repr__(self) -> str:
        return f"Score({self.value!r}, {self.detail!r})"
