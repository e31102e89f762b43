"""Reading OHLCV candles from CSV files in columns (pure: no database, no files opened here).

`parse_candle_frames` reads what `csv_candles.parse_candles` reads, with the same result, but
hands the bars over as polars data frames of a few thousand rows and checks the plain rows of
a file with vectorized operations instead of one Python call per value: several times faster
on the long files of exchanges and data vendors.

Each chunk of rows goes two ways:

- the plain rows, checked in columns: the expected number of fields; a time that is epoch
  seconds, milliseconds or microseconds (digits only), or ISO `YYYY-MM-DD[( |T)HH:MM[:SS]]`
  with no zone, `Z` or `+00:00`; prices and volume of at most 20 integer digits and 18 decimal
  places with a decimal point (so they are exact in the database's NUMERIC(38,18)); high not
  below open and close, low not above them; an open time on the timeframe's boundary;
- every other row through `csv_candles`' own row parser, which accepts what it accepts (other
  time formats, decimal commas, exponents, …) and refuses the rest with its reason and line.

So the result never depends on which way a row went: a test holds the two readers to the same
bars and the same summary.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from operator import itemgetter
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt
import polars as pl

from tradeos.core.db import to_exact_decimal
from tradeos.market.csv_candles import (
    Bar,
    CsvRows,
    CsvSummary,
    Layout,
    Rejected,
    RejectReason,
    RowParser,
    open_csv,
)
from tradeos.market.timeframes import Timeframe

__all__ = ["FRAME_COLUMNS", "parse_candle_frames"]

# The columns of every frame: open_time Datetime("us", "UTC"), the rest Decimal(38, 18).
FRAME_COLUMNS: Final = ("open_time", "open", "high", "low", "close", "volume")
# Rows per frame: one unit of work each, short enough not to hold SQLite's write lock long.
CHUNK_ROWS: Final = 10_000

# A plain decimal the database holds exactly: no sign, exponent, comma or underscore.
_PLAIN_NUMBER: Final = r"^\d{1,20}(?:\.\d{1,18})?$"
_DIGITS: Final = r"^\d{1,18}$"
_COMPACT_DATE: Final = r"^(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])$"
_ISO_TIME: Final = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?(?:Z|\+00:00)?$"
_BLANKS: Final = " \t\r\n"
_MICROS: Final = 1_000_000
_DAY_SECONDS: Final = 86_400
_MONDAY_OFFSET: Final = 4 * _DAY_SECONDS  # 1970-01-05, the first Monday, 4 days after epoch


def parse_candle_frames(
    lines: Iterable[str] | TextIO,
    timeframe: Timeframe,
    *,
    summary: CsvSummary,
    delimiter: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pl.DataFrame]:
    """The bars of a CSV text as frames of `FRAME_COLUMNS`, in file order, none with an open
    time twice (of two in one frame the later row wins; across frames, the later frame is
    written later, so the later row of the file wins everywhere). `summary` counts every row
    as `parse_candles` would."""
    opened = open_csv(lines, delimiter)
    summary.layout, summary.delimiter = opened.layout, opened.delimiter
    parse = opened.row_parser(timeframe)
    for chunk in _chunks(opened, chunk_rows):
        frame = _chunk_frame(chunk, opened.layout, timeframe, parse, summary)
        if frame is not None:
            yield frame


@dataclass
class _Chunk:
    """Consecutive data rows of a file. `fields`: the text of the time, open, high, low, close
    and volume fields of the rows at `positions` (those with the layout's number of fields),
    or None to read every row one by one."""

    size: int
    fields: pl.DataFrame | None
    positions: npt.NDArray[np.int64]
    row: Callable[[int], list[str]]  # the fields of the row at a position
    line: Callable[[int], int]  # the file's line number of the row at a position


def _chunks(opened: CsvRows, chunk_rows: int) -> Iterator[_Chunk]:
    """The file's data rows in chunks. Lines are taken as they come, and a chunk of plain lines
    (no quote, no empty line, the same number of fields on each) is split into fields by
    polars' reader; anything else goes through Python's csv reader, which knows quoting.
    The first quote seen sends the rest of the file to the csv reader: a quoted field may
    hold a line break."""
    layout = opened.layout
    # A file with separate date and time columns goes row by row (MetaTrader exports: small).
    columnar = layout.time_of_day is None
    line = opened.first_line  # the line of the last row read
    if opened.first is not None:
        first = opened.first
        yield _Chunk(1, None, np.zeros(0, np.int64), lambda _: first, lambda _: line)
    source = opened.lines
    while columnar:
        block = list(islice(source, chunk_rows))
        if not block:
            return
        text = "".join(block)
        if '"' in text:  # quoting from here on: the csv reader takes the rest
            source = chain(block, source)
            break
        chunk = _plain_chunk(block, text, line, layout, opened.delimiter)
        if chunk is None:
            chunk = _reader_chunk(csv.reader(block, delimiter=opened.delimiter), line, layout)
        line += len(block)
        if chunk is not None:  # a block always has rows, if only empty ones
            yield chunk
    reader = csv.reader(source, delimiter=opened.delimiter)
    while chunk := _reader_chunk(reader, line, layout, chunk_rows, columnar):
        yield chunk  # the reader counts its lines from `line` on
        if chunk.size < chunk_rows:
            return


def _plain_chunk(
    block: list[str], text: str, line: int, layout: Layout, delimiter: str
) -> _Chunk | None:
    """`block` split into fields by polars, or None unless every line is plain: no NUL, no
    bare carriage return, no empty line, exactly the layout's number of fields."""
    fields_less_one = layout.width - 1
    if "\0" in text or "\r" in text.replace("\r\n", "\n"):
        return None
    if not all(row.count(delimiter) == fields_less_one for row in block):
        return None  # also every empty line: it has no delimiter
    wanted = _field_indexes(layout)
    read = pl.read_csv(
        io.StringIO(text),
        has_header=False,
        separator=delimiter,
        quote_char=None,
        infer_schema=False,
    )
    if read.height != len(block) or read.width != layout.width:
        return None
    fields = _fields_frame([read.to_series(index) for index in wanted], len(block), layout)

    def row(position: int) -> list[str]:
        return block[position].rstrip("\r\n").split(delimiter)

    return _Chunk(len(block), fields, np.arange(len(block)), row, lambda p: line + 1 + p)


def _reader_chunk(
    reader: Any, line: int, layout: Layout, limit: int | None = None, columnar: bool = True
) -> _Chunk | None:
    """Up to `limit` rows (all, when None) of a csv reader, whose rows started after `line`."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    for fields in reader:
        rows.append(fields)
        numbers.append(line + reader.line_num)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        return None
    width = layout.width
    if not columnar:
        positions = np.zeros(0, np.int64)
    elif all(len(fields) == width for fields in rows):
        positions = np.arange(len(rows), dtype=np.int64)
    else:
        positions = np.array([i for i, f in enumerate(rows) if len(f) == width], np.int64)
    kept = rows if len(positions) == len(rows) else [rows[i] for i in positions.tolist()]
    fields = None
    if kept:
        columns = [pl.Series(list(map(itemgetter(i), kept))) for i in _field_indexes(layout)]
        fields = _fields_frame(columns, len(kept), layout)
    return _Chunk(len(rows), fields, positions, rows.__getitem__, numbers.__getitem__)


def _field_indexes(layout: Layout) -> list[int]:
    """The indexes of the time, open, high, low, close (and volume) fields."""
    wanted = [layout.time, layout.open, layout.high, layout.low, layout.close]
    return wanted if layout.volume is None else [*wanted, layout.volume]


def _fields_frame(columns: list[pl.Series], height: int, layout: Layout) -> pl.DataFrame:
    if layout.volume is None:
        columns = [*columns, pl.Series(["0"] * height)]
    names = ("time", *FRAME_COLUMNS[1:])
    return pl.DataFrame([c.alias(n).cast(pl.String) for c, n in zip(columns, names, strict=True)])


def _chunk_frame(
    chunk: _Chunk, layout: Layout, timeframe: Timeframe, parse: RowParser, summary: CsvSummary
) -> pl.DataFrame | None:
    if chunk.fields is not None and chunk.fields.height:
        plain, positions = _plain_rows(chunk.fields, chunk.positions, timeframe)
    else:
        plain, positions = _empty_frame(), np.zeros(0, dtype=np.int64)
    taken = np.zeros(chunk.size, dtype=bool)
    taken[positions] = True
    # Every other row, one by one: a bar, a rejection with its line, or an empty row.
    bars: list[Bar] = []
    bar_positions: list[int] = []
    for position in np.flatnonzero(~taken).tolist():
        line = chunk.line(position)
        parsed = parse(chunk.row(position), line)
        if parsed is None:
            continue
        if isinstance(parsed, Bar):
            try:
                bar = _exact_bar(parsed)
            except ValueError as error:
                parsed = Rejected(line, RejectReason.OUT_OF_RANGE, str(error))
            else:
                bars.append(bar)
                bar_positions.append(position)
                continue
        summary.add(parsed)
    frame = plain.with_columns(pl.Series("position", positions, dtype=pl.Int64))
    if bars:
        frame = pl.concat([frame, _bars_frame(bars, bar_positions)]).sort("position")
    _count_bars(summary, frame)
    if frame.height == 0:
        return None
    frame = frame.unique(subset="open_time", keep="last", maintain_order=True)
    return frame.select(FRAME_COLUMNS)


def _plain_rows(
    raw: pl.DataFrame, positions: npt.NDArray[np.int64], timeframe: Timeframe
) -> tuple[pl.DataFrame, npt.NDArray[np.int64]]:
    """Of the rows whose fields `raw` holds (text, at `positions` of their chunk), those that
    pass every check in columns, as a frame, and their positions."""
    prices = [pl.col(name).str.strip_chars(_BLANKS).alias(name) for name in FRAME_COLUMNS[1:]]
    raw = raw.with_columns(pl.col("time").str.strip_chars(_BLANKS), *prices)
    plain = pl.all_horizontal(
        *(pl.col(name).str.contains(_PLAIN_NUMBER) for name in FRAME_COLUMNS[1:])
    )
    micros = _open_micros(pl.col("time"))
    decimal = pl.Decimal(38, 18)
    checked = raw.select(
        micros.alias("micros"),
        plain.alias("plain"),
        *(pl.col(name).cast(decimal, strict=False) for name in FRAME_COLUMNS[1:]),
    )
    high, low = pl.col("high"), pl.col("low")
    opened, closed = pl.col("open"), pl.col("close")
    good = (
        pl.col("plain")
        & pl.col("micros").is_not_null()
        & _on_boundary(pl.col("micros"), timeframe)
        & (high >= opened)
        & (high >= closed)
        & (low <= opened)
        & (low <= closed)
    ).fill_null(False)
    mask = checked.select(good).to_series().to_numpy()
    frame = checked.filter(mask).select(
        pl.from_epoch(pl.col("micros"), time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("open_time"),
        *FRAME_COLUMNS[1:],
    )
    return frame, positions[mask]


def _open_micros(time: pl.Expr) -> pl.Expr:
    """Microseconds since the epoch of the plain time formats; null for any other text."""
    digits = time.str.contains(_DIGITS) & ~(
        (time.str.len_chars() == 8) & time.str.contains(_COMPACT_DATE)
    )
    value = time.cast(pl.Int64, strict=False)
    # As csv_candles.parse_time: the unit told apart by magnitude (below 1e11 seconds, below
    # 1e14 milliseconds, below 1e17 microseconds; nanoseconds go the row-by-row way).
    epoch = (
        pl.when(value < 10**11)
        .then(value * _MICROS)
        .when(value < 10**14)
        .then(value * 1000)
        .when(value < 10**17)
        .then(value)
    )
    iso = time.str.contains(_ISO_TIME)
    bare = time.str.replace(r"(?:Z|\+00:00)$", "").str.replace("T", " ")
    moment = pl.coalesce(
        bare.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False),
        bare.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M", strict=False),
        bare.str.strptime(pl.Date, "%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
    )
    # Times before 1970 go the row-by-row way (negative epochs are not worth a second rule).
    parsed = pl.when(digits).then(epoch).when(iso).then(moment.dt.epoch("us"))
    return pl.when(parsed >= 0).then(parsed)


def _on_boundary(micros: pl.Expr, timeframe: Timeframe) -> pl.Expr:
    """Whether the time opens a bar of `timeframe` (as `csv_candles._on_boundary`)."""
    seconds = micros // _MICROS
    whole = micros % _MICROS == 0
    if timeframe.seconds <= _DAY_SECONDS:
        return whole & (seconds % timeframe.seconds == 0)
    return whole & ((seconds - _MONDAY_OFFSET) % timeframe.seconds == 0)


def _exact_bar(bar: Bar) -> Bar:
    """The bar with values the database holds exactly; `ValueError` for one it cannot."""
    o, h, lo, c, v = (
        to_exact_decimal(x) for x in (bar.open, bar.high, bar.low, bar.close, bar.volume)
    )
    return Bar(bar.open_time, o, h, lo, c, v)


def _bars_frame(bars: list[Bar], positions: list[int]) -> pl.DataFrame:
    decimal = pl.Decimal(38, 18)
    return pl.DataFrame(
        {
            "open_time": [bar.open_time for bar in bars],
            "open": [bar.open for bar in bars],
            "high": [bar.high for bar in bars],
            "low": [bar.low for bar in bars],
            "close": [bar.close for bar in bars],
            "volume": [bar.volume for bar in bars],
            "position": positions,
        },
        schema={
            "open_time": pl.Datetime("us", "UTC"),
            "open": decimal,
            "high": decimal,
            "low": decimal,
            "close": decimal,
            "volume": decimal,
            "position": pl.Int64,
        },
    )


def _empty_frame() -> pl.DataFrame:
    decimal = pl.Decimal(38, 18)
    return pl.DataFrame(
        schema={"open_time": pl.Datetime("us", "UTC"), **dict.fromkeys(FRAME_COLUMNS[1:], decimal)}
    )


def _count_bars(summary: CsvSummary, frame: pl.DataFrame) -> None:
    """Add every bar of the frame (before repeated open times are removed) to `summary`."""
    if frame.height:
        micros = frame.select(pl.col("open_time").dt.epoch("us")).to_series().to_numpy()
        summary.add_bars(micros)
