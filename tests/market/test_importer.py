"""Importing a CSV file of candles into the database (the path of `tradeos import candles`),
on the suite's backend: exact values, idempotent re-import, changes, odd rows, failures."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from tradeos.core.db import Database
from tradeos.market import importer
from tradeos.market.csv_candles import CsvLayoutError, RejectReason
from tradeos.market.models import Candle, Instrument
from tradeos.market.timeframes import Timeframe

T0 = datetime(2024, 3, 4, tzinfo=UTC)
HEADER = "time,open,high,low,close,volume\n"


async def add_instrument(database: Database) -> int:
    async with database.session() as session:
        instrument = Instrument(
            symbol="ACME",
            name="Acme",
            asset_class="equity",
            base="ACME",
            quote="USD",
            tick_size=Decimal("0.01"),
            quantity_step=Decimal(1),
            status="trading",
            provider="csv",
        )
        session.add(instrument)
        await session.flush()
        return instrument.id


async def stored(database: Database, instrument_id: int) -> dict[datetime, tuple[Decimal, ...]]:
    async with database.session(write=False) as session:
        rows = await session.execute(
            select(Candle).where(Candle.instrument_id == instrument_id).order_by(Candle.open_time)
        )
        return {
            c.open_time: (c.open, c.high, c.low, c.close, c.volume, c.source)
            for c in rows.scalars()
        }


def minutes(count: int, close: str = "1.5") -> str:
    return "".join(
        f"{int((T0 + timedelta(minutes=n)).timestamp())},1.25,2.000000000000000001,1,{close},"
        f"{n}.5\n"
        for n in range(count)
    )


async def test_a_file_is_stored_exactly_and_a_second_import_changes_nothing(
    database: Database, tmp_path: Path
) -> None:
    instrument_id = await add_instrument(database)
    path = tmp_path / "acme.csv"
    path.write_text(HEADER + minutes(25_000))  # three frames
    progress: list[int] = []

    written, summary = await importer.import_candle_file(
        database, path, instrument_id, Timeframe.M1, on_progress=progress.append
    )
    assert (written.inserted, written.updated, written.unchanged) == (25_000, 0, 0)
    assert summary.bars == 25_000 and summary.rejected == 0
    assert progress == sorted(progress) and progress[-1] == len(path.read_text())
    bars = await stored(database, instrument_id)
    assert len(bars) == 25_000
    assert bars[T0] == (
        Decimal("1.25"), Decimal("2.000000000000000001"), Decimal(1), Decimal("1.5"),
        Decimal("0.5"), "csv",
    )  # fmt: skip

    again, _ = await importer.import_candle_file(database, path, instrument_id, Timeframe.M1)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 25_000)
    assert await stored(database, instrument_id) == bars


async def test_a_changed_bar_is_updated_and_new_ones_are_added(
    database: Database, tmp_path: Path
) -> None:
    instrument_id = await add_instrument(database)
    path = tmp_path / "acme.csv"
    path.write_text(HEADER + minutes(3))
    await importer.import_candle_file(database, path, instrument_id, Timeframe.M1)
    path.write_text(HEADER + minutes(5, close="1.75"))
    written, _ = await importer.import_candle_file(database, path, instrument_id, Timeframe.M1)
    assert (written.inserted, written.updated, written.unchanged) == (2, 3, 0)
    assert {bar[3] for bar in (await stored(database, instrument_id)).values()} == {Decimal("1.75")}


async def test_odd_rows_are_refused_with_their_reason_and_the_rest_imported(
    database: Database, tmp_path: Path
) -> None:
    instrument_id = await add_instrument(database)
    at = int(T0.timestamp())
    path = tmp_path / "acme.csv"
    path.write_text(
        HEADER
        + f"{at},1,2,1,1.5,10\n"
        + f"{at + 60},1,2,1,oops,10\n"
        + f"{at + 120},1.0000000000000000001,2,1,1.5,10\n"  # not exact in NUMERIC(38,18)
        + f"{at + 180},1,2,1,1.5,10\n"
        + f"{at + 180},1,2,1,1.25,10\n"  # the same minute again: the later row wins
    )
    written, summary = await importer.import_candle_file(
        database, path, instrument_id, Timeframe.M1
    )
    assert written.inserted == 2
    assert summary.rejections == {RejectReason.BAD_NUMBER: 1, RejectReason.OUT_OF_RANGE: 1}
    assert summary.duplicates == 1
    bars = await stored(database, instrument_id)
    assert bars[T0 + timedelta(minutes=3)][3] == Decimal("1.25")


async def test_an_unreadable_file_is_refused_before_anything_is_written(
    database: Database, tmp_path: Path
) -> None:
    instrument_id = await add_instrument(database)
    path = tmp_path / "nonsense.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(CsvLayoutError, match="no time"):
        await importer.import_candle_file(database, path, instrument_id, Timeframe.M1)
    broken = tmp_path / "latin1.csv"
    broken.write_bytes(HEADER.encode() + b"1709510400,1,2,1,1.5,10\n\xff\xfe\n")
    with pytest.raises(importer.ImportFailed, match="UnicodeDecodeError"):
        await importer.import_candle_file(database, broken, instrument_id, Timeframe.M1)
    assert await stored(database, instrument_id) == {}


async def test_a_stopped_import_stops_its_parser(database: Database, tmp_path: Path) -> None:
    instrument_id = await add_instrument(database)
    path = tmp_path / "long.csv"
    path.write_text(HEADER + minutes(100_000))

    def report(_read: int) -> None:
        raise KeyboardInterrupt  # the user pressed Ctrl-C after the first frame

    with pytest.raises(KeyboardInterrupt):
        await importer.import_candle_file(
            database, path, instrument_id, Timeframe.M1, on_progress=report
        )
    await asyncio.sleep(0)
    assert not [t for t in threading.enumerate() if t.name == "tradeos-csv-parser"]
    assert len(await stored(database, instrument_id)) == 10_000  # the first frame, committed
