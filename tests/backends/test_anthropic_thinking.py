"""Which thinking blocks a Messages body keeps on its way to an Anthropic backend."""

from __future__ import annotations

import copy

import pytest

from gateway.backends.anthropic_thinking import replayable

CALL = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}
RESULT = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}
SIGNED = {"type": "thinking", "thinking": "t", "signature": "EqQBCgIYAh"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy"}
ON = {"type": "enabled", "budget_tokens": 2048}


def body(*assistant_turns: list, thinking: dict | None = ON) -> dict:
    turns: list = [{"role": "user", "content": "Go."}]
    for content in assistant_turns:
        turns += [{"role": "assistant", "content": content}, RESULT]
    out = {"model": "claude-sonnet-4-5", "max_tokens": 4000, "messages": turns}
    return {**out, "thinking": thinking} if thinking else out


def test_a_conversation_anthropic_would_take_is_the_same_object():
    for payload in (
        body([SIGNED, CALL]),
        body([REDACTED, CALL]),
        body([{"type": "text", "text": "Hi."}], thinking=None),
        body([CALL], thinking=None),  # thinking off: nothing is asked of the last turn
        {"model": "m", "messages": "not a list"},
    ):
        assert replayable(payload) is payload


def test_unsigned_blocks_are_left_out_and_the_clients_body_is_untouched():
    unsigned = [{"type": "thinking", "thinking": "t", "signature": s} for s in ("", None)]
    unsigned.append({"type": "thinking", "thinking": "t"})
    for block in unsigned:
        earlier = [block, {"type": "text", "text": "Reading."}, CALL]
        payload = body(earlier, [SIGNED, CALL])
        before = copy.deepcopy(payload)
        out = replayable(payload)
        assert payload == before
        assert out["messages"][1] == {"role": "assistant", "content": earlier[1:]}
        assert out["messages"][3] == {"role": "assistant", "content": [SIGNED, CALL]}
        assert out["thinking"] == ON  # the last tool-use turn still starts with a thinking block


def test_thinking_goes_off_only_where_the_left_out_block_led_the_last_tool_use_turn():
    unsigned = {"type": "thinking", "thinking": "t", "signature": ""}
    out = replayable(body([SIGNED, CALL], [unsigned, CALL]))
    assert "thinking" not in out and out["messages"][3]["content"] == [CALL]
    # Adaptive thinking may skip thinking, and Anthropic takes such a turn back: kept on.
    adaptive = {"type": "adaptive"}
    out = replayable(body([SIGNED, CALL], [unsigned, CALL], thinking=adaptive))
    assert out["thinking"] == adaptive and out["messages"][3]["content"] == [CALL]
    # The client's own turns without a leading block (a loop's later calls without interleaved
    # thinking, a backend that did not reason) are Anthropic's to judge: sent as they came.
    for content in ([CALL], [{"type": "text", "text": "Reading."}, CALL]):
        payload = body([SIGNED, CALL], content)
        assert replayable(payload) is payload
    # A last assistant turn without a tool call keeps thinking on.
    out = replayable(body([unsigned, {"type": "text", "text": "Done."}]))
    assert out["thinking"] == ON and out["messages"][1]["content"] == [{"type": "text", "text": "Done."}]


def test_asked_again_after_each_refusal_with_less_and_never_for_another_400():
    from gateway.backends.anthropic_thinking import asked_again

    signature = b'{"type":"error","error":{"type":"invalid_request_error","message":"messages.1.content.0: Invalid `signature` in `thinking` block"}}'
    unthought = (
        b'{"type":"error","error":{"type":"invalid_request_error","message":"messages.3.content.0.type: Expected '
        b"`thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` "
        b'message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks)."}}'
    )
    other = b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}'
    payload = body([SIGNED, CALL], [SIGNED, CALL])
    again = asked_again(payload, signature)
    assert again is not None and [m["content"] for m in again["messages"][1::2]] == [[CALL], [CALL]]
    assert "thinking" not in again  # the last tool-use turn lost its leading block with the rest
    assert asked_again(again, signature) is None  # nothing left to take out: not asked a third time
    unled = body([SIGNED, CALL], [CALL])
    assert asked_again(unled, unthought) == {k: v for k, v in unled.items() if k != "thinking"}
    assert asked_again(asked_again(unled, unthought), unthought) is None
    assert asked_again(payload, other) is None and asked_again(unled, other) is None


def test_thinking_without_up_front_blocks_or_newer_than_the_gateway_passes_as_sent():
    # `between_tools` (Claude Sonnet 5.5's setting without up-front thinking): the model's own
    # tool-use turns start with the call, and Anthropic takes them back as they are; without
    # `thinking` that model would run adaptive, the thinking the client turned off. A type
    # newer than the gateway: its rule is unknown here, so the body is Anthropic's to judge.
    for thinking in ({"type": "between_tools"}, {"type": "a_future_kind"}):
        for content in ([CALL], [{"type": "text", "text": "Reading."}, CALL]):
            payload = body([SIGNED, CALL], content, thinking=thinking)
            assert replayable(payload) is payload


