"""CSV candle parsing: layouts, times, rejections, exact decimals, streaming, round trip."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos.market.csv_candles import (
    CsvLayoutError,
    CsvSummary,
    Layout,
    ParsedRow,
    Rejected,
    RejectReason,
    _on_boundary,
    bar_batches,
    detect_layout,
    parse_candles,
    parse_time,
    sniff_delimiter,
)
from tradeos.market.providers.base import Bar
from tradeos.market.timeframes import Timeframe, floor_time

SAMPLES = Path(__file__).parent / "csv"
JAN1 = datetime(2024, 1, 1, tzinfo=UTC)


def D(text: str) -> Decimal:
    return Decimal(text)


def parse(text: str, timeframe: Timeframe = Timeframe.M1) -> list[ParsedRow]:
    return list(parse_candles(text.splitlines(keepends=True), timeframe))


def bars(text: str, timeframe: Timeframe = Timeframe.M1) -> list[Bar]:
    rows = parse(text, timeframe)
    assert all(isinstance(r, Bar) for r in rows), rows
    return [r for r in rows if isinstance(r, Bar)]


def rejected(text: str, timeframe: Timeframe = Timeframe.M1) -> list[Rejected]:
    return [r for r in parse(text, timeframe) if isinstance(r, Rejected)]


def read_sample(name: str, timeframe: Timeframe) -> tuple[list[ParsedRow], CsvSummary]:
    summary = CsvSummary()
    with (SAMPLES / name).open(newline="", encoding="utf-8-sig") as f:
        rows = list(parse_candles(f, timeframe, summary=summary))
    return rows, summary


# --- layouts ---------------------------------------------------------------------------------


def test_epoch_seconds_timestamp_column() -> None:
    text = (
        "timestamp,open,high,low,close,volume\n1704067200,1,2,0.5,1.5,10\n1704067260,1.5,2,1,1,3\n"
    )
    assert bars(text) == [
        Bar(JAN1, D("1"), D("2"), D("0.5"), D("1.5"), D("10")),
        Bar(JAN1 + timedelta(minutes=1), D("1.5"), D("2"), D("1"), D("1"), D("3")),
    ]


def test_epoch_milliseconds() -> None:
    text = "open_time,open,high,low,close,volume\n1704067200000,1,2,0.5,1.5,10\n"
    assert bars(text)[0].open_time == JAN1


def test_iso_with_z_and_offsets() -> None:
    text = (
        "time,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2024-01-01T01:01:00+01:00,1,2,0.5,1.5,10\n"
        "2024-01-01T00:02:00.000Z,1,2,0.5,1.5,10\n"
    )
    times = [b.open_time for b in bars(text)]
    assert times == [JAN1 + timedelta(minutes=m) for m in (0, 1, 2)]
    assert all(t.tzinfo is UTC for t in times)


def test_iso_naive_is_utc() -> None:
    text = "datetime,open,high,low,close,volume\n2024-01-01 00:05:00,1,2,0.5,1.5,10\n"
    (bar,) = bars(text, Timeframe.M5)
    assert bar.open_time == JAN1 + timedelta(minutes=5)
    assert bar.open_time.utcoffset() == timedelta(0)


def test_plain_dates_for_daily_bars() -> None:
    text = "date,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,10\n2024-01-02,1,2,0.5,1.5,10\n"
    assert [b.open_time for b in bars(text, Timeframe.D1)] == [JAN1, JAN1 + timedelta(days=1)]


def test_yahoo_upper_case_with_adj_close() -> None:
    rows, summary = read_sample("yahoo.csv", Timeframe.D1)
    assert rows[0] == Bar(
        datetime(2024, 1, 2, tzinfo=UTC),
        D("187.149994"),
        D("188.440002"),
        D("183.889999"),
        D("185.639999"),  # Close, not Adj Close 184.938217
        D("82488700"),
    )
    assert summary.layout is not None
    assert summary.layout.columns[summary.layout.close] == "Close"
    assert (summary.rows_read, summary.bars, summary.rejected) == (3, 3, 0)


def test_pandas_export_with_empty_first_header() -> None:
    rows, summary = read_sample("pandas_index.csv", Timeframe.H1)
    assert [r.open_time for r in rows if isinstance(r, Bar)] == [
        JAN1 + timedelta(hours=h) for h in range(3)
    ]
    assert summary.layout is not None and summary.layout.time == 0


def test_pandas_export_with_unnamed_0() -> None:
    rows, _ = read_sample("pandas_unnamed.csv", Timeframe.D1)
    assert rows == [
        Bar(JAN1, D("1.1"), D("1.3"), D("1.0"), D("1.2"), D("10.5")),
        Bar(JAN1 + timedelta(days=1), D("1.2"), D("1.4"), D("1.1"), D("1.3"), D("11")),
    ]


def test_binance_klines_without_header() -> None:
    rows, summary = read_sample("binance_klines.csv", Timeframe.H1)
    assert summary.layout is not None and not summary.layout.has_header
    assert rows[0] == Bar(
        JAN1,
        D("42283.58000000"),
        D("42554.57000000"),
        D("42261.02000000"),
        D("42475.23000000"),
        D("1271.68108000"),
    )
    assert len(rows) == 3 and summary.bars == 3


def test_headerless_five_columns_has_no_volume() -> None:
    text = "1704067200,1,2,0.5,1.5\n1704067260,1,2,0.5,1.5\n"
    summary = CsvSummary()
    rows = list(parse_candles(text.splitlines(), Timeframe.M1, summary=summary))
    assert [r.volume for r in rows if isinstance(r, Bar)] == [0, 0]
    assert not summary.has_volume


def test_binance_microsecond_open_times() -> None:
    line = "1704067200000000,1,2,0.5,1.5,10,1704070799999999,1,1,1,1,0\n"
    assert bars(line, Timeframe.H1)[0].open_time == JAN1


def test_semicolon_with_decimal_commas() -> None:
    rows, summary = read_sample("semicolon.csv", Timeframe.D1)
    assert summary.delimiter == ";"
    assert rows == [
        Bar(JAN1, D("1.5"), D("2.25"), D("1.0"), D("2.0"), D("1000")),
        Bar(JAN1 + timedelta(days=1), D("2.0"), D("2.5"), D("1.75"), D("2.5"), D("1200.5")),
    ]


def test_metatrader_tab_separated_date_and_time_columns() -> None:
    rows, summary = read_sample("metatrader.csv", Timeframe.M5)
    assert summary.delimiter == "\t"
    layout = summary.layout
    assert layout is not None and layout.time_of_day is not None
    assert layout.volume is not None and layout.columns[layout.volume] == "<VOL>"
    assert rows[0] == Bar(
        datetime(2024, 1, 31, 13, 45, tzinfo=UTC),
        D("1.08412"),
        D("1.08431"),
        D("1.08401"),
        D("1.08420"),
        D("0"),
    )


def test_cryptodatadownload_prefers_unix_and_base_volume() -> None:
    rows, summary = read_sample("cryptodatadownload.csv", Timeframe.H1)
    layout = summary.layout
    assert layout is not None
    assert layout.columns[layout.time] == "unix"
    assert layout.volume is not None and layout.columns[layout.volume] == "Volume BTC"
    assert [r.open_time for r in rows if isinstance(r, Bar)] == [
        JAN1 + timedelta(hours=1),
        JAN1,
    ]


@pytest.mark.parametrize(
    ("header", "volume"),
    [
        (["time", "o", "h", "l", "c", "v"], "v"),
        (["time", "open", "high", "low", "close", "quote_volume", "volume"], "volume"),
        (["time", "open", "high", "low", "close", "Volume USD", "Volume BTC"], "Volume USD"),
        (["time", "open", "high", "low", "close", "Vol."], "Vol."),
        (["time", "open", "high", "low", "close", "trades"], None),
    ],
)
def test_volume_column_rule(header: list[str], volume: str | None) -> None:
    layout = detect_layout(header)
    assert (None if layout.volume is None else header[layout.volume]) == volume


@pytest.mark.parametrize(
    ("header", "time"),
    [
        (["Open Time", "Open", "High", "Low", "Close"], "Open Time"),
        (["DATE", "Timestamp", "OPEN", "HIGH", "LOW", "CLOSE"], "Timestamp"),
        (["Date", "Time", "Open", "High", "Low", "Close"], "Date"),
        (["\ufeffDate", "Open", "High", "Low", "Close"], "\ufeffDate"),
        (["Unnamed: 0", "open", "high", "low", "close"], "Unnamed: 0"),
        (["", "open", "high", "low", "close"], ""),
    ],
)
def test_time_column_names(header: list[str], time: str) -> None:
    layout = detect_layout(header)
    assert header[layout.time] == time


def test_close_time_is_not_the_time_column() -> None:
    with pytest.raises(CsvLayoutError, match="no time"):
        detect_layout(["close_time", "open", "high", "low", "close"])


def test_layout_error_names_every_missing_column() -> None:
    with pytest.raises(CsvLayoutError) as error:
        detect_layout(["Date", "Open", "High", "Adj Close", "Volume"])
    message = str(error.value)
    assert "no low" in message and "close" in message and "'Adj Close'" in message
    assert "no time" not in message and "no open" not in message


def test_empty_file_is_a_layout_error() -> None:
    with pytest.raises(CsvLayoutError, match="no rows"):
        list(parse_candles(["\n", "  \n"], Timeframe.M1))


def test_header_only_gives_nothing() -> None:
    assert parse("time,open,high,low,close\n") == []


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        (["a,b,c\n", "1,2,3\n"], ","),
        (["a;b;c\n", "1,5;2,5;3\n"], ";"),
        (["a\tb\tc\n", "1\t2\t3\n"], "\t"),
        (["a|b|c\n"], "|"),
        (["time\n"], ","),
        ([], ","),
    ],
)
def test_sniff_delimiter(sample: list[str], delimiter: str) -> None:
    assert sniff_delimiter(sample) == delimiter


# --- times -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1704067200", JAN1),
        ("1704067200000", JAN1),
        ("1704067200123", JAN1 + timedelta(milliseconds=123)),
        ("1704067200000000", JAN1),
        ("1704067200000000000", JAN1),
        ("1704067200.5", JAN1 + timedelta(seconds=0.5)),
        ("-86400", datetime(1969, 12, 31, tzinfo=UTC)),
        ("2024-01-01", JAN1),
        ("20240101", JAN1),
        ("2024-01-01T00:00:00Z", JAN1),
        ("2024-01-01T00:00:00.000Z", JAN1),
        ("2024-01-01 00:00", JAN1),
        ("2024-01-01 00:00:00", JAN1),
        ("2024-01-01 00:00:00+00:00", JAN1),
        ("2024-01-01T02:00:00+02:00", JAN1),
        ("2023-12-31T19:00:00-05:00", JAN1),
        ("2024-01-01 00:00:00 UTC", JAN1),
        ("2024/01/01", JAN1),
        ("2024/01/01 00:00:00", JAN1),
        ("2024.01.01 00:00", JAN1),
        ("  2024-01-01  ", JAN1),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("01/02/2024", "ambiguous date"),
        ("31/01/2024", "ambiguous date"),
        ("31.01.2024 13:45:00.000", "ambiguous date"),
        ("yesterday", "unrecognized time"),
        ("", "empty time"),
        ("2024-13-01", "unrecognized time"),
        ("1704067200000000001", "finer than a microsecond"),
        ("99999999999999999999999", "out of range"),
    ],
)
def test_parse_time_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text)


@settings(max_examples=300)
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    ),
    st.sampled_from(Timeframe),
    st.booleans(),
)
def test_boundary_check_agrees_with_floor_time(
    moment: datetime, timeframe: Timeframe, snap: bool
) -> None:
    if snap:
        moment = floor_time(moment, timeframe)
    assert _on_boundary(moment, timeframe.seconds) == (floor_time(moment, timeframe) == moment)


# --- rejections ------------------------------------------------------------------------------

HEADER = "time,open,high,low,close,volume\n"


@pytest.mark.parametrize(
    ("row", "reason", "detail"),
    [
        ("yesterday,1,2,0.5,1.5,10", RejectReason.BAD_TIME, "unrecognized time"),
        ("01/02/2024,1,2,0.5,1.5,10", RejectReason.BAD_TIME, "ambiguous date"),
        ("1704067200,1,2,0.5,abc,10", RejectReason.BAD_NUMBER, "close 'abc'"),
        ("1704067200,1,2,0.5,1.5,", RejectReason.BAD_NUMBER, "volume ''"),
        ("1704067200,NaN,2,0.5,1.5,10", RejectReason.BAD_NUMBER, "not finite"),
        ("1704067200,1,Infinity,0.5,1.5,10", RejectReason.BAD_NUMBER, "not finite"),
        ("1704067200,1,2,-0.5,1.5,10", RejectReason.NEGATIVE, "low -0.5"),
        ("1704067200,1,2,0.5,1.5,-1", RejectReason.NEGATIVE, "volume -1"),
        ("1704067200,1,1.4,0.5,1.5,10", RejectReason.INCONSISTENT, "high 1.4"),
        ("1704067200,1,0.9,0.5,0.8,10", RejectReason.INCONSISTENT, "high 0.9"),
        ("1704067200,1,2,1.1,1.5,10", RejectReason.INCONSISTENT, "low 1.1"),
        ("1704067200,1,2,0.5,0.4,10", RejectReason.INCONSISTENT, "low 0.5"),
        ("1704067230,1,2,0.5,1.5,10", RejectReason.OFF_BOUNDARY, "1m bar"),
        ("1704067200123,1,2,0.5,1.5,10", RejectReason.OFF_BOUNDARY, "1m bar"),
        ("1704067200,1,2,0.5,1.5", RejectReason.FIELD_COUNT, "5 fields, expected 6"),
        ("1704067200,1,2,0.5,1.5,10,7", RejectReason.FIELD_COUNT, "7 fields, expected 6"),
    ],
)
def test_each_rejection_reason(row: str, reason: RejectReason, detail: str) -> None:
    (refused,) = rejected(HEADER + "\n" + row + "\n")
    assert refused.line_number == 3
    assert refused.reason is reason
    assert detail in refused.detail
    assert str(refused).startswith(f"line 3: {reason.value}")


@pytest.mark.parametrize(
    ("timeframe", "ok", "off"),
    [
        (Timeframe.M5, "2024-01-01T00:05:00Z", "2024-01-01T00:06:00Z"),
        (Timeframe.H4, "2024-01-01T04:00:00Z", "2024-01-01T03:00:00Z"),
        (Timeframe.D1, "2024-01-02", "2024-01-02T00:00:00+01:00"),
        (Timeframe.W1, "2024-01-01", "2024-01-02"),  # 2024-01-01 is a Monday
    ],
)
def test_boundaries_per_timeframe(timeframe: Timeframe, ok: str, off: str) -> None:
    rows = parse(f"{HEADER}{ok},1,2,0.5,1.5,1\n{off},1,2,0.5,1.5,1\n", timeframe)
    assert isinstance(rows[0], Bar)
    assert isinstance(rows[1], Rejected) and rows[1].reason is RejectReason.OFF_BOUNDARY


def test_empty_rows_are_skipped_silently_and_lines_keep_counting() -> None:
    text = HEADER + "\n   \n,,,,,\n1704067200,1,2,0.5,1.5,10\n\nbad,1,2,0.5,1.5,10\n"
    summary = CsvSummary()
    rows = list(parse_candles(text.splitlines(keepends=True), Timeframe.M1, summary=summary))
    assert isinstance(rows[0], Bar)
    assert isinstance(rows[1], Rejected) and rows[1].line_number == 7
    assert (summary.rows_read, summary.bars, summary.rejected) == (2, 1, 1)


def test_trailing_empty_fields_are_tolerated() -> None:
    assert len(bars(HEADER + "1704067200,1,2,0.5,1.5,10,,\n")) == 1


def test_zero_prices_are_not_negative() -> None:
    assert len(bars(HEADER + "1704067200,0,0,0,0,0\n")) == 1


# --- decimals --------------------------------------------------------------------------------


def test_decimals_are_exact_as_written() -> None:
    (bar,) = bars(HEADER + "1704067200,0.1,0.30,0.1,0.2,1e-8\n")
    assert bar.open == Decimal("0.1") and str(bar.open) == "0.1"
    assert str(bar.high) == "0.30"
    assert bar.close == Decimal("0.2") and bar.close != 0.2  # never a float
    assert bar.volume == Decimal("0.00000001")
    assert all(type(v) is Decimal for v in (bar.open, bar.high, bar.low, bar.close, bar.volume))


def test_quoted_fields() -> None:
    (bar,) = bars('"time","open","high","low","close"\n"2024-01-01 00:00","1","2","0.5","1.5"\n')
    assert bar.open_time == JAN1 and bar.volume == 0


# --- duplicates and the summary --------------------------------------------------------------


def test_duplicates_are_counted_and_the_later_row_wins_in_batches() -> None:
    text = (
        HEADER
        + "1704067200,1,2,0.5,1.5,10\n"
        + "1704067260,1,2,0.5,1.5,20\n"
        + "1704067200,1,3,0.5,1.5,30\n"  # the same open time again: wins
        + "1704067320,1,2,0.5,1.5,40\n"
    )
    summary = CsvSummary()
    rows = list(parse_candles(text.splitlines(), Timeframe.M1, summary=summary))
    assert summary.duplicates == 1 and summary.bars == 4
    got = [b for r in rows if isinstance(r, Bar) for b in [r]]
    (batch,) = list(bar_batches(got, size=10))
    assert [(b.open_time, b.volume) for b in batch] == [
        (JAN1, 30),
        (JAN1 + timedelta(minutes=1), 20),
        (JAN1 + timedelta(minutes=2), 40),
    ]
    # Across batches the later batch is upserted later, so the later row still wins.
    small = list(bar_batches(got, size=1))
    assert [b.volume for batch in small for b in batch] == [10, 20, 30, 40]
    assert all(len({b.open_time for b in batch}) == len(batch) for batch in small)


def test_bar_batches_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(bar_batches([], size=0))


def test_duplicates_far_apart_and_unsorted() -> None:
    summary = CsvSummary()
    week = Timeframe.W1
    times = ["1970-01-05", "2024-01-01", "1999-12-27", "2024-01-01", "1970-01-05"]
    text = "date,open,high,low,close\n" + "".join(f"{t},1,1,1,1\n" for t in times)
    list(parse_candles(text.splitlines(), week, summary=summary))
    assert (summary.bars, summary.duplicates) == (5, 2)
    assert summary.first_time == datetime(1970, 1, 5, tzinfo=UTC)
    assert summary.last_time == JAN1


def test_summary_groups_rejections_and_keeps_few_examples() -> None:
    def lines() -> Iterator[str]:
        yield HEADER
        for i in range(10_000):
            yield f"{1704067200 + 60 * i},1,2,0.5,1.5,10\n"
            yield f"{1704067230 + 60 * i},1,2,0.5,1.5,10\n"  # off the minute
            if i % 10 == 0:
                yield f"{1704067200 + 60 * i},1,2,0.5,x,10\n"

    summary = CsvSummary(max_examples=3)
    for _ in parse_candles(lines(), Timeframe.M1, summary=summary):
        pass
    assert summary.rows_read == 21_000
    assert summary.bars == 10_000
    assert summary.rejected == 11_000
    assert summary.rejections == {RejectReason.OFF_BOUNDARY: 10_000, RejectReason.BAD_NUMBER: 1000}
    assert [r.line_number for r in summary.examples[RejectReason.OFF_BOUNDARY]] == [3, 6, 8]
    assert len(summary.examples[RejectReason.BAD_NUMBER]) == 3
    assert summary.has_volume
    text = "\n".join(summary.describe())
    assert "rows read: 21000, bars: 10000, rejected: 11000" in text
    assert "rejected 10000 × open time not on the timeframe's boundary, e.g." in text
    assert "line 3: open time not on the timeframe's boundary" in text
    assert "volume stored as 0" not in text


def test_summary_says_when_there_is_no_volume_column() -> None:
    summary = CsvSummary()
    list(
        parse_candles(
            ["date,open,high,low,close\n", "2024-01-01,1,1,1,1\n"], Timeframe.D1, summary=summary
        )
    )
    assert not summary.has_volume
    assert "the file has no volume column: volumes stored as 0" in summary.describe()


# --- streaming -------------------------------------------------------------------------------


def minute_lines(count: int, consumed: list[int] | None = None) -> Iterator[str]:
    yield "timestamp,open,high,low,close,volume\n"
    for i in range(count):
        if consumed is not None:
            consumed[0] += 1
        yield f"{1704067200 + 60 * i},42000.{i % 100},42100.5,41900.25,42050.{i % 7},{i % 997}.5\n"


def test_streaming_reads_lazily() -> None:
    consumed = [0]
    rows = parse_candles(minute_lines(200_000, consumed), Timeframe.M1)
    first = next(rows)
    assert isinstance(first, Bar) and first.open_time == JAN1
    assert consumed[0] < 100  # a sniffing sample, not the file


def test_streaming_memory_stays_flat() -> None:
    summary = CsvSummary()
    tracemalloc.start()
    try:
        count = 0
        for _ in parse_candles(minute_lines(20_000), Timeframe.M1, summary=summary):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000 and summary.bars == 20_000
    assert peak < 1_000_000, peak  # 20k Bars held in a list would take over 10 MB


def test_a_long_file_streams_through() -> None:
    # Its speed is measured in bench/candles.py ("parse only"), not here.
    summary = CsvSummary()
    count = sum(1 for _ in parse_candles(minute_lines(200_000), Timeframe.M1, summary=summary))
    assert count == summary.bars == 200_000


# --- round trip ------------------------------------------------------------------------------

prices = st.decimals(
    min_value=Decimal(0), max_value=Decimal("1e12"), allow_nan=False, allow_infinity=False
)


@st.composite
def bar_lists(draw: st.DrawFn, timeframe: Timeframe) -> list[Bar]:
    starts = draw(
        st.lists(
            st.integers(min_value=0, max_value=(4_000_000_000 // timeframe.seconds)),
            min_size=1,
            max_size=20,
            unique=True,
        )
    )
    # A Monday after March 1973: earlier epoch milliseconds would read as seconds.
    origin = datetime(1975, 1, 6, tzinfo=UTC)
    out = []
    for start in starts:
        four = sorted(draw(st.lists(prices, min_size=4, max_size=4)))
        o, c = draw(st.permutations(four[1:3]))
        out.append(
            Bar(
                origin + timedelta(seconds=start * timeframe.seconds),
                o,
                four[3],
                four[0],
                c,
                draw(prices),
            )
        )
    return out


TIME_WRITERS: dict[str, Callable[[datetime], str]] = {
    "epoch s": lambda t: str(int(t.timestamp())),
    "epoch ms": lambda t: str(int(t.timestamp()) * 1000),
    "iso z": lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "iso naive": lambda t: t.strftime("%Y-%m-%d %H:%M:%S"),
    "iso offset": lambda t: t.astimezone(timezone(timedelta(hours=-5))).isoformat(),
}


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(Timeframe).flatmap(lambda tf: st.tuples(st.just(tf), bar_lists(tf))),
    st.sampled_from(sorted(TIME_WRITERS)),
    st.sampled_from([",", ";", "\t"]),
    st.sampled_from(
        [
            ("timestamp", "open", "high", "low", "close", "volume"),
            ("Date", "Open", "High", "Low", "Close", "Volume"),
            ("", "o", "h", "l", "c", "v"),
            ("OPEN_TIME", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME_BTC"),
        ]
    ),
)
def test_round_trip(
    case: tuple[Timeframe, list[Bar]],
    time_format: str,
    delimiter: str,
    header: tuple[str, ...],
) -> None:
    timeframe, originals = case
    write_time = TIME_WRITERS[time_format]
    lines = [delimiter.join(header) + "\n"]
    for b in originals:
        fields = [write_time(b.open_time), *(str(v) for v in (b.open, b.high, b.low, b.close))]
        lines.append(delimiter.join([*fields, str(b.volume)]) + "\n")
    parsed = list(parse_candles(lines, timeframe))
    assert parsed == originals
    # Exactly as written: the same digits and exponent, not only the same value.
    for got, want in zip(parsed, originals, strict=True):
        assert isinstance(got, Bar)
        assert [str(v) for v in (got.open, got.high, got.low, got.close, got.volume)] == [
            str(v) for v in (want.open, want.high, want.low, want.close, want.volume)
        ]


def test_layout_is_frozen_and_describes_itself() -> None:
    layout = detect_layout(["Date", "Time", "Open", "High", "Low", "Close"])
    assert isinstance(layout, Layout) and layout.width == 6
    assert layout.describe() == (
        "time 'Date' + 'Time', open 'Open', high 'High', low 'Low', close 'Close', volume -"
    )


def test_metatrader_history_without_header_has_date_and_time_fields() -> None:
    rows, summary = read_sample("metatrader_history.csv", Timeframe.M1)
    assert summary.layout is not None and summary.layout.time_of_day == 1
    assert rows[1] == Bar(
        datetime(2024, 1, 31, 13, 46, tzinfo=UTC),
        D("1.08420"),
        D("1.08425"),
        D("1.08390"),
        D("1.08399"),
        D("287"),
    )
