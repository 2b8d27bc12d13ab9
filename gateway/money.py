"""How a USD amount reads in text: error messages, CLI output, routing explanations.

One rule everywhere a person reads dollars: `$`, plain decimals (never an exponent, which
`:g` and `repr` give below 1e-4: `$5e-05`), thousands separated, at least the cents and at
most nine places (a nano-dollar, the ledger's unit), trailing zeros past the cents dropped:
`$0.00005`, `$12.50`, `$1,000,000,000.00`. JSON bodies and headers keep numbers as numbers.
"""

from __future__ import annotations

import math
from decimal import Decimal

PLACES = 9  # nano-dollars: what the ledger and the budget counters hold


def usd(amount: float) -> str:
    """`amount` dollars as text: `$0.00005`, `$12.50`, `-$3.25`."""
    if not math.isfinite(amount):
        return f"${amount}"  # never a stored amount (bounded on the way in), but never an error here
    # The float's shortest decimal (`repr`), rounded to nano-dollars: no binary noise (0.1 + 0.2).
    text = f"{Decimal(repr(float(amount))):,.{PLACES}f}".rstrip("0")
    whole, fraction = text.split(".")
    sign = "-" if whole.startswith("-") and (whole != "-0" or fraction) else ""
    return f"{sign}${whole.lstrip('-')}.{fraction:0<2}"


class Dollars(float):
    """An amount that formats as `usd` does, when formatted: a routing reason's argument is
    formatted only when someone reads the reason (`gateway.routing.reasons`), so the request
    path pays for a float, not for the text."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return usd(self)
