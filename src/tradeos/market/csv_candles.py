"""Reading OHLCV candles from CSV files (pure: no database, no files opened here).

`parse_candles` streams the rows of a CSV text (an open file or any iterable of lines) and
yields, per data row, either a `Bar` or a `Rejected` saying why the row was refused. It never
holds more than a small sample of the file, so it reads files of millions of rows in constant
memory. A `CsvSummary` passed to it counts what it saw: rows read, bars, duplicate open times,
and rejections grouped by reason with a few examples each.

Layouts (`detect_layout`, header names compared case-insensitively, spaces, dots and hyphens
read as `_`, MetaTrader's `<DATE>` brackets and a UTF-8 byte-order mark ignored):

- time: the first of `open_time`, `timestamp`, `datetime`, … (see `_TIME_NAMES`); else `date`
  and `time` columns together (MetaTrader: `<DATE>,<TIME>,…`); else `time`, then `date`; else an
  empty or `Unnamed: 0` first column, which is how pandas writes an unnamed date index.
- open / high / low / close: `open`, `o`, `open_price`, … (`Adj Close` is not close: Yahoo's
  adjusted close is a different series).
- volume, optional: a column named exactly `volume`, `vol` or `v`; otherwise the first column
  whose name starts with `vol` (so of CryptoDataDownload's `Volume BTC,Volume USDT` the base
  volume, `Volume BTC`). A file without one gives volume 0 on every bar, and
  `CsvSummary.has_volume` is False so the importer can say so.
- no header: a first row that is already data (a time, then numbers) means the file has no
  header, and its columns are time, open, high, low, close[, volume[, anything]]: that covers
  Binance's 12-column kline files (open time in ms or µs, OHLCV, close time, …); or, when the
  second field is a time of day, date, time, open, high, low, close[, volume[, …]], as
  MetaTrader's history export writes them (`2024.01.31,13:45,1.0841,…`).

Delimiter: comma, semicolon, tab or `|`, found by `csv.Sniffer` on the first lines. In a file
not delimited by commas a number with one comma and no point has a decimal comma (`1,5` is 1.5),
as spreadsheets in many locales write it.

Times (`parse_time`): epoch seconds, milliseconds, microseconds or nanoseconds (told apart by
magnitude, so epoch milliseconds before March 1973 read as seconds), ISO 8601 with or without
zone, `YYYY-MM-DD[ HH:MM[:SS]]`, `YYYY/MM/DD…`, `YYYY.MM.DD…`, `YYYYMMDD`. A time without zone is
UTC. `01/02/2024` and `31.01.2024` are refused: whether the day or the month comes first cannot
be told from the text. Every time returned is aware UTC.

Prices and volumes are `Decimal` exactly as written (`0.1` is Decimal('0.1'), never a float).

Duplicates: a file may give the same open time twice. Both rows are yielded in file order, so an
upsert applied in order keeps the later one; `CsvSummary.duplicates` counts them and
`bar_batches` cuts the bars into batches without a repeated open time (the later row wins), as
one `INSERT … ON CONFLICT DO UPDATE` statement may not touch the same row twice.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from itertools import chain, islice
from typing import Any, Final, TextIO, TypeAlias

import numpy as np
import numpy.typing as npt

from tradeos.market.providers.base import Bar
from tradeos.market.timeframes import Timeframe

__all__ = [
    "Bar",
    "CsvLayoutError",
    "CsvRows",
    "CsvSummary",
    "Layout",
    "ParsedRow",
    "RejectReason",
    "Rejected",
    "RowParser",
    "bar_batches",
    "detect_layout",
    "open_csv",
    "parse_candles",
    "parse_time",
    "sniff_delimiter",
]


class CsvLayoutError(ValueError):
    """The file's columns cannot be read as candles (the whole file is refused)."""


