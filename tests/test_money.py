"""The one way messages write dollars (gateway.money.usd)."""

from __future__ import annotations

import pytest

from gateway.money import Dollars, usd


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (5e-05, "$0.00005"),  # was `$5e-05` in the budget refusal
        (4e-05, "$0.00004"),
        (12.5, "$12.50"),
        (12, "$12.00"),
        (0.0, "$0.00"),
        (0.075, "$0.075"),  # a price per 1M that `:.2f` showed as $0.07
        (0.1 + 0.2, "$0.30"),  # the float's noise is past a nano-dollar
        (1.5e-9, "$0.000000002"),  # nine places at most: the ledger counts nano-dollars
        (1e-12, "$0.00"),
        (123456789.123, "$123,456,789.123"),  # no binary noise in the last places either
        (1e9, "$1,000,000,000.00"),
        (-3.25, "-$3.25"),
        (-1e-12, "$0.00"),  # not "-$0.00"
    ],
)
def test_usd_is_plain_decimal_dollars_with_at_least_the_cents(amount, text):
    assert usd(amount) == text


def test_an_amount_formats_as_dollars_only_when_formatted():
    """A routing reason keeps its arguments and formats them when read: the amount is a float
    until then (what the request path pays), and reads as `usd` after."""
    amount = Dollars(5e-05)
    assert amount == 5e-05 and isinstance(amount, float)
    template = "{} over {}"  # as a reason is formatted
    assert template.format(amount, Dollars(3)) == "$0.00005 over $3.00"
