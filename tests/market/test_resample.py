"""Resampling stored bars to a coarser timeframe (pure): UTC boundaries, weeks from Monday,
exact aggregation, and `partial` for the bar still forming only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tradeos.market.providers.base import Bar
from tradeos.market.resample import ResampledBar, resample
from tradeos.market.timeframes import Timeframe

LONG_AFTER = datetime(2030, 1, 1, tzinfo=UTC)  # every period below has ended by then


def bars(
    first: datetime, step: timedelta, count: int, *, skip: frozenset[int] = frozenset()
) -> list[Bar]:
    return [
        Bar(
            first + step * n,
            Decimal(100 + n),
            Decimal(102 + n),
            Decimal(99 + n),
            Decimal(101 + n),
            Decimal(1),
        )
        for n in range(count)
        if n not in skip
    ]


def times(resampled: list[ResampledBar]) -> list[datetime]:
    return [item.bar.open_time for item in resampled]


def test_daily_bars_make_weeks_that_open_on_mondays() -> None:
    # 2024-01-03 is a Wednesday; 40 days run into February.
    daily = bars(datetime(2024, 1, 3, tzinfo=UTC), timedelta(days=1), 40)

    weeks = list(resample(daily, Timeframe.D1, Timeframe.W1, now=LONG_AFTER))

    # Wed-Sun of the first week, then five whole weeks.
    assert times(weeks) == [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(weeks=n) for n in range(6)]
    assert all(t.weekday() == 0 and t.hour == 0 for t in times(weeks))
    assert [item.bar.volume for item in weeks] == [Decimal(5)] + [Decimal(7)] * 5
    assert weeks[0].bar.open == daily[0].open  # the week's first stored day


def test_hours_make_four_hour_bars_and_days_on_utc_boundaries() -> None:
    # From 02:00 UTC on 2026-03-09: the first 4h bar (00:00) and day have only some hours.
    hourly = bars(datetime(2026, 3, 9, 2, tzinfo=UTC), timedelta(hours=1), 48)

    four = list(resample(hourly, Timeframe.H1, Timeframe.H4, now=LONG_AFTER))
    days = list(resample(hourly, Timeframe.H1, Timeframe.D1, now=LONG_AFTER))

    assert times(four) == [
        datetime(2026, 3, 9, tzinfo=UTC) + timedelta(hours=4 * n) for n in range(13)
    ]
    assert [item.bar.volume for item in four] == [Decimal(2)] + [Decimal(4)] * 11 + [Decimal(2)]
    assert times(days) == [datetime(2026, 3, d, tzinfo=UTC) for d in (9, 10, 11)]
    assert [item.bar.volume for item in days] == [Decimal(22), Decimal(24), Decimal(2)]


def test_only_the_bar_still_forming_is_partial() -> None:
    # Hours up to 10:xx; read at 10:20: the 10:00-11:00 bar is still forming.
    now = datetime(2026, 3, 9, 10, 20, tzinfo=UTC)
    minutes = bars(datetime(2026, 3, 9, 7, 30, tzinfo=UTC), timedelta(minutes=1), 171)

    hours = list(resample(minutes, Timeframe.M1, Timeframe.H1, now=now))

    assert times(hours)[-1] == datetime(2026, 3, 9, 10, tzinfo=UTC)
    # 07:00 has half its minutes (history starts at 07:30): its period has ended, so it is
    # final, not partial. Only the current hour is.
    assert [item.partial for item in hours] == [False, False, False, True]
    # The moment a period ends, its bar is final.
    at_the_hour = list(
        resample(minutes, Timeframe.M1, Timeframe.H1, now=datetime(2026, 3, 9, 11, tzinfo=UTC))
    )
    assert not any(item.partial for item in at_the_hour)


def test_weeks_of_weekday_bars_are_not_partial_once_the_week_ended() -> None:
    # Daily equity bars, Monday to Friday: a closed market on weekends is not a forming bar.
    monday = datetime(2024, 1, 1, tzinfo=UTC)
    weekdays = bars(monday, timedelta(days=1), 21, skip=frozenset({5, 6, 12, 13, 19, 20}))
    saturday_of_week_3 = monday + timedelta(weeks=2, days=5)

    weeks = list(resample(weekdays, Timeframe.D1, Timeframe.W1, now=saturday_of_week_3))

    assert [item.bar.volume for item in weeks] == [Decimal(5)] * 3
    assert [item.partial for item in weeks] == [False, False, True]


def test_a_bar_aggregates_exactly() -> None:
    start = datetime(2026, 3, 9, 12, tzinfo=UTC)
    prices = [
        ("0.1", "0.35", "0.05", "0.2", "0.1"),
        ("0.2", "0.7", "0.2", "0.3", "0.2"),
        ("0.3", "0.4", "0.01", "0.15", "0.000000000000000001"),
    ]
    fine = [
        Bar(start + timedelta(minutes=5 * n), *(Decimal(p) for p in row))
        for n, row in enumerate(prices)
    ]

    (bar,) = list(resample(fine, Timeframe.M5, Timeframe.M15, now=LONG_AFTER))

    assert bar == ResampledBar(
        Bar(
            start,
            Decimal("0.1"),
            Decimal("0.7"),
            Decimal("0.01"),
            Decimal("0.15"),
            Decimal("0.300000000000000001"),
        ),
        partial=False,
    )
    parts = (bar.bar.open, bar.bar.high, bar.bar.low, bar.bar.close, bar.bar.volume)
    assert all(isinstance(value, Decimal) for value in parts)


@pytest.mark.parametrize(
    "order",
    [
        [0, 2, 1],  # within one coarse period
        [60, 0],  # across periods
        [0, 0],  # the same bar twice
    ],
)
def test_unsorted_input_is_refused(order: list[int]) -> None:
    start = datetime(2026, 3, 9, 12, tzinfo=UTC)
    fine = [bars(start + timedelta(minutes=m), timedelta(minutes=1), 1)[0] for m in order]

    with pytest.raises(ValueError, match="sorted"):
        list(resample(fine, Timeframe.M1, Timeframe.H1, now=LONG_AFTER))


def test_a_timeframe_that_does_not_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be resampled"):
        list(resample([], Timeframe.H4, Timeframe.H1, now=LONG_AFTER))
