"""Removing credentials from upstream text before it reaches a client or a log.

Upstreams quote what they were sent: an error body may hold `Bearer sk-...`, or the key
without its prefix (`token=SECRET-...`), or a fragment of it. A `Redactor` is built once
per config snapshot from every configured backend key (`ConfigSnapshot.redactor`) and applied
wherever upstream text is relayed: error messages, stream error events, log lines.

What it removes:
- every configured key of at least `MIN_KEY` characters, wherever it occurs;
- every run of text that is a substring of at least `WINDOW` characters of a configured
  key (a key cut short, or quoted without its `sk-` prefix): each window of `WINDOW`
  characters of a key is searched for, and the union of the matches is replaced, so no
  piece of a key of `WINDOW` characters or more survives;
- anything shaped like a credential even if no backend is configured with it
  (`sk-...`, `Bearer ...`, `api_key=...`): upstream text may quote other secrets.

Error paths only: nothing here runs for an answer that succeeds. Callers cap the text
they redact (an error message, one event), since the cost grows with its length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

WINDOW = 12  # fragments of a key this long or longer are removed
MIN_KEY = 8  # keys shorter than WINDOW but at least this long are removed whole
MASK = "[redacted]"

# Credential-shaped text, configured or not.
_SHAPED = re.compile(
    r"\b(?:sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_\-*.]{6,}"
    r"|\b(?:api[-_]?key|access[-_]?token|token|secret|password)[\"']?\s*[=:]\s*[\"']?[A-Za-z0-9_\-.~+/]{8,}"
    r"|\bBearer\s+[A-Za-z0-9_\-.~+/=]{8,}",
    re.IGNORECASE,
)


class Redactor:
    """Removes the given secrets (and credential-shaped text) from strings and bytes."""

    __slots__ = ("_keys", "_whole")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        keys = sorted({s for s in secrets if s and len(s) >= MIN_KEY}, key=len, reverse=True)
        # Per key: its windows, and probes that any quoted fragment must contain (the key's
        # pieces of WINDOW/2 characters at offsets that are multiples of WINDOW/2: a run of
        # WINDOW characters always covers one). Text without a probe is left at once.
        half = WINDOW // 2
        self._keys = tuple(
            (
                tuple(k[i : i + half] for i in range(0, len(k) - half + 1, half)),
                tuple(dict.fromkeys(k[i : i + WINDOW] for i in range(len(k) - WINDOW + 1))),
            )
            for k in keys
            if len(k) >= WINDOW
        )
        self._whole = tuple(k for k in keys if len(k) < WINDOW)

    def text(self, text: str) -> str:
        """`text` with every secret (and fragment of one) replaced by `[redacted]`."""
        if self._keys:
            text = self._mask_fragments(text)
        for key in self._whole:
            if key in text:
                text = text.replace(key, MASK)
        return _SHAPED.sub(MASK, text)

    def data(self, data: bytes) -> bytes:
        """The same for bytes (an SSE event, an error body); undecodable bytes are kept."""
        return self.text(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def _mask_fragments(self, text: str) -> str:
        # str.find per window rather than one regex of all windows: with six 43-character
        # keys, 1.7 ms instead of 27 ms on 64 KB of text (and callers cap what they redact).
        spans: list[tuple[int, int]] = []
        for probes, windows in self._keys:
            if not any(p in text for p in probes):
                continue
            for window in windows:
                at = text.find(window)
                while at >= 0:
                    spans.append((at, at + WINDOW))
                    at = text.find(window, at + 1)
        if not spans:
            return text
        spans.sort()
        out: list[str] = []
        at = 0
        for start, end in spans:
            if start > at or not out:
                out.append(text[at:start])
                out.append(MASK)
            at = max(at, end)
        out.append(text[at:])
        return "".join(out)
