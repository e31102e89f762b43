"""Planning a candle back-fill (pure: no I/O).

The candle sync keeps a tracked instrument's stored bars of a timeframe complete over a window:
from MARKET_BACKFILL_DAYS ago up to the last closed bar. Given the stretches missing from stored
history, `wanted_bars` and `plan_fetches` plan the provider requests that fill them: [start,
end) ranges of open times on the timeframe's boundaries, at most `max_bars` bars each, never
reaching the open bar (it is not closed yet: stored now, it would be stored wrong). Gaps close
together share one request: a request costs more than the few stored bars it brings back again
(they are written as unchanged).

Some stretches a provider has no bars for at all: before a market was listed, older than the
history an exchange keeps, minutes without a trade. They would stay gaps for ever and be asked
for on every run; `confirmed_holes` names them after a sync, so the next runs can leave them out
for a while (`wanted_bars(..., skip=holes)`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from tradeos.market.timeframes import Timeframe


class Stretch(NamedTuple):
    """The bars with start <= open time < end."""

    start: datetime
    end: datetime


def ceil_time(moment: datetime, timeframe: Timeframe) -> datetime:
    """The first open time of `timeframe` at or after `moment`."""
    floor = timeframe.floor(moment)
    return floor if floor == moment else floor + timeframe.delta


def sync_window(timeframe: Timeframe, now: datetime, days: int) -> Stretch:
    """The bars a sync keeps: from the first whole bar `days` before `now` up to the bar open
    at `now`, excluded."""
    if days < 1:
        raise ValueError("a back-fill reaches at least one day back")
    return Stretch(ceil_time(now - timedelta(days=days), timeframe), timeframe.floor(now))


def recent_bars(window: Stretch, timeframe: Timeframe, count: int) -> Stretch:
    """The last `count` closed bars of `window` (`sync_window`): asked for again on every run,
    since a provider may still correct a bar just after it closed (late trades)."""
    return Stretch(max(window.start, window.end - timeframe.delta * count), window.end)


def merge(stretches: Iterable[tuple[datetime, datetime]]) -> list[Stretch]:
    """The union of `stretches`, oldest first; stretches that touch or overlap become one."""
    merged: list[Stretch] = []
    for start, end in sorted(stretches):
        if start >= end:
            continue
        if merged and start <= merged[-1].end:
            if end > merged[-1].end:
                merged[-1] = Stretch(merged[-1].start, end)
        else:
            merged.append(Stretch(start, end))
    return merged


def subtract(
    stretches: Iterable[tuple[datetime, datetime]], removed: Iterable[tuple[datetime, datetime]]
) -> list[Stretch]:
    """What of `stretches` lies outside every stretch of `removed`, oldest first."""
    cuts = merge(removed)
    remaining: list[Stretch] = []
    for start, end in merge(stretches):
        for cut_start, cut_end in cuts:
            if cut_end <= start or cut_start >= end:
                continue
            if cut_start > start:
                remaining.append(Stretch(start, cut_start))
            start = max(start, cut_end)
            if start >= end:
                break
        if start < end:
            remaining.append(Stretch(start, end))
    return remaining


def wanted_bars(
    gaps: Iterable[tuple[datetime, datetime]],
    timeframe: Timeframe,
    now: datetime,
    *,
    skip: Iterable[tuple[datetime, datetime]] = (),
) -> list[Stretch]:
    """The closed bars of `gaps` to fetch, less the stretches in `skip`: on `timeframe`
    boundaries, oldest first, nothing from the bar open at `now` on."""
    last = timeframe.floor(now)
    aligned = (
        Stretch(ceil_time(start, timeframe), min(ceil_time(end, timeframe), last))
        for start, end in gaps
    )
    return subtract(aligned, skip)


def plan_fetches(wanted: Iterable[Stretch], timeframe: Timeframe, max_bars: int) -> list[Stretch]:
    """The requests, oldest first, that fetch the `wanted` stretches (`wanted_bars`), at most
    `max_bars` bars each. Consecutive stretches share a request while it spans at most
    `max_bars` bars."""
    if max_bars < 1:
        raise ValueError("a request asks for at least one bar")
    span = timeframe.delta * max_bars
    requests: list[Stretch] = []
    current: Stretch | None = None
    for start, end in merge(wanted):
        if current is not None and end - current.start <= span:
            current = Stretch(current.start, end)
            continue
        if current is not None:
            requests.append(current)
        while end - start > span:
            requests.append(Stretch(start, start + span))
            start += span
        current = Stretch(start, end)
    if current is not None:
        requests.append(current)
    return requests


def confirmed_holes(
    wanted: Sequence[tuple[datetime, datetime]],
    received: Iterable[datetime],
    timeframe: Timeframe,
) -> list[Stretch]:
    """The stretches of `wanted` the provider sent no bar for although it sent a later one:
    it has none there. After the newest bar received nothing is concluded: the latest bars may
    simply not have reached the provider yet."""
    times = set(received)
    if not times:
        return []
    newest = max(times)
    step = timeframe.delta
    holes: list[Stretch] = []
    for start, end in merge(wanted):
        moment, stop = start, min(end, newest)
        while moment < stop:
            if moment not in times:
                if holes and holes[-1].end == moment:
                    holes[-1] = Stretch(holes[-1].start, moment + step)
                else:
                    holes.append(Stretch(moment, moment + step))
            moment += step
    return holes


def encode(stretches: Iterable[tuple[datetime, datetime]]) -> list[list[str]]:
    """Stretches as JSON can hold them (ISO times)."""
    return [[start.isoformat(), end.isoformat()] for start, end in stretches]


def decode(value: Any) -> list[Stretch]:
    """What `encode` wrote; anything else (an older or damaged value) is no stretches."""
    if not isinstance(value, list):
        return []
    stretches = []
    try:
        for start, end in value:
            first, last = datetime.fromisoformat(start), datetime.fromisoformat(end)
            if first.tzinfo is None or last.tzinfo is None:
                return []
            stretches.append(Stretch(first, last))
    except (TypeError, ValueError):
        return []
    return merge(stretches)
