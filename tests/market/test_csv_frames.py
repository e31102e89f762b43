"""The columnar CSV reader: the same bars and the same summary as the row-by-row reader, on
every sample layout and on generated files mixing plain rows with every kind of odd one."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos.core.db import to_exact_decimal
from tradeos.market.csv_candles import (
    Bar,
    CsvSummary,
    RejectReason,
    parse_candles,
)
from tradeos.market.csv_frames import FRAME_COLUMNS, parse_candle_frames
from tradeos.market.timeframes import Timeframe

SAMPLES = Path(__file__).parent / "csv"
T0 = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday

Stored = dict[datetime, tuple[Decimal, ...]]


def row_by_row(text: str, timeframe: Timeframe) -> tuple[Stored, CsvSummary]:
    """What the row-by-row reader leaves in the database: the later row of an open time wins."""
    summary = CsvSummary()
    stored: Stored = {}
    for row in parse_candles(text.splitlines(keepends=True), timeframe, summary=summary):
        if isinstance(row, Bar):
            stored[row.open_time] = (row.open, row.high, row.low, row.close, row.volume)
    return stored, summary


def columnar(
    text: str, timeframe: Timeframe, chunk_rows: int = 10_000
) -> tuple[Stored, CsvSummary]:
    summary = CsvSummary()
    stored: Stored = {}
    frames = parse_candle_frames(
        text.splitlines(keepends=True), timeframe, summary=summary, chunk_rows=chunk_rows
    )
    for frame in frames:
        assert frame.columns == list(FRAME_COLUMNS)
        assert frame.get_column("open_time").n_unique() == frame.height
        for moment, *values in frame.iter_rows():
            stored[moment.astimezone(UTC)] = tuple(values)
    return stored, summary


def assert_same(text: str, timeframe: Timeframe, chunk_rows: int = 10_000) -> CsvSummary:
    expected, want = row_by_row(text, timeframe)
    got, have = columnar(text, timeframe, chunk_rows)
    assert got == expected  # Decimal equality: the same numbers
    for field in ("rows_read", "bars", "rejected", "duplicates", "first_time", "last_time"):
        assert getattr(have, field) == getattr(want, field), field
    assert have.rejections == want.rejections
    assert have.examples == want.examples
    assert have.layout == want.layout and have.delimiter == want.delimiter
    return have


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.csv")))
@pytest.mark.parametrize("timeframe", [Timeframe.M1, Timeframe.H1, Timeframe.D1, Timeframe.W1])
def test_every_sample_layout_reads_the_same_in_columns(sample: str, timeframe: Timeframe) -> None:
    assert_same((SAMPLES / sample).read_text(encoding="utf-8-sig"), timeframe)


def test_plain_rows_are_read_exactly_and_their_summary_counts_them() -> None:
    text = "time,open,high,low,close,volume\n" + "".join(
        f"{int((T0 + timedelta(minutes=n)).timestamp())},0.1,0.3,0.1,0.2,{n}.000000000000000001\n"
        for n in range(50)
    )
    summary = assert_same(text, Timeframe.M1, chunk_rows=7)
    got, _ = columnar(text, Timeframe.M1, chunk_rows=7)
    assert got[T0] == (
        Decimal("0.1"),
        Decimal("0.3"),
        Decimal("0.1"),
        Decimal("0.2"),
        Decimal("0.000000000000000001"),
    )
    assert summary.bars == 50 and summary.rejected == 0
    assert summary.first_time == T0 and summary.last_time == T0 + timedelta(minutes=49)


def test_duplicates_within_and_across_frames_count_once_each_and_the_later_row_wins() -> None:
    at = int(T0.timestamp())
    rows = [f"{at + 60 * (n % 4)},1,20,0,{n},1\n" for n in range(10)]  # 4 minutes, 10 rows
    text = "time,open,high,low,close,volume\n" + "".join(rows)
    for chunk in (3, 4, 100):
        summary = assert_same(text, Timeframe.M1, chunk_rows=chunk)
        assert summary.duplicates == 6
        got, _ = columnar(text, Timeframe.M1, chunk_rows=chunk)
        assert got[T0][3] == Decimal(8)  # rows 0, 4, 8 share T0: the last one wins


def test_a_value_the_database_cannot_hold_exactly_is_refused_with_its_line() -> None:
    text = (
        "time,open,high,low,close,volume\n"
        f"{int(T0.timestamp())},1.0000000000000000001,2,1,1,1\n"
        f"{int(T0.timestamp()) + 60},1,2,1,1,1\n"
    )
    got, summary = columnar(text, Timeframe.M1)
    assert list(got) == [T0 + timedelta(minutes=1)]
    assert summary.bars == 1 and summary.rejected == 1 and summary.rows_read == 2
    (refused,) = summary.examples[RejectReason.OUT_OF_RANGE]
    assert refused.line_number == 2
    assert "NUMERIC(38,18)" in str(refused)


# -- generated files ------------------------------------------------------------------------

plain_time = st.integers(0, 600).map(lambda n: T0 + timedelta(minutes=n))


def _time_text(moment: datetime, style: int) -> str:
    if style == 0:
        return str(int(moment.timestamp()))
    if style == 1:
        return str(int(moment.timestamp()) * 1000)
    if style == 2:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if style == 3:
        return moment.strftime("%Y-%m-%dT%H:%MZ")
    if style == 4:
        return moment.strftime("%Y-%m-%d")
    if style == 5:
        return moment.strftime("%Y/%m/%d %H:%M")  # the row-by-row way only
    if style == 6:
        return moment.isoformat()  # +00:00
    return str(int(moment.timestamp()) * 1_000_000_000)  # nanoseconds: row by row


numbers = st.one_of(
    st.decimals(0, 10**6, places=2, allow_nan=False).map(str),
    st.decimals(0, 10, places=18, allow_nan=False).map(str),
    st.sampled_from(["1e-8", "-1", "1,5", "abc", "", " 7.25 ", "007.5", "1_000", "5.", "inf"]),
    st.sampled_from(["1.0000000000000000001", "123456789012345678901", "0.5"]),
)


@st.composite
def rows(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return ""  # an empty line
    if kind == 1:
        return ",".join(draw(st.lists(numbers, min_size=1, max_size=8)))  # wrong width, odd
    moment = draw(plain_time) + timedelta(seconds=draw(st.sampled_from([0, 0, 0, 30])))
    when = _time_text(moment, draw(st.integers(0, 7)))
    if kind == 2:
        return f"{when},{draw(numbers)},{draw(numbers)},{draw(numbers)},{draw(numbers)}"
    low = draw(st.decimals(1, 1000, places=2))
    o, c = (low + draw(st.decimals(0, 50, places=2)) for _ in range(2))
    high = max(o, c) + draw(st.decimals(-1, 5, places=2))  # now and then below open or close
    volume = draw(st.decimals(0, 10**4, places=4))
    extra = ",x" if kind == 3 else ""
    if kind == 4:
        when = f'"{when}"'  # quoting: the csv reader takes the rest of the file
    return f"{when},{o},{high},{low},{c},{volume}{extra}"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(rows(), max_size=40),
    st.sampled_from([Timeframe.M1, Timeframe.M5, Timeframe.H1, Timeframe.D1]),
    st.integers(1, 12),
)
def test_generated_files_read_the_same_in_columns(
    lines: list[str], timeframe: Timeframe, chunk_rows: int
) -> None:
    text = "time,open,high,low,close,volume\n" + "\n".join(lines) + "\n"
    expected, want = row_by_row(text, timeframe)
    got, have = columnar(text, timeframe, chunk_rows)
    # The columnar reader also refuses what the database cannot hold exactly; the row-by-row
    # reader leaves that to the write. Take those out of the comparison, and nothing else.
    refused = have.examples.get(RejectReason.OUT_OF_RANGE, [])
    out_of_range = {
        moment for moment, values in expected.items() if not all(_exact(v) for v in values)
    }
    assert {m: v for m, v in got.items() if m not in out_of_range} == {
        m: v for m, v in expected.items() if m not in out_of_range
    }
    assert have.rejected == want.rejected + have.rejections.get(RejectReason.OUT_OF_RANGE, 0)
    assert have.rows_read == want.rows_read
    assert len(refused) <= have.rejected
    if not refused:
        assert have.examples == want.examples
        assert have.duplicates == want.duplicates
        assert (have.first_time, have.last_time) == (want.first_time, want.last_time)


def _exact(value: Decimal) -> bool:
    try:
        to_exact_decimal(value)
    except ValueError:
        return False
    return True


def test_frames_hold_exact_decimals_and_utc_times() -> None:
    text = f"time,open,high,low,close\n{int(T0.timestamp())},0.1,0.2,0.1,0.2\n"
    summary = CsvSummary()
    (frame,) = parse_candle_frames(text.splitlines(True), Timeframe.M1, summary=summary)
    assert frame.schema["open_time"] == pl.Datetime("us", "UTC")
    assert frame.schema["open"] == pl.Decimal(38, 18)
    assert frame.get_column("volume").to_list() == [Decimal(0)]
    assert not summary.has_volume


def test_plain_rows_take_the_columnar_way() -> None:
    """Speed depends on it: plain rows never go row by row."""
    from tradeos.market.csv_candles import detect_layout
    from tradeos.market.csv_frames import _plain_rows, _reader_chunk

    at = T0 + timedelta(hours=1)
    rows = [
        [str(int(at.timestamp())), "1.5", "2", "1", "1.75", "10"],
        [str(int(at.timestamp()) * 1000), " 1.5", "2 ", "1", "1.75", "10"],
        [at.strftime("%Y-%m-%d %H:%M:%S"), "1", "1", "1", "1", "0"],
        [at.strftime("%Y-%m-%dT%H:%M:%SZ"), "1", "1", "1", "1", "0"],
        [at.isoformat(), "1", "1", "1", "1", "0"],
        [
            at.strftime("%Y-%m-%d %H:%M"),
            "12345678901234567890.123456789012345678",
            "2e40",
            "1",
            "1",
            "0",
        ],
        ["2024-03-05", "1", "1", "1", "1", "0"],
    ]
    layout = detect_layout(["time", "open", "high", "low", "close", "volume"])
    lines = [",".join(row) + "\n" for row in rows]
    chunk = _reader_chunk(csv.reader(lines), 1, layout)
    assert chunk is not None and chunk.fields is not None
    frame, positions = _plain_rows(chunk.fields, chunk.positions, Timeframe.H1)
    assert positions.tolist() == [0, 1, 2, 3, 4, 6]  # the exponent goes row by row
    assert frame.height == 6
    off_boundary, _ = _plain_rows(chunk.fields.head(1), chunk.positions[:1], Timeframe.D1)
    assert off_boundary.height == 0


def test_plain_lines_are_split_by_polars_and_others_by_the_csv_reader() -> None:
    from tradeos.market.csv_candles import detect_layout
    from tradeos.market.csv_frames import _plain_chunk

    layout = detect_layout(["time", "open", "high", "low", "close", "volume"])
    plain = ["1709514000,1,2,1,1,5\n", "1709514060,1,2,1,1,5\r\n"]
    chunk = _plain_chunk(plain, "".join(plain), 1, layout, ",")
    assert chunk is not None and chunk.fields is not None
    assert chunk.fields.get_column("time").to_list() == ["1709514000", "1709514060"]
    assert chunk.row(1) == ["1709514060", "1", "2", "1", "1", "5"]
    assert chunk.line(1) == 3
    for odd in (
        [*plain, "\n"],  # an empty line
        [*plain, "1709514120,1,2,1,1\n"],  # a field short
        [*plain, "1709514120,1,2,1,1,5\r"],  # a bare carriage return
        [*plain, "1709514120,1,2,1,1,5\x00\n"],
    ):
        assert _plain_chunk(odd, "".join(odd), 1, layout, ",") is None


def test_a_quoted_field_sends_the_rest_of_the_file_to_the_csv_reader() -> None:
    at = int(T0.timestamp())
    text = (
        "time,open,high,low,close,volume\n"
        + "".join(f"{at + 60 * n},1,2,1,1,5\n" for n in range(5))
        + f'{at + 300},"1.5",2,1,"1\n.5",5\n'  # a line break inside quotes
        + "".join(f"{at + 60 * n},1,2,1,1,5\n" for n in range(6, 9))
    )
    summary = assert_same(text, Timeframe.M1, chunk_rows=3)
    assert summary.rejected == 1 and summary.bars == 8