def test_asked_again_without_the_thinking_history_every_block_goes():
    from gateway.backends.anthropic_thinking import refused_signature

    payload = body([SIGNED, {"type": "text", "text": "Reading."}, CALL], [REDACTED, CALL])
    out = replayable(payload, signed=False)
    assert [m["content"] for m in out["messages"][1::2]] == [[{"type": "text", "text": "Reading."}, CALL], [CALL]]
    assert "thinking" not in out
    unthought = body([{"type": "text", "text": "Reading."}, CALL], thinking=None)
    assert replayable(unthought, signed=False) is unthought  # nothing to leave out: not asked again
    refusal = b'{"type":"error","error":{"type":"invalid_request_error","message":"messages.1.content.0: Invalid `signature` in `thinking` block"}}'
    assert refused_signature(refusal)
    assert not refused_signature(
        b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}'
    )
    # The other thinking 400 (a last tool-use turn without a block) is not a signature's.
    assert not refused_signature(
        b"messages.3.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When "
        b"`thinking` is enabled, a final `assistant` message must start with a thinking block"
    )


def test_a_turn_of_thinking_alone_goes_with_its_blocks_and_its_neighbours_join():
    # A chat backend that only reasoned (its max_tokens spent thinking) answered a thinking
    # block alone; left out, `content: []` would be Anthropic's 400 ("all messages must have
    # non-empty content except for the optional final assistant message"). The turn goes,
    # and the user turns either side of it are one.
    unsigned = {"type": "thinking", "thinking": "t", "signature": ""}
    payload = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4000,
        "messages": [
            {"role": "user", "content": "Go."},
            {"role": "assistant", "content": [unsigned]},
            {"role": "user", "content": [{"type": "text", "text": "Go on."}]},
        ],
    }
    before = copy.deepcopy(payload)
    assert replayable(payload)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Go."}, {"type": "text", "text": "Go on."}]}
    ]
    assert payload == before
    # Asked again without the thinking history, a signed block alone goes the same way.
    again = {"role": "user", "content": "Go on."}
    signed = {**payload, "messages": [payload["messages"][0], {"role": "assistant", "content": [SIGNED]}, again]}
    assert replayable(signed, signed=False)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Go."}, {"type": "text", "text": "Go on."}]}
    ]
    # A last assistant turn (a prefill) may be empty: it stays.
    prefill = {**payload, "messages": payload["messages"][:2]}
    assert replayable(prefill)["messages"][1] == {"role": "assistant", "content": []}


def test_thinking_off_takes_its_clear_thinking_edit_with_it():
    # Claude Code's `context_management` keeps thinking blocks with a `clear_thinking` edit,
    # which Anthropic refuses without thinking ("`clear_thinking_20251015` strategy requires
    # `thinking` to be enabled or adaptive"): it goes with `thinking`, the other edits stay.
    clear = {"type": "clear_thinking_20251015", "keep": "all"}
    tools = {"type": "clear_tool_uses_20250919"}
    for edits, left in (([clear, tools], {"edits": [tools]}), ([clear], None)):
        unsigned = {"type": "thinking", "thinking": "t", "signature": ""}
        payload = {**body([unsigned, CALL]), "context_management": {"edits": edits}}
        before = copy.deepcopy(payload)
        out = replayable(payload)
        assert "thinking" not in out
        assert out.get("context_management") == left
        assert payload == before
    # Thinking kept: the edit is kept.
    payload = {**body([SIGNED, CALL]), "context_management": {"edits": [clear]}}
    assert replayable(payload) is payload


def test_a_malformed_user_turn_beside_a_dropped_turn_is_left_for_anthropic_to_name():
    # The ingress stops reading at an Anthropic-only block (a document by URL), so the turns
    # after it reach a native backend unchecked. A user turn there without content, or with
    # content of another type, is not joined (a KeyError failed the attempt as the backend's
    # fault, on every candidate) nor mended into a valid turn: Anthropic's 400 names it.
    from gateway.protocol.errors import GatewayError
    from gateway.protocol.messages import messages_to_chat
    from gateway.protocol.messages_turns import ANTHROPIC_ONLY

    by_url = {"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}
    alone = {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""}]}
    for malformed in ({"role": "user"}, {"role": "user", "content": None}, {"role": "user", "content": 5}):
        after = {"role": "user", "content": "Go on."}
        payload = {"model": "claude-sonnet-4-5", "max_tokens": 4000, "messages": [by_url, alone, malformed, after]}
        with pytest.raises(GatewayError) as refused:
            messages_to_chat(payload)
        assert refused.value.code == ANTHROPIC_ONLY  # kept for a native backend
        before = copy.deepcopy(payload)
        assert replayable(payload)["messages"] == [by_url, malformed, after]
        assert payload == before


