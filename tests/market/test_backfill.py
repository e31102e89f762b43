"""Back-fill planning (pure): the window a sync keeps, the requests that fill stored history's
gaps, and the stretches a provider has no bars for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tradeos.market.backfill import (
    Stretch,
    ceil_time,
    confirmed_holes,
    decode,
    encode,
    merge,
    plan_fetches,
    recent_bars,
    subtract,
    sync_window,
    wanted_bars,
)
from tradeos.market.timeframes import Timeframe

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
M = timedelta(minutes=1)
H = timedelta(hours=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_times_round_up_to_the_next_boundary() -> None:
    assert ceil_time(at(0), Timeframe.M1) == at(0)
    assert ceil_time(at(0.5), Timeframe.M1) == at(1)
    assert ceil_time(at(61), Timeframe.H1) == at(120)
    assert ceil_time(datetime(2026, 3, 4, tzinfo=UTC), Timeframe.W1) == datetime(
        2026, 3, 9, tzinfo=UTC
    )


def test_the_window_ends_where_the_open_bar_starts() -> None:
    now = at(90.5)  # 01:30:30
    window = sync_window(Timeframe.M1, now, 1)
    assert window == Stretch(at(90.5 - 1440 + 0.5), at(90))
    assert sync_window(Timeframe.H1, now, 1) == Stretch(at(120 - 1440), at(60))
    with pytest.raises(ValueError, match="at least one day"):
        sync_window(Timeframe.M1, now, 0)


def test_the_newest_closed_bars_are_rechecked_within_the_window() -> None:
    window = Stretch(at(0), at(10))
    assert recent_bars(window, Timeframe.M1, 2) == Stretch(at(8), at(10))
    assert recent_bars(Stretch(at(0), at(1)), Timeframe.M1, 2) == Stretch(at(0), at(1))


def test_stretches_merge_and_subtract() -> None:
    pieces = [(at(5), at(7)), (at(0), at(2)), (at(2), at(3)), (at(6), at(9)), (at(4), at(4))]
    assert merge(pieces) == [Stretch(at(0), at(3)), Stretch(at(5), at(9))]
    assert subtract([(at(0), at(10))], [(at(2), at(3)), (at(5), at(12))]) == [
        Stretch(at(0), at(2)),
        Stretch(at(3), at(5)),
    ]
    assert subtract([(at(0), at(3))], [(at(0), at(3))]) == []
    assert subtract([(at(0), at(3))], []) == [Stretch(at(0), at(3))]


def test_wanted_bars_are_whole_closed_bars_less_what_is_skipped() -> None:
    now = at(10.5)  # the bar of 00:10 is open
    gaps = [(at(0.5), at(3)), (at(6), at(30))]
    assert wanted_bars(gaps, Timeframe.M1, now) == [Stretch(at(1), at(3)), Stretch(at(6), at(10))]
    assert wanted_bars(gaps, Timeframe.M1, now, skip=[(at(7), at(9))]) == [
        Stretch(at(1), at(3)),
        Stretch(at(6), at(7)),
        Stretch(at(9), at(10)),
    ]
    # A gap inside the open bar wants nothing.
    assert wanted_bars([(at(10), at(11))], Timeframe.M1, now) == []


def test_a_long_gap_is_split_into_requests_of_at_most_max_bars() -> None:
    requests = plan_fetches([Stretch(at(0), at(25))], Timeframe.M1, 10)
    assert requests == [
        Stretch(at(0), at(10)),
        Stretch(at(10), at(20)),
        Stretch(at(20), at(25)),
    ]
    sizes = [(end - start) / M for start, end in requests]
    assert sizes == [10, 10, 5]


def test_gaps_close_together_share_a_request() -> None:
    wanted = [Stretch(at(0), at(2)), Stretch(at(5), at(8)), Stretch(at(12), at(14))]
    # 0..8 fits in 10 bars, 0..14 does not: the third gap starts a request of its own.
    assert plan_fetches(wanted, Timeframe.M1, 10) == [
        Stretch(at(0), at(8)),
        Stretch(at(12), at(14)),
    ]
    assert plan_fetches(wanted, Timeframe.M1, 1000) == [Stretch(at(0), at(14))]
    # One bar per request: nothing is shared, each bar is asked once.
    assert plan_fetches([Stretch(at(0), at(2))], Timeframe.M1, 1) == [
        Stretch(at(0), at(1)),
        Stretch(at(1), at(2)),
    ]
    assert plan_fetches([], Timeframe.M1, 10) == []
    with pytest.raises(ValueError, match="at least one bar"):
        plan_fetches(wanted, Timeframe.M1, 0)


def test_the_remainder_of_a_split_gap_shares_with_the_next() -> None:
    wanted = [Stretch(at(0), at(13)), Stretch(at(15), at(18))]
    assert plan_fetches(wanted, Timeframe.M1, 10) == [
        Stretch(at(0), at(10)),
        Stretch(at(10), at(18)),
    ]


def test_hourly_requests_stay_on_hour_boundaries() -> None:
    now = T0 + 30 * H + 5 * M
    wanted = wanted_bars([(T0 + 10 * M, T0 + 40 * H)], Timeframe.H1, now)
    requests = plan_fetches(wanted, Timeframe.H1, 12)
    assert requests == [
        Stretch(T0 + H, T0 + 13 * H),
        Stretch(T0 + 13 * H, T0 + 25 * H),
        Stretch(T0 + 25 * H, T0 + 30 * H),
    ]
    assert all(Timeframe.H1.floor(t) == t for request in requests for t in request)


def test_bars_missing_before_the_newest_received_are_holes() -> None:
    wanted = [Stretch(at(0), at(10))]
    received = [at(n) for n in (2, 3, 6)]
    # Nothing for 0-1 and 4-5: holes. Nothing after 6 either, but the provider may simply
    # not have those bars yet.
    assert confirmed_holes(wanted, received, Timeframe.M1) == [
        Stretch(at(0), at(2)),
        Stretch(at(4), at(6)),
    ]
    assert confirmed_holes(wanted, [], Timeframe.M1) == []
    assert confirmed_holes(wanted, [at(n) for n in range(10)], Timeframe.M1) == []


def test_stretches_survive_a_round_trip_through_json() -> None:
    holes = [Stretch(at(0), at(2)), Stretch(at(4), at(6))]
    assert decode(encode(holes)) == holes
    for damaged in (None, "x", [["2026-03-02T00:00:00", "2026-03-02T00:01:00"]], [[1, 2]], [[]]):
        assert decode(damaged) == []
