"""`CallOutcome`'s bill: what the client's key pays for a call, each token it received once,
at the prices of the attempt that delivered it (issue 12)."""

from __future__ import annotations

import pytest

from gateway.config.schema import ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.outcome import CallOutcome
from gateway.proxy.usage import Usage

CHEAP = Offer("m/cheap", "a", "cheap", ModelOffer(input_price=1.0, output_price=2.0))
DEAR = Offer("m/dear", "b", "dear", ModelOffer(input_price=3.0, output_price=4.0))


def test_a_call_never_continued_is_billed_its_own_usage():
    outcome = CallOutcome("r", "auto", True, offer=CHEAP, usage=Usage(10, 60))
    outcome.bill()
    assert outcome.billed_usage is outcome.usage
    assert outcome.cost_usd == pytest.approx((10 * 1.0 + 60 * 2.0) / 1e6)


def test_a_continued_call_pays_the_first_prompt_and_every_delivered_token_once():
    outcome = CallOutcome("r", "auto", True, offer=CHEAP)
    delivered = Usage(10, 40, estimated=True)
    outcome.carry(delivered, CHEAP)
    # The continuation reports its own prompt (the original plus the 40-token prefill): the
    # operator's cost, not the client's.
    outcome.offer, outcome.usage = DEAR, Usage(52, 20)
    outcome.bill()
    billed = outcome.billed_usage
    assert billed is not None
    assert (billed.prompt_tokens, billed.completion_tokens, billed.estimated) == (10, 60, True)
    assert outcome.cost_usd == pytest.approx((10 * 1.0 + 40 * 2.0 + 20 * 4.0) / 1e6)


def test_a_continuation_that_never_answered_bills_what_was_delivered():
    outcome = CallOutcome("r", "auto", True, offer=CHEAP)
    delivered = Usage(10, 40, estimated=True)
    outcome.carry(delivered, CHEAP)
    outcome.bill()
    assert outcome.billed_usage is delivered
    assert outcome.cost_usd == pytest.approx((10 * 1.0 + 40 * 2.0) / 1e6)


def test_two_breaks_pay_the_prompt_once():
    outcome = CallOutcome("r", "auto", True, offer=CHEAP)
    outcome.carry(Usage(10, 40), CHEAP)
    outcome.carry(Usage(55, 5), CHEAP)  # the second's prompt held the prefill: not the client's
    outcome.offer, outcome.usage = DEAR, Usage(60, 15)
    outcome.bill()
    billed = outcome.billed_usage
    assert billed is not None and (billed.prompt_tokens, billed.completion_tokens) == (10, 60)
    assert outcome.cost_usd == pytest.approx((10 * 1.0 + 45 * 2.0 + 15 * 4.0) / 1e6)
