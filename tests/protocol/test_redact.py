"""Redactor: every configured key, and every fragment of 12+ characters of one, removed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.schema import GatewayConfig
from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.redact import MASK, WINDOW, Redactor

KEY = "sk-live-0123456789abcdefghijklmnopqrstuv"
OTHER = "SECRET-zyxwvutsrqponmlkjihgf"


def test_the_whole_key_and_the_key_without_its_prefix_are_removed():
    r = Redactor([KEY, OTHER])
    assert r.text(f"got {KEY} and token={KEY[3:]}.") == "got [redacted] and token=[redacted]."
    # A key with no credential-looking prefix is found all the same (issue 11.10).
    assert r.text(f"token={OTHER} was rejected") == "token=[redacted] was rejected"
    assert r.text(f"token={OTHER[7:]}") == "token=[redacted]"


def test_fragments_of_twelve_characters_are_removed_and_shorter_ones_kept():
    r = Redactor([KEY])
    twelve, eleven = KEY[10 : 10 + WINDOW], KEY[10 : 10 + WINDOW - 1]
    assert r.text(f"x{twelve}y") == "x[redacted]y"
    assert r.text(f"x{eleven}y") == f"x{eleven}y"


def test_overlapping_and_repeated_fragments_leave_nothing_of_the_key():
    r = Redactor([KEY])
    text = f"{KEY[5:30]}{KEY[20:]} | {KEY[-13:]} | {KEY[:12]}"
    out = r.text(text)
    assert out == "[redacted] | [redacted] | [redacted]"


def test_short_keys_are_removed_whole_and_tiny_ones_ignored():
    r = Redactor(["shortkey9", "EMPTY", None, ""])
    assert r.text("key shortkey9 and EMPTY") == "key [redacted] and EMPTY"


@pytest.mark.parametrize(
    "text",
    ["Authorization: Bearer abcdefgh12345678", "key sk-unknown-123456789", "api_key=abcdefgh123"],
)
def test_credential_shaped_text_is_removed_even_if_not_configured(text):
    assert "[redacted]" in Redactor([]).text(text)
    assert not any(secret in Redactor([]).text(text) for secret in ("abcdefgh1234", "unknown-1234"))


def test_bytes_that_are_not_utf8_survive():
    r = Redactor([KEY])
    assert r.data(b"\xff\xfe " + KEY.encode() + b" \x80") == b"\xff\xfe [redacted] \x80"


@settings(max_examples=300, deadline=None)
@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    start=st.integers(min_value=0, max_value=len(KEY) - WINDOW),
    length=st.integers(min_value=WINDOW, max_value=len(KEY)),
)
def test_no_fragment_of_twelve_characters_survives(before, after, start, length):
    fragment = KEY[start : start + length]
    out = Redactor([KEY]).text(before + fragment + after)
    assert MASK in out
    assert not any(KEY[i : i + WINDOW] in out for i in range(len(KEY) - WINDOW + 1))


def test_the_redactor_is_built_once_per_snapshot():
    config = GatewayConfig.model_validate(
        {
            "backends": {
                "a": {"type": "openai", "base_url": "http://a/v1", "api_key": KEY, "models": {"m/a": {}}},
                "b": {
                    "type": "openai",
                    "base_url": "http://b/v1",
                    "api_key": OTHER,
                    "enabled": False,
                    "models": {"m/b": {}},
                },
            }
        }
    )
    snapshot = ConfigSnapshot.build(config)
    redactor = snapshot.redactor
    assert snapshot.redactor is redactor
    # Every configured key, a disabled backend's too.
    assert redactor.text(f"{KEY} {OTHER}") == "[redacted] [redacted]"
    assert ConfigSnapshot.build(config).redactor is not redactor
