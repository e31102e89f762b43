"""Server-side resampling of candles to a coarser timeframe (pure: no I/O).

A coarse bar gathers the fine bars whose open times fall in its UTC period (weeks start on
Monday): open of the first, highest high, lowest low, close of the last, summed volume. A coarse
bar whose fine bars do not cover its whole period is partial: the current, unfinished bar, or
one with a gap in the stored history.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from tradeos.market.providers.base import Bar
from tradeos.market.timeframes import Timeframe


@dataclass(frozen=True)
class ResampledBar:
    bar: Bar
    partial: bool


def resample(bars: Iterable[Bar], source: Timeframe, target: Timeframe) -> Iterator[ResampledBar]:
    """`bars` (of timeframe `source`, oldest first) as bars of `target`."""
    if not source.divides(target):
        raise ValueError(f"{source} bars cannot be resampled to {target}")
    expected = target.seconds // source.seconds
    group: list[Bar] = []
    period: datetime | None = None
    for bar in bars:
        opens = target.floor(bar.open_time)
        if period is not None and opens != period:
            yield _combine(period, group, expected)
            group = []
        if period is not None and opens < period:
            raise ValueError("bars must be sorted by open time, oldest first")
        period = opens
        group.append(bar)
    if period is not None:
        yield _combine(period, group, expected)


def _combine(period: datetime, group: list[Bar], expected: int) -> ResampledBar:
    return ResampledBar(
        Bar(
            open_time=period,
            open=group[0].open,
            high=max(bar.high for bar in group),
            low=min(bar.low for bar in group),
            close=group[-1].close,
            volume=sum((bar.volume for bar in group), start=group[0].volume * 0),
        ),
        partial=len(group) < expected,
    )