class RejectReason(StrEnum):
    BAD_TIME = "unparsable time"
    BAD_NUMBER = "unparsable number"
    NEGATIVE = "negative price or volume"
    INCONSISTENT = "high/low inconsistent with open/close"
    OFF_BOUNDARY = "open time not on the timeframe's boundary"
    FIELD_COUNT = "wrong number of fields"
    # More than 18 decimal places or 20 integer digits: the database could not hold it exactly.
    OUT_OF_RANGE = "price or volume out of the stored range"


@dataclass(frozen=True)
class Rejected:
    """A data row that is not a bar. `line_number` is the file's line (1 = the first line; 0
    when not known: a bar refused after parsing, which `detail` names by its open time)."""

    line_number: int
    reason: RejectReason
    detail: str = ""

    def __str__(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        where = f"line {self.line_number}: " if self.line_number else ""  # 0: not known
        return f"{where}{self.reason}{tail}"


ParsedRow: TypeAlias = Bar | Rejected


@dataclass(frozen=True)
class Layout:
    """Which column holds what (0-based indexes into a row)."""

    columns: tuple[str, ...]  # the header as written (for a file without one: col1, col2, …)
    time: int
    open: int
    high: int
    low: int
    close: int
    volume: int | None  # None: no volume column, bars get volume 0
    time_of_day: int | None = None  # a separate time column, joined to the date in `time`
    has_header: bool = True

    @property
    def width(self) -> int:
        """The number of fields a data row has."""
        return len(self.columns)

    def describe(self) -> str:
        def name(i: int | None) -> str:
            return "-" if i is None else repr(self.columns[i])

        when = name(self.time)
        if self.time_of_day is not None:
            when += f" + {name(self.time_of_day)}"
        header = "" if self.has_header else "no header; "
        return (
            f"{header}time {when}, open {name(self.open)}, high {name(self.high)}, "
            f"low {name(self.low)}, close {name(self.close)}, volume {name(self.volume)}"
        )


# ---------------------------------------------------------------------------------------------
# Layout detection


# In order of preference: a file with both `timestamp` and `date` is keyed by `timestamp`.
_TIME_NAMES: Final = (
    "open_time",
    "opentime",
    "kline_open_time",
    "timestamp",
    "time_stamp",
    "datetime",
    "date_time",
    "datetime_utc",
    "time_utc",
    "timestamp_utc",
    "utc_time",
    "gmt_time",
    "unix",
    "unix_time",
    "unix_timestamp",
    "ts",
)
_OPEN_NAMES: Final = ("open", "o", "open_price", "price_open", "opening_price", "first")
_HIGH_NAMES: Final = ("high", "h", "high_price", "price_high", "highest", "max")
_LOW_NAMES: Final = ("low", "l", "low_price", "price_low", "lowest", "min")
_CLOSE_NAMES: Final = (
    "close",
    "c",
    "close_price",
    "price_close",
    "closing_price",
    "last",
    "last_price",
)
_VOLUME_NAMES: Final = ("volume", "vol", "v")
_PANDAS_INDEX: Final = re.compile(r"^(unnamed:_?0|index)?$")
_SEPARATORS: Final = re.compile(r"[\s.\-/]+")
_TIME_OF_DAY: Final = re.compile(r"\d{1,2}:\d{2}(:\d{2})?")


def _normalize(name: str) -> str:
    name = name.replace("\ufeff", "").strip().strip("\"'").strip().lower()
    if name.startswith("<") and name.endswith(">"):  # MetaTrader: <DATE>,<OPEN>,…
        name = name[1:-1]
    return _SEPARATORS.sub("_", name).strip("_")


def _first(names: Sequence[str], wanted: Iterable[str]) -> int | None:
    for want in wanted:
        if want in names:
            return names.index(want)
    return None


def _headerless(row: Sequence[str]) -> Layout | None:
    """The layout of a file whose first row `row` is already data, or None if it is not."""
    # MetaTrader's history export has separate date and time: 2024.01.31,13:45,o,h,l,c,v.
    split = len(row) >= 6 and _TIME_OF_DAY.fullmatch(row[1].strip()) is not None
    first = 2 if split else 1
    if len(row) < first + 4:
        return None
    try:
        parse_time(f"{row[0]} {row[1]}" if split else row[0])
        for text in row[first : first + 4]:
            if not _comma_decimal(text).is_finite():
                return None
    except (ValueError, InvalidOperation):
        return None
    return Layout(
        columns=tuple(f"col{i + 1}" for i in range(len(row))),
        time=0,
        open=first,
        high=first + 1,
        low=first + 2,
        close=first + 3,
        volume=first + 4 if len(row) > first + 4 else None,
        time_of_day=1 if split else None,
        has_header=False,
    )


def detect_layout(header: Sequence[str]) -> Layout:
    """The layout of a file whose first row is `header` (a header, or the first data row of a
    file without one). Raises `CsvLayoutError` naming every column it could not find."""
    plain = _headerless(header)
    if plain is not None:
        return plain
    names = [_normalize(h) for h in header]
    time_of_day = None
    time = _first(names, _TIME_NAMES)
    if time is None and "date" in names and "time" in names:
        time, time_of_day = names.index("date"), names.index("time")
    if time is None:
        time = _first(names, ("time", "date", "t"))
    if time is None and names and _PANDAS_INDEX.match(names[0]):
        time = 0
    found = {
        "open": _first(names, _OPEN_NAMES),
        "high": _first(names, _HIGH_NAMES),
        "low": _first(names, _LOW_NAMES),
        "close": _first(names, _CLOSE_NAMES),
    }
    missing: list[str] = []
    aliases = {
        "time": ("time", "timestamp", "date", "datetime", "open_time", "pandas index"),
        "open": _OPEN_NAMES[:3],
        "high": _HIGH_NAMES[:3],
        "low": _LOW_NAMES[:3],
        "close": _CLOSE_NAMES[:3],
    }
    for what, index in [("time", time), *found.items()]:
        if index is None:
            missing.append(f"{what} (e.g. {', '.join(aliases[what])})")
    if missing:
        shown = ", ".join(repr(h) for h in header)
        raise CsvLayoutError(f"no {'; no '.join(missing)} column in the header [{shown}]")
    volume = _first(names, _VOLUME_NAMES)
    if volume is None:
        volume = next((i for i, n in enumerate(names) if n.startswith("vol")), None)
    assert time is not None
    opened, high, low, close = (found[k] for k in ("open", "high", "low", "close"))
    assert opened is not None and high is not None and low is not None and close is not None
    return Layout(
        columns=tuple(header),
        time=time,
        open=opened,
        high=high,
        low=low,
        close=close,
        volume=volume,
        time_of_day=time_of_day,
    )


_DELIMITERS: Final = ",;\t|"
_SAMPLE_LINES: Final = 50


def sniff_delimiter(sample: Sequence[str]) -> str:
    """The delimiter of the CSV text whose first lines are `sample`: one of `, ; TAB |`
    (`csv.Sniffer`; when it cannot tell, the one most frequent in the first line; comma at
    worst)."""
    lines = [line for line in sample if line.strip()]
    if not lines:
        return ","
    first = lines[0]
    try:
        found = csv.Sniffer().sniff("\n".join(line.rstrip("\r\n") for line in lines), _DELIMITERS)
        if found.delimiter in first:
            return found.delimiter
    except csv.Error:
        pass
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


# ---------------------------------------------------------------------------------------------
# Times


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch values are told apart by magnitude: below 1e11 seconds (until year 5138), below 1e14
# milliseconds, below 1e17 microseconds, else nanoseconds.
_EPOCH_UNITS: Final = ((10**11, 1), (10**14, 1000), (10**17, 1_000_000))
_EPOCH_NUMBER: Final = re.compile(r"-?\d+(\.\d+)?")
_COMPACT_DATE: Final = re.compile(r"(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
_AMBIGUOUS_DATE: Final = re.compile(r"\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}\b")
_UTC_SUFFIXES: Final = (" utc", " gmt", "utc", "gmt")


def _from_epoch(text: str) -> datetime:
    size = abs(int(text.split(".", 1)[0]))
    per_second = 1_000_000_000
    for limit, unit in _EPOCH_UNITS:
        if size < limit:
            per_second = unit
            break
    try:
        if "." not in text:
            seconds, rest = divmod(int(text), per_second)
            moment = datetime.fromtimestamp(seconds, UTC)
            micros, finer = divmod(rest * 1_000_000, per_second)
        else:
            exact = Decimal(text) * 1_000_000 / per_second
            micros, finer = int(exact), int(exact != exact.to_integral_value())
            moment = _EPOCH
        if not finer:
            return moment + timedelta(microseconds=micros) if micros else moment
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"epoch time {text!r} is out of range") from None
    raise ValueError(f"epoch time {text!r} is finer than a microsecond")


def parse_time(text: str) -> datetime:
    """The aware UTC time `text` denotes (see the module's doc for the formats). A time without
    a zone is taken as UTC. Raises `ValueError` saying what is wrong."""
    s = text.replace("\ufeff", "").strip()
    if not s:
        raise ValueError("empty time")
    if s.isascii() and s.isdigit():
        if len(s) == 8 and _COMPACT_DATE.fullmatch(s):  # 20240131, not epoch 1970-08-23
            return datetime(int(s[:4]), int(s[4:6]), int(s[6:]), tzinfo=UTC)
        if len(s) <= 11:  # epoch seconds, the common case, fast
            try:
                return datetime.fromtimestamp(int(s), UTC)
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"epoch time {s!r} is out of range") from None
        return _from_epoch(s)
    if _EPOCH_NUMBER.fullmatch(s):
        return _from_epoch(s)
    if len(s) >= 10 and s[:4].isdigit() and s[4] in "/." and s[7] == s[4]:
        s = f"{s[:4]}-{s[5:7]}-{s[8:]}"  # 2024/01/31, 2024.01.31 (MetaTrader)
    lowered = s.lower()
    for suffix in _UTC_SUFFIXES:
        if lowered.endswith(suffix) and len(s) > 10:
            s = s[: -len(suffix)].rstrip() + "+00:00"
            break
    try:
        moment = datetime.fromisoformat(s)
    except ValueError:
        if _AMBIGUOUS_DATE.match(s):
            raise ValueError(
                f"ambiguous date {text.strip()!r}: day and month order unknown, "
                "write it as YYYY-MM-DD"
            ) from None
        raise ValueError(
            f"unrecognized time {text.strip()!r}: expected epoch seconds/milliseconds, "
            "ISO 8601 or YYYY-MM-DD[ HH:MM[:SS]]"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _on_boundary(moment: datetime, seconds: int) -> bool:
    """Whether aware UTC `moment` opens a bar of a timeframe of `seconds` (equal to
    `floor_time(moment, tf) == moment`, without its arithmetic: every timeframe up to a day
    divides a day, and weeks start on Mondays)."""
    if moment.microsecond:
        return False
    of_day = moment.hour * 3600 + moment.minute * 60 + moment.second
    if seconds <= 86400:
        return of_day % seconds == 0
    return of_day == 0 and moment.weekday() == 0


# ---------------------------------------------------------------------------------------------
# Rows


_ZERO: Final = Decimal(0)
# Reads one data row (its fields, its line number): a bar, a rejection, or None for an empty row.
RowParser = Callable[[list[str], int], "ParsedRow | None"]


def _comma_decimal(text: str) -> Decimal:
    if "," in text and "." not in text:
        text = text.replace(",", ".", 1)
    return Decimal(text)


def _row_parser(layout: Layout, timeframe: Timeframe, decimal_comma: bool) -> RowParser:
    """A function reading one row of `layout` (None for an empty row, skipped silently)."""
    number: Callable[[str], Decimal] = _comma_decimal if decimal_comma else Decimal
    width = layout.width
    i_time, i_tod = layout.time, layout.time_of_day
    i_open, i_high, i_low, i_close, i_vol = (
        layout.open,
        layout.high,
        layout.low,
        layout.close,
        layout.volume,
    )
    # Without a header the first columns are read and the rest (Binance's close time …) ignored.
    strict_width = layout.has_header
    named = [("open", i_open), ("high", i_high), ("low", i_low), ("close", i_close)]
    if i_vol is not None:
        named.append(("volume", i_vol))
    seconds = timeframe.seconds
    bad_time, bad_number = RejectReason.BAD_TIME, RejectReason.BAD_NUMBER

    def odd_width(row: list[str], line: int) -> Rejected | None:
        """None if `row` may still be read (trailing empty fields), else why not."""
        if len(row) > width and not any(f.strip() for f in row[width:]):
            return None
        if len(row) > width and not strict_width:
            return None
        return Rejected(line, RejectReason.FIELD_COUNT, f"{len(row)} fields, expected {width}")

    def parse(row: list[str], line: int) -> ParsedRow | None:
        if len(row) != width:
            if not any(f.strip() for f in row):
                return None
            refused = odd_width(row, line)
            if refused is not None:
                return refused
        try:
            if i_tod is None:
                moment = parse_time(row[i_time])
            else:
                moment = parse_time(f"{row[i_time].strip()} {row[i_tod].strip()}")
        except ValueError as error:
            if not any(f.strip() for f in row):
                return None
            return Rejected(line, bad_time, str(error))
        try:
            o = number(row[i_open])
            h = number(row[i_high])
            lo = number(row[i_low])
            c = number(row[i_close])
            v = _ZERO if i_vol is None else number(row[i_vol])
        except InvalidOperation:
            for name, i in named:
                try:
                    number(row[i])
                except InvalidOperation:
                    return Rejected(line, bad_number, f"{name} {row[i]!r} is not a number")
            raise  # pragma: no cover (one of them failed above)
        if not (o.is_finite() and h.is_finite() and lo.is_finite() and c.is_finite()) or not (
            v.is_finite()
        ):
            return Rejected(line, bad_number, "a price or the volume is not finite")
        if o < 0 or h < 0 or lo < 0 or c < 0 or v < 0:
            return Rejected(
                line, RejectReason.NEGATIVE, f"open {o}, high {h}, low {lo}, close {c}, volume {v}"
            )
        if h < o or h < c:
            return Rejected(
                line, RejectReason.INCONSISTENT, f"high {h} below open {o} or close {c}"
            )
        if lo > o or lo > c:
            return Rejected(
                line, RejectReason.INCONSISTENT, f"low {lo} above open {o} or close {c}"
            )
        if not _on_boundary(moment, seconds):
            return Rejected(
                line,
                RejectReason.OFF_BOUNDARY,
                f"{moment.isoformat()} does not open a {timeframe.value} bar",
            )
        return Bar(moment, o, h, lo, c, v)

    return parse


@dataclass
class CsvRows:
    """An opened CSV text: its layout and delimiter, and its data rows still to read.
    `first` is the first data row when the file has no header (already read to find that out),
    at line `first_line`; `reader.line_num` is the line of the row last read."""

    reader: Any  # a csv.reader over `lines`
    lines: Iterator[str]  # the lines not yet read (the reader reads them one row at a time)
    layout: Layout
    delimiter: str
    first: list[str] | None
    first_line: int

    def row_parser(self, timeframe: Timeframe) -> RowParser:
        """The function reading one data row of this file into a bar (see `_row_parser`)."""
        return _row_parser(self.layout, timeframe, decimal_comma=self.delimiter != ",")


def open_csv(lines: Iterable[str] | TextIO, delimiter: str | None = None) -> CsvRows:
    """Find the delimiter (unless given) on the first lines and the layout on the first
    non-empty row (`CsvLayoutError` if unreadable)."""
    source = iter(lines)
    sample = list(islice(source, _SAMPLE_LINES))
    delimiter = delimiter or sniff_delimiter(sample)
    rest = chain(sample, source)
    reader = csv.reader(rest, delimiter=delimiter)
    for first in reader:
        if any(f.strip() for f in first):
            break
    else:
        raise CsvLayoutError("the file has no rows")
    layout = detect_layout(first)
    data = None if layout.has_header else [first[0].replace("\ufeff", ""), *first[1:]]
    return CsvRows(reader, rest, layout, delimiter, data, reader.line_num)


def parse_candles(
    lines: Iterable[str] | TextIO,
    timeframe: Timeframe,
    *,
    summary: CsvSummary | None = None,
    delimiter: str | None = None,
) -> Iterator[ParsedRow]:
    """Stream the candles of a CSV text: per non-empty data row, a `Bar` or a `Rejected`, in
    file order. Empty rows are skipped silently. The layout is detected on the first non-empty
    row (`detect_layout`; `CsvLayoutError` if unreadable), the delimiter on the first lines
    unless given. `summary`, if given, counts every row yielded (and records layout and
    delimiter). Open files with `newline=""` (and `encoding="utf-8-sig"`, though a byte-order
    mark is ignored anyway)."""
    opened = open_csv(lines, delimiter)
    if summary is not None:
        summary.layout, summary.delimiter = opened.layout, opened.delimiter
    parse = opened.row_parser(timeframe)
    add = summary.add if summary is not None else None
    reader = opened.reader
    if opened.first is not None:
        parsed = parse(opened.first, opened.first_line)
        if parsed is not None:
            if add is not None:
                add(parsed)
            yield parsed
    for row in reader:
        parsed = parse(row, reader.line_num)
        if parsed is None:
            continue
        if add is not None:
            add(parsed)
        yield parsed


def bar_batches(bars: Iterable[Bar], size: int = 1000) -> Iterator[list[Bar]]:
    """`bars` in batches of at most `size`, none with an open time twice (of two, the later
    bar wins, at the place of the first). Upserted batch after batch, in order, the later row of
    the file wins everywhere."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    batch: dict[datetime, Bar] = {}
    for bar in bars:
        batch[bar.open_time] = bar
        if len(batch) >= size:
            yield list(batch.values())
            batch = {}
    if batch:
        yield list(batch.values())


# ---------------------------------------------------------------------------------------------
# Summary


_CHUNK_BITS: Final = 12  # the seen open times: bitmaps of 4096 minutes (512 bytes) each
_MINUTE: Final = timedelta(minutes=1)


@dataclass
class CsvSummary:
    """What one read of a file found. Pass it to `parse_candles`, which adds every row it
    yields. Memory stays small however long the file: rejections keep a count per reason and at
    most `max_examples` examples each, and the open times seen are a bitmap of minutes."""

    max_examples: int = 5
    layout: Layout | None = None
    delimiter: str | None = None
    rows_read: int = 0  # data rows (not the header, not empty rows)
    bars: int = 0
    rejected: int = 0
    duplicates: int = 0  # bars whose open time an earlier bar of the file had
    first_time: datetime | None = None
    last_time: datetime | None = None
    rejections: dict[RejectReason, int] = field(default_factory=dict)
    examples: dict[RejectReason, list[Rejected]] = field(default_factory=dict)
    _seen: dict[int, bytearray] = field(default_factory=dict, repr=False)

    @property
    def has_volume(self) -> bool:
        """False when the file had no volume column (its bars got volume 0)."""
        return self.layout is not None and self.layout.volume is not None

    def add(self, row: ParsedRow) -> None:
        self.rows_read += 1
        if isinstance(row, Rejected):
            self.rejected += 1
            self.rejections[row.reason] = self.rejections.get(row.reason, 0) + 1
            kept = self.examples.setdefault(row.reason, [])
            if len(kept) < self.max_examples:
                kept.append(row)
            return
        self.bars += 1
        moment = row.open_time
        if self.first_time is None or moment < self.first_time:
            self.first_time = moment
        if self.last_time is None or moment > self.last_time:
            self.last_time = moment
        # Bars open on whole minutes at least, so a minute names an open time.
        minute = (moment - _EPOCH) // _MINUTE
        chunk = self._seen.get(minute >> _CHUNK_BITS)
        if chunk is None:
            chunk = self._seen[minute >> _CHUNK_BITS] = bytearray(1 << (_CHUNK_BITS - 3))
        bit = minute & ((1 << _CHUNK_BITS) - 1)
        mask = 1 << (bit & 7)
        if chunk[bit >> 3] & mask:
            self.duplicates += 1
        else:
            chunk[bit >> 3] |= mask

    def add_bars(self, open_micros: npt.NDArray[np.int64]) -> None:
        """`add` for many bars at once, given their open times in microseconds since the epoch
        (what the columnar reader has): the same counts, first and last time, duplicates."""
        if not len(open_micros):
            return
        self.rows_read += len(open_micros)
        self.bars += len(open_micros)
        first = _EPOCH + timedelta(microseconds=int(open_micros.min()))
        last = _EPOCH + timedelta(microseconds=int(open_micros.max()))
        if self.first_time is None or first < self.first_time:
            self.first_time = first
        if self.last_time is None or last > self.last_time:
            self.last_time = last
        minutes, counts = np.unique(open_micros // 60_000_000, return_counts=True)
        seen_before = np.zeros(len(minutes), dtype=bool)
        chunks = minutes >> _CHUNK_BITS
        for key in np.unique(chunks).tolist():
            chunk = self._seen.get(key)
            if chunk is None:
                chunk = self._seen[key] = bytearray(1 << (_CHUNK_BITS - 3))
            bitmap = np.frombuffer(chunk, dtype=np.uint8)  # a view: writes go to the chunk
            here = chunks == key
            bits = minutes[here] & ((1 << _CHUNK_BITS) - 1)
            masks = (1 << (bits & 7)).astype(np.uint8)
            seen_before[here] = (bitmap[bits >> 3] & masks) != 0
            np.bitwise_or.at(bitmap, bits >> 3, masks)
        # Every bar of a minute seen before is a duplicate; of one new minute, all but one.
        self.duplicates += int(counts[seen_before].sum() + (counts[~seen_before] - 1).sum())

    def refuse(self, rejected: Rejected) -> None:
        """Count a bar added earlier as rejected after all (the database cannot hold it)."""
        self.bars -= 1
        self.rows_read -= 1
        self.add(rejected)

    def describe(self) -> list[str]:
        """The summary as lines of text, for the importer to print."""
        out = [
            f"rows read: {self.rows_read}, bars: {self.bars}, rejected: {self.rejected}",
        ]
        if self.layout is not None:
            out.append(f"columns: {self.layout.describe()}")
        if self.first_time is not None and self.last_time is not None:
            out.append(f"from {self.first_time.isoformat()} to {self.last_time.isoformat()}")
        if self.duplicates:
            out.append(f"duplicate open times: {self.duplicates} (the later row of the file wins)")
        if self.layout is not None and not self.has_volume:
            out.append("the file has no volume column: volumes stored as 0")
        for reason, count in sorted(self.rejections.items(), key=lambda kv: -kv[1]):
            out.append(f"rejected {count} × {reason}, e.g.")
            out.extend(f"  {example}" for example in self.examples.get(reason, []))
        return out
