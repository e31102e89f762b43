"""Importing a CSV file of candles: a parser thread reads, the event loop writes.

`import_candle_file` reads the file in columns (`csv_frames`) in a thread of its own and hands
over checked frames of bars; the event loop turns each into the driver's rows, compares them
with the stored bars and writes them. Most of the parsing runs in polars, which lets go of
the GIL, and so does SQLite while it inserts: the two overlap, on two cores as much as on
more. (A second process was slower: its start costs half a second of imports, and it won
less than that even on a million rows; bench/RESULTS.md.) The queue between them holds a few
frames, so memory stays small however long the file.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Union

import polars as pl

from tradeos.market.csv_candles import CsvLayoutError, CsvSummary
from tradeos.market.csv_frames import FRAME_COLUMNS, parse_candle_frames
from tradeos.market.timeframes import Timeframe

if TYPE_CHECKING:
    from tradeos.core.db import Database
    from tradeos.market.service import CandleWrite

# Frames parsed ahead of the writer: enough to keep both busy, few enough to keep memory flat.
_QUEUE_BATCHES: Final = 4
# How often the writer looks whether the parser is still alive while it waits.
_POLL_SECONDS: Final = 0.5


class ImportFailed(RuntimeError):
    """The parser failed on something other than the file's layout (the file's encoding,
    a NUL byte, a read error)."""


@dataclass(frozen=True)
class CandleRecords:
    """A batch of bars, checked and converted for the bulk insert: `records[i]` holds the
    values of `CANDLE_COLUMNS`; no open time twice. `first` / `last`: the earliest and the
    latest open time of the batch."""

    first: datetime
    last: datetime
    records: list[tuple[Any, ...]]


@dataclass(frozen=True)
class _Parsed:
    frame: pl.DataFrame
    read_chars: int


@dataclass(frozen=True)
class _Done:
    summary: CsvSummary


@dataclass(frozen=True)
class _Failed:
    message: str
    layout: bool  # the file's columns could not be read (CsvLayoutError)


_Message = Union[_Parsed, _Done, _Failed]  # noqa: UP007 - a runtime alias, before 3.12


class _CountingLines:
    """The lines of a text file, counting the characters read (for the progress bar)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.read_chars = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.read_chars += len(line)
            yield line


def parse_file(
    path: Path, timeframe: Timeframe, out: queue.Queue[_Message], stop: threading.Event
) -> None:
    """The parser's work: the file's bars as frames (`csv_frames.FRAME_COLUMNS`) on `out`,
    each with how far into the file the parser has read, then `_Done` with the summary, or
    `_Failed`. Ends early once `stop` is set."""
    last: _Message
    try:
        summary = CsvSummary()
        with path.open(encoding="utf-8-sig", newline="") as handle:
            lines = _CountingLines(handle)
            for frame in parse_candle_frames(lines, timeframe, summary=summary):
                if not _hand_over(out, _Parsed(frame, lines.read_chars), stop):
                    return
        last = _Done(summary)
    except CsvLayoutError as error:
        last = _Failed(str(error), layout=True)
    except Exception as error:  # reported to the writer, which raises it there
        last = _Failed(f"{type(error).__name__}: {error}", layout=False)
    _hand_over(out, last, stop)


def candle_records(
    frame: pl.DataFrame, instrument_id: int, timeframe: Timeframe, source: str, backend: str
) -> CandleRecords:
    """A parsed frame as records for the bulk insert on `backend`: what the column types would
    bind (fixed-scale decimal text; naive UTC time text on SQLite, aware times on PostgreSQL)."""
    times = frame.get_column("open_time")
    if backend == "sqlite":
        open_times = times.dt.strftime("%Y-%m-%d %H:%M:%S%.6f").to_list()
    else:
        open_times = [moment.astimezone(UTC) for moment in times.to_list()]
    prices = [frame.get_column(name).cast(pl.String).to_list() for name in FRAME_COLUMNS[1:]]
    records = list(
        zip(
            repeat(instrument_id),
            repeat(timeframe.value),
            open_times,
            *prices,
            repeat(source),
            strict=False,  # repeat() is endless: the columns set the length
        )
    )
    first, last = times.min(), times.max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    return CandleRecords(first.astimezone(UTC), last.astimezone(UTC), records)


def _hand_over(out: queue.Queue[_Message], message: _Message, stop: threading.Event) -> bool:
    """Put `message` on `out`, waiting while it is full; False if `stop` was set meanwhile."""
    while True:
        if stop.is_set():
            return False
        try:
            out.put(message, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue


def _next(
    out: queue.Queue[_Message],
    alive: Callable[[], bool],
) -> _Message:
    """The parser's next message; `ImportFailed` if it ended without one."""
    while True:
        try:
            return out.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if not alive():
                try:  # it may have put its last message just before it ended
                    return out.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    raise ImportFailed("the parser ended unexpectedly") from None


async def import_candle_file(
    database: Database,
    path: Path,
    instrument_id: int,
    timeframe: Timeframe,
    *,
    source: str = "csv",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[CandleWrite, CsvSummary]:
    """Upsert the candles of the CSV file at `path`, each batch in a short unit of work of its
    own (a long import never holds the database). Returns what was written and what the file
    held; `on_progress(characters read)` after each batch. Raises `CsvLayoutError` when the
    file's columns cannot be read. Idempotent: importing a file twice changes nothing the
    second time."""
    import asyncio

    from tradeos.market import service

    parser = _Parser(path, timeframe)
    backend = database.backend
    written = service.CandleWrite()
    try:
        while True:
            message = await asyncio.to_thread(parser.next)
            if isinstance(message, _Done):
                return written, message.summary
            if isinstance(message, _Failed):
                if message.layout:
                    raise CsvLayoutError(message.message)
                raise ImportFailed(message.message)
            batch = candle_records(message.frame, instrument_id, timeframe, source, backend)
            async with database.session() as session:
                stored = await service.upsert_candle_records(
                    session, instrument_id, timeframe, batch, source
                )
            written = written.plus(stored)
            if on_progress is not None:
                on_progress(message.read_chars)
    finally:
        parser.close()


class _Parser:
    """`parse_file` in a thread of its own."""

    def __init__(self, path: Path, timeframe: Timeframe) -> None:
        self.out: queue.Queue[_Message] = queue.Queue(_QUEUE_BATCHES)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=parse_file,
            args=(path, timeframe, self.out, self.stop),
            name="tradeos-csv-parser",
            daemon=True,
        )
        self.thread.start()

    def next(self) -> _Message:
        return _next(self.out, self.thread.is_alive)

    def close(self) -> None:
        self.stop.set()  # a parser waiting to hand over a frame gives up
        self.thread.join(5)
