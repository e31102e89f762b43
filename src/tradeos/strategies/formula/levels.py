"""How a stop-loss, take-profit or trailing-stop value turns into a price distance."""

from __future__ import annotations

import math


def level_distance(value: float, entry_price: float) -> float | None:
    """The price distance from the entry that `value` means, or None for no level.

    `0 < value < 1` is a fraction of the entry price; `value >= 1` is already a distance in
    price units; NaN, infinite or `value <= 0` sets no level.
    """
    if not math.isfinite(value) or value <= 0:
        return None
    if value < 1:
        return value * entry_price
    return value
