"""The tax rule, with no I/O: tax per line from the ship-to country and
region and the line's tax category, in basis points (825 = 8.25%).

Money is an integer count of minor units (cents), never a float. Each
line's tax is `amount * rate_bp / 10000` rounded half up (away from zero)
to a whole minor unit, on its own; the checkout's tax is the sum of its
lines'. A region's own rate wins over the country's default (the rate with
an empty region). A category with neither is `rejected` with
`no_tax_rate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import contract
from contract import I64_MAX, I64_MIN, CalculateTax, Line

NO_TAX_RATE = "no_tax_rate"
INVALID_COMMAND = "invalid_command"

# 100%: no rate is above it.
MAX_RATE_BP = 10_000

# What Rust's `str::trim` takes off (Unicode White_Space), which is not
# quite what Python's `str.strip()` does.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def apply_basis_points(amount_cents: int, rate_bp: int) -> int:
    """`amount * rate_bp / 10000`, rounded half up (away from zero for a
    negative product), in integers only."""
    product = amount_cents * rate_bp
    if product >= 0:
        rounded = (product + 5_000) // 10_000
    else:
        rounded = -((-product + 5_000) // 10_000)
    return rounded if I64_MIN <= rounded <= I64_MAX else I64_MAX


class Destination:
    """Where rates apply, normalized as they are stored: trimmed, upper case."""

    def __init__(self, country: str, region: str) -> None:
        self.country = country.strip(WHITESPACE).upper()
        self.region = region.strip(WHITESPACE).upper()

    def __str__(self) -> str:
        return f"{self.country}-{self.region}" if self.region else self.country


def categories(request: CalculateTax) -> list[str]:
    """The request's tax categories, each once, sorted."""
    return sorted({line.tax_category for line in request.lines})


def invalid_amounts(lines: Iterable[Line]) -> str | None:
    """Amounts that no checkout has: a negative price, or a total that does
    not fit in 64 bits."""
    total = 0
    for line in lines:
        if line.unit_price_cents < 0:
            return f"{line.sku}: unit price {line.unit_price_cents} is negative"
        total += line.amount_cents
        if total > I64_MAX or line.amount_cents > I64_MAX:
            return f"{line.sku}: the amounts are too large"
    return None


def pick_rates(rows: Iterable[tuple[str, str, int]]) -> dict[str, int]:
    """Rate per category from `(region, category, rate_bp)` rows of one
    country: the region's own rate, else the country default (region '')."""
    rates: dict[str, int] = {}
    for region, category, rate_bp in rows:
        if region == "":
            rates.setdefault(category, rate_bp)
        else:
            rates[category] = rate_bp
    return rates


def outcome(request: CalculateTax, rates: Mapping[str, int]) -> dict:
    """The reply payload for `request`, given the rate of every category that
    has one at its destination."""
    problem = invalid_amounts(request.lines)
    if problem is not None:
        return contract.rejected(INVALID_COMMAND, problem)
    destination = Destination(request.country, request.region)
    missing = [f"`{c}`" for c in categories(request) if c not in rates]
    if missing:
        fallback = (
            f" (nor a default for {destination.country})" if destination.region else ""
        )
        return contract.rejected(
            NO_TAX_RATE,
            f"no tax rate for category {', '.join(missing)} in {destination}{fallback}",
        )
    lines = [
        {
            "sku": line.sku,
            "rate_bp": rates[line.tax_category],
            "tax_cents": apply_basis_points(line.amount_cents, rates[line.tax_category]),
        }
        for line in request.lines
    ]
    return contract.ok(
        {"lines": lines, "tax_cents": sum(line["tax_cents"] for line in lines)}
    )
