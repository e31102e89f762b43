"""Server-side resampling of candles to a coarser timeframe (pure: no I/O).

A coarse bar gathers the fine bars whose open times fall in its UTC period (weeks start on
Monday): open of the first, highest high, lowest low, close of the last, summed volume.

A coarse bar is partial while it is still forming: its period has not ended at `now`, the time
of the read. A period that has ended is final even when fine bars are missing from it (a market
closed for the weekend, a holiday, a gap in stored history): waiting will not complete it, so
it is not marked partial.
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


def is_forming(open_time: datetime, timeframe: Timeframe, now: datetime) -> bool:
    """Whether the bar of `timeframe` opening at `open_time` is still forming at `now`."""
    return open_time + timeframe.delta > now


def resample(
    bars: Iterable[Bar], source: Timeframe, target: Timeframe, *, now: datetime
) -> Iterator[ResampledBar]:
    """`bars` (of timeframe `source`, oldest first, each open time once) as bars of `target`;
    a bar whose period has not ended at `now` is partial. Unsorted input is a ValueError."""
    if not source.divides(target):
        raise ValueError(f"{source} bars cannot be resampled to {target}")
    group: list[Bar] = []
    period: datetime | None = None
    for bar in bars:
        if group and bar.open_time <= group[-1].open_time:
            raise ValueError("bars must be sorted by open time, oldest first, without repeats")
        opens = target.floor(bar.open_time)
        if period is not None and opens != period:
            yield _combine(period, group, target, now)
            group = []
        period = opens
        group.append(bar)
    if period is not None:
        yield _combine(period, group, target, now)


def _combine(period: datetime, group: list[Bar], target: Timeframe, now: datetime) -> ResampledBar:
    return ResampledBar(
        Bar(
            open_time=period,
            open=group[0].open,
            high=max(bar.high for bar in group),
            low=min(bar.low for bar in group),
            close=group[-1].close,
            volume=sum((bar.volume for bar in group), start=group[0].volume * 0),
        ),
        partial=is_forming(period, target, now),
    )
