"""The bounds that keep any formula, from any user, cheap to check and to run."""

from __future__ import annotations

# The indicators' own bound on a period, one number for both.
from tradeos.strategies.indicators import MAX_PERIOD as MAX_PERIOD

MAX_SOURCE_CHARS = 20_000
MAX_STATEMENTS = 200
MAX_NODES = 5_000
# Nesting of parentheses and expressions inside one another.
MAX_DEPTH = 100
# Operators in one statement, counted before parsing (so the parser never recurses too deep).
MAX_OPERATORS = 500
MAX_ERRORS = 50

MAX_DEVIATIONS = 100.0
MAX_EXPONENT = 1_000.0
# Numbers written in a formula.
MAX_LITERAL = 1e15

MAX_BARS = 5_000_000
# Bars × series operations one evaluation may do; also bounds the memory it holds
# (about 8 bytes per cell).
MAX_CELLS = 200_000_000
# Indicator results kept between evaluations on the same candles (for parameter grids).
CACHE_BYTES = 256 * 1024 * 1024
