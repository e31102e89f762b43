"""Candle timeframes and their UTC boundaries (pure: no I/O).

A bar of timeframe `tf` opens at a UTC boundary of `tf`: minutes and hours on multiples since
midnight UTC, days at 00:00 UTC, weeks on Monday 00:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final


class Timeframe(StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"
    W1 = "1w"

    @property
    def seconds(self) -> int:
        return _SECONDS[self]

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=_SECONDS[self])

    def floor(self, moment: datetime) -> datetime:
        """The open time of the bar of this timeframe that contains `moment` (aware, UTC)."""
        return floor_time(moment, self)

    def divides(self, coarser: Timeframe) -> bool:
        """Whether bars of this timeframe tile bars of `coarser` exactly (resampling works)."""
        return coarser.seconds % self.seconds == 0 and coarser.seconds >= self.seconds


_SECONDS: Final = {
    Timeframe.M1: 60,
    Timeframe.M5: 300,
    Timeframe.M15: 900,
    Timeframe.M30: 1800,
    Timeframe.H1: 3600,
    Timeframe.H4: 14400,
    Timeframe.D1: 86400,
    Timeframe.W1: 604800,
}
# 1970-01-05 was a Monday: weeks are counted from there, so they start on Mondays.
_FIRST_MONDAY: Final = datetime(1970, 1, 5, tzinfo=UTC)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def floor_time(moment: datetime, timeframe: Timeframe) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime refused: market times are timezone-aware UTC")
    moment = moment.astimezone(UTC)
    origin = _FIRST_MONDAY if timeframe is Timeframe.W1 else _EPOCH
    elapsed = int((moment - origin).total_seconds() // timeframe.seconds)
    return origin + timedelta(seconds=elapsed * timeframe.seconds)


ORDERED: Final = tuple(sorted(Timeframe, key=lambda tf: tf.seconds))