BOUND = (
    b'{"type":"error","error":{"type":"invalid_request_error","message":"messages.1.content.0: Invalid `signature` in '
    b"`thinking` block. The block is bound to a different conversation. Remove the block, or set "
    b'`thinking.block_binding.prefix_mismatch_behavior` to \\"drop_block\\"."}}'
)
DROP = {"prefix_mismatch_behavior": "drop_block"}


def test_a_block_bound_to_another_prefix_is_asked_again_with_drop_block_not_without_blocks():
    from gateway.backends.anthropic_thinking import asked_again, refusal_reason, refused_binding, refused_signature

    assert refused_binding(BOUND) and refused_signature(BOUND)  # a signature refusal too, answered differently
    assert refusal_reason(BOUND) == "bound to a different conversation"
    for thinking in (ON, {"type": "adaptive"}):
        payload = body([SIGNED, CALL], [SIGNED, CALL], thinking=thinking)
        again = asked_again(payload, BOUND)
        assert again == {**payload, "thinking": {**thinking, "block_binding": DROP}}
        assert again["messages"] is payload["messages"] and payload["thinking"] == thinking  # the client's, untouched
    # The rest of a `block_binding` the client sent is kept beside the behaviour.
    payload = body([SIGNED, CALL], thinking={**ON, "block_binding": {"a_future_control": 1}})
    assert asked_again(payload, BOUND)["thinking"]["block_binding"] == {"a_future_control": 1, **DROP}
    # A behaviour the client chose is its answer: the 400 is relayed.
    for chosen in ("error", "drop_block"):
        assert (
            asked_again(
                body([SIGNED, CALL], thinking={**ON, "block_binding": {"prefix_mismatch_behavior": chosen}}), BOUND
            )
            is None
        )
    # No thinking asked: these models think adaptively by default, so adaptive with drop_block.
    unasked = body([SIGNED, {"type": "text", "text": "Done."}], thinking=None)
    assert asked_again(unasked, BOUND) == {**unasked, "thinking": {"type": "adaptive", "block_binding": DROP}}
    # Thinking disabled takes no `block_binding`: the blocks go, as for another model's signature.
    off = body([SIGNED, {"type": "text", "text": "Done."}], thinking={"type": "disabled"})
    assert asked_again(off, BOUND)["messages"][1]["content"] == [{"type": "text", "text": "Done."}]


def test_the_binding_beta_joins_the_clients_betas_once():
    from gateway.backends.anthropic_thinking import BINDING_BETA, with_binding_beta

    assert with_binding_beta({"x-request-id": "r"}) == {"x-request-id": "r", "anthropic-beta": BINDING_BETA}
    assert with_binding_beta({"anthropic-beta": "a-1"}) == {"anthropic-beta": f"a-1,{BINDING_BETA}"}
    headers = {"anthropic-beta": f"a-1, {BINDING_BETA}"}
    assert with_binding_beta(headers) is headers
    # The call's header takes the place of the backend's configured one: that one's betas join it.
    assert with_binding_beta({}, "context-1m") == {"anthropic-beta": f"context-1m,{BINDING_BETA}"}
    assert with_binding_beta({}, BINDING_BETA) == {"anthropic-beta": BINDING_BETA}
    assert with_binding_beta({"anthropic-beta": "a-1"}, "context-1m") == {"anthropic-beta": f"a-1,{BINDING_BETA}"}


def test_refused_signatures_are_remembered_by_where_the_refusal_says_within_a_bound():
    from gateway.backends.anthropic_thinking import UnboundSignatures

    unbound = UnboundSignatures(limit=2)
    assert not unbound
    stale = {"type": "thinking", "thinking": "t", "signature": "sig-stale"}
    payload = body([stale, CALL], [SIGNED, CALL])
    unbound.remember(payload, BOUND)  # messages.1.content.0: the stale block
    assert unbound and unbound.carried_by(payload) and unbound.carried_by(body([CALL], [stale, CALL]))
    assert not unbound.carried_by(body([SIGNED, CALL]))
    # A place that holds no thinking block (or none at all) is nothing to remember.
    for elsewhere in (
        b"messages.0.content.0: bound to a different conversation",
        b"messages.9.content.3: bound",
        b"no place",
    ):
        unbound.remember(payload, elsewhere)
    assert unbound.carried_by(payload) and not unbound.carried_by(body([SIGNED, CALL]))
    # Redacted blocks are checked alike (by their data); past the limit the signature seen
    # longest ago goes, a conversation still sending its block back keeping its place.
    unbound.remember(body([REDACTED, CALL]), BOUND)
    assert unbound.carried_by(payload)  # seen again: now the most recent
    unbound.remember(body([SIGNED, CALL]), BOUND)
    assert unbound.carried_by(payload) and unbound.carried_by(body([SIGNED, CALL]))
    assert not unbound.carried_by(body([REDACTED, CALL]))  # seen longest ago, forgotten
