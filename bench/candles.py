"""Candle ingest and candle reads, TradeOS's paths vs the bare driver and framework.

    python bench/candles.py [--backend sqlite|postgresql|both] [--rows 200000] [--requests 100]
                            [--rounds 2] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
                            [--profile]

Ingest (rows/s), on fresh tables each run, the same rows for every variant:

- tradeos parse+write: the `tradeos import candles` path without its progress bar: a generated
  CSV of 1m bars through `importer.import_candle_file` (a parser thread reads it in columns
  with `csv_frames.parse_candle_frames`, the event loop writes with
  `service.upsert_candle_records`)
- tradeos write-only: the same bars parsed beforehand, through `service.upsert_candles` (the
  candle sync's path), a unit of work per batch as the import has
- raw: the same rows, already formatted as the database stores them, into an identical fresh
  table (same columns, primary key and foreign key) with the driver's bulk insert: sqlite3
  `executemany` (same pragmas) or asyncpg `copy_records_to_table`, one transaction

Reads (ms per request, sequential over one keep-alive connection): `GET
/api/v1/market/candles/{symbol}?timeframe=1m&limit=N` of a real `uvicorn --factory
tradeos.app:app_factory` process (signed-in user, rate limits raised out of the way, instrument
of provider "csv" so the stored path is taken) vs a bare Starlette app in a second uvicorn
process running the same SELECTs through SQLAlchemy Core and encoding the same JSON shape with
orjson. Without `end` (never cached), and with `end` cold (a different `end` each request: a
cache miss) and warm (the same `end`: a cache hit). Requests alternate between the two servers
in blocks, so both see the same machine load.

Prints the tables; the figures go to bench/RESULTS.md. `--profile` instead prints cProfile's
top functions of one write-only ingest and of in-process reads of 1000 and 5000 bars.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import random
import re
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SYMBOL = "BENCH-USD"
MINUTE = timedelta(minutes=1)
BENCH_FOLDER = str(Path(__file__).resolve().parent)
LIMITS = (1000, 5000)
# Formats as the database stores them (SQLAlchemy's SQLite DateTime; ExactDecimal's text).
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


# -- the bare baseline: the same SELECTs and JSON shape, no TradeOS code ------------------------

_INSTRUMENT_SQL = text("SELECT id FROM instruments WHERE symbol = :symbol")
_CANDLES_SQL = text(
    "SELECT open_time, open, high, low, close, volume FROM candles"
    " WHERE instrument_id = :instrument AND timeframe = '1m'"
    " AND open_time >= :start AND open_time < :end ORDER BY open_time DESC LIMIT :limit"
)


def _short(number: Any) -> str:
    """`100.500000000000000000` -> `100.5`: the shortest form, as TradeOS sends decimals."""
    digits = str(number)
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".")
    return digits or "0"


async def direct_candles(
    engine: AsyncEngine, symbol: str, limit: int, end: datetime | None, now: datetime
) -> bytes:
    """What GET /market/candles/{symbol}?timeframe=1m answers, by hand: window, two SELECTs,
    orjson."""
    window_end = end or now + MINUTE
    window_start = window_end.replace(second=0, microsecond=0) - MINUTE * limit
    sqlite = engine.dialect.name == "sqlite"
    bounds: tuple[Any, Any] = (window_start, window_end)
    if sqlite:
        bounds = tuple(moment.astimezone(UTC).strftime(SQLITE_TIME) for moment in bounds)
    async with engine.connect() as connection:
        instrument = await connection.scalar(_INSTRUMENT_SQL, {"symbol": symbol})
        rows = (
            await connection.execute(
                _CANDLES_SQL,
                {"instrument": instrument, "start": bounds[0], "end": bounds[1], "limit": limit},
            )
        ).all()
    # Bars not over yet are left out, as TradeOS does for stored bars.
    latest: Any = now.strftime(SQLITE_TIME) if sqlite else now
    candles = []
    for opened, o, h, lo, c, v in reversed(rows):
        if opened > latest:
            continue
        moment = f"{opened[:10]}T{opened[11:19]}Z" if sqlite else opened
        candles.append(
            {
                "time": moment,
                "open": _short(o),
                "high": _short(h),
                "low": _short(lo),
                "close": _short(c),
                "volume": _short(v),
                "partial": False,
            }
        )
    body = {"symbol": symbol, "timeframe": "1m", "source": "stored", "candles": candles}
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


def baseline_app() -> Starlette:
    """`uvicorn --factory --app-dir bench candles:baseline_app` (BENCH_DATABASE_URL set)."""
    url = os.environ["BENCH_DATABASE_URL"]
    state: dict[str, AsyncEngine] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["engine"] = create_async_engine(url)
        yield
        await state["engine"].dispose()

    async def candles(request: Request) -> Response:
        query = request.query_params
        end = datetime.fromisoformat(query["end"]) if "end" in query else None
        body = await direct_candles(
            state["engine"],
            request.path_params["symbol"],
            int(query.get("limit", "500")),
            end,
            datetime.now(UTC),
        )
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/candles/{symbol}", candles)], lifespan=lifespan)


# -- data ------------------------------------------------------------------------------------


def write_csv(path: Path, rows: int, last_open: datetime) -> None:
    """`rows` 1m bars ending at `last_open`: epoch seconds, 2-decimal prices, 4-decimal volume."""
    rng = random.Random(7)
    first = last_open - MINUTE * (rows - 1)
    price = 30_000.0
    with path.open("w", newline="") as out:
        out.write("time,open,high,low,close,volume\n")
        start = int(first.timestamp())
        for n in range(rows):
            o = price
            c = max(1.0, o + rng.gauss(0, 15))
            h = max(o, c) + rng.random() * 10
            lo = max(0.5, min(o, c) - rng.random() * 10)
            price = c
            out.write(
                f"{start + 60 * n},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},{rng.random() * 50:.4f}\n"
            )


def raw_rows(bars: list[Any], instrument_id: int, backend: str) -> list[tuple[Any, ...]]:
    """The bars as the database stores them: the raw baseline pays no conversion."""
    from tradeos.core.db import to_exact_decimal

    out = []
    for bar in bars:
        prices = [to_exact_decimal(x) for x in (bar.open, bar.high, bar.low, bar.close, bar.volume)]
        if backend == "sqlite":
            moment: Any = bar.open_time.replace(tzinfo=None).strftime(SQLITE_TIME)
            values: list[Any] = [format(x, "f") for x in prices]
        else:
            moment, values = bar.open_time, prices
        out.append((instrument_id, "1m", moment, *values, "csv"))
    return out


# -- backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    url: str  # SQLAlchemy URL (async driver)
    folder: Path
    admin_url: str | None = None  # PostgreSQL: where to create/drop the database
    database: str | None = None

    @property
    def sqlite_path(self) -> str:
        return str(make_url(self.url).database)

    @property
    def asyncpg_dsn(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def create(self) -> None:
        from tradeos import migrations

        if self.name == "postgresql":
            assert self.admin_url is not None
            admin = await asyncpg.connect(self.admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await admin.close()
        await asyncio.to_thread(migrations.upgrade, self.url)
        # The raw baseline's table: like `candles`, primary and foreign key included.
        if self.name == "sqlite":
            with contextlib.closing(sqlite3.connect(self.sqlite_path)) as connection:
                (ddl,) = connection.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'candles'"
                ).fetchone()
                connection.execute(re.sub(r'^CREATE TABLE "?candles"?', "CREATE TABLE raw", ddl))
                connection.commit()
        else:
            connection = await asyncpg.connect(self.asyncpg_dsn)
            try:
                await connection.execute(
                    "CREATE TABLE raw (LIKE candles INCLUDING ALL);"
                    " ALTER TABLE raw ADD FOREIGN KEY (instrument_id)"
                    " REFERENCES instruments (id) ON DELETE CASCADE"
                )
            finally:
                await connection.close()

    async def empty(self, table: str) -> None:
        """A fresh, empty `table` (TRUNCATE on PostgreSQL; DELETE and VACUUM on SQLite)."""
        if self.name == "sqlite":
            with contextlib.closing(sqlite3.connect(self.sqlite_path)) as connection:
                connection.isolation_level = None
                connection.execute(f"DELETE FROM {table}")  # noqa: S608 - a constant name
                connection.execute("VACUUM")
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            connection = await asyncpg.connect(self.asyncpg_dsn)
            try:
                await connection.execute(f"TRUNCATE {table}")
            finally:
                await connection.close()

    async def raw_insert(self, rows: list[tuple[Any, ...]]) -> float:
        """Seconds to bulk-insert `rows` into `raw` with the bare driver, one transaction."""
        if self.name == "sqlite":
            with contextlib.closing(sqlite3.connect(self.sqlite_path)) as connection:
                connection.isolation_level = None
                for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
                    connection.execute(f"PRAGMA {pragma}")
                started = time.perf_counter()
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                connection.execute("COMMIT")
                return time.perf_counter() - started
        connection = await asyncpg.connect(self.asyncpg_dsn)
        try:
            started = time.perf_counter()
            async with connection.transaction():
                await connection.copy_records_to_table(
                    "raw",
                    records=rows,
                    columns=[
                        "instrument_id",
                        "timeframe",
                        "open_time",
                        "open",
                        "high",
                        "low",
                        "close",
                        "volume",
                        "source",
                    ],
                )
            return time.perf_counter() - started
        finally:
            await connection.close()

    async def drop(self) -> None:
        if self.name == "postgresql":
            assert self.admin_url is not None
            admin = await asyncpg.connect(self.admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()


def make_backend(name: str, folder: Path, postgres: str) -> Backend:
    from tradeos.config import normalize_database_url

    if name == "sqlite":
        return Backend(name, f"sqlite+aiosqlite:///{folder / 'tradeos.db'}", folder)
    database = f"tradeos_bench_candles_{os.getpid()}"
    url = normalize_database_url(make_url(postgres).set(database=database).render_as_string(False))
    return Backend(name, url, folder, admin_url=postgres, database=database)


async def add_instrument(database: Any) -> int:
    from tradeos.market.models import Instrument

    async with database.session() as session:
        instrument = Instrument(
            symbol=SYMBOL,
            name=SYMBOL,
            asset_class="crypto",
            base="BENCH",
            quote="USD",
            tick_size=Decimal("0.01"),
            quantity_step=Decimal("0.0001"),
            status="trading",
            provider="csv",
        )
        session.add(instrument)
        await session.flush()
        return instrument.id


# -- ingest ----------------------------------------------------------------------------------


def _read_bars(csv_path: Path) -> Iterator[Any]:
    from tradeos.market import csv_candles
    from tradeos.market.timeframes import Timeframe

    summary = csv_candles.CsvSummary()
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv_candles.parse_candles(handle, Timeframe.M1, summary=summary):
            if not isinstance(row, csv_candles.Rejected):
                yield row


async def _upsert_batches(database: Any, instrument_id: int, batches: list[Any]) -> Any:
    from tradeos.market import service as market
    from tradeos.market.timeframes import Timeframe

    written = market.CandleWrite()
    for batch in batches:
        async with database.session() as session:
            stored = await market.upsert_candles(session, instrument_id, Timeframe.M1, batch, "csv")
        written = written.plus(stored)
    return written


async def ingest(
    backend: Backend, database: Any, instrument_id: int, csv_path: Path, rounds: int
) -> dict[str, list[float]]:
    """Seconds per variant and round; the TradeOS table holds the file's bars afterwards."""
    from tradeos.market import csv_candles, importer
    from tradeos.market import service as market
    from tradeos.market.timeframes import Timeframe

    started = time.perf_counter()
    bars = list(_read_bars(csv_path))
    parse_seconds = time.perf_counter() - started
    rows = raw_rows(bars, instrument_id, backend.name)
    batches = list(csv_candles.bar_batches(bars, size=market.WRITE_BATCH))
    seconds: dict[str, list[float]] = {"parse only": [parse_seconds]}

    async def write_only() -> float:
        started = time.perf_counter()
        written = await _upsert_batches(database, instrument_id, batches)
        assert written.inserted == len(bars), written
        return time.perf_counter() - started

    async def parse_and_write() -> float:
        started = time.perf_counter()
        written, summary = await importer.import_candle_file(
            database, csv_path, instrument_id, Timeframe.M1
        )
        assert written.inserted == len(bars) == summary.bars, (written, summary)
        return time.perf_counter() - started

    for _ in range(rounds):
        await backend.empty("raw")
        seconds.setdefault("raw", []).append(await backend.raw_insert(rows))
        await backend.empty("candles")
        seconds.setdefault("tradeos write-only", []).append(await write_only())
        await backend.empty("candles")
        seconds.setdefault("tradeos parse+write", []).append(await parse_and_write())
    started = time.perf_counter()
    for _ in _read_bars(csv_path):
        pass
    seconds["parse only"].append(time.perf_counter() - started)
    return seconds


# -- reads -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_environment(values: dict[str, str]) -> dict[str, str]:
    from tradeos.config import Settings

    # Nothing of the caller's TradeOS configuration leaks into the servers.
    names = {name.upper() for name in Settings.model_fields}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in names}
    environment.update(values)
    return environment


def start_server(app: list[str], environment: dict[str, str], folder: Path) -> tuple[Any, str]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        *app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-server-header",
    ]
    # cwd: a folder without a .env file.
    process = subprocess.Popen(command, env=environment, cwd=folder)  # noqa: S603
    return process, f"http://127.0.0.1:{port}"


async def wait_until_up(url: str, process: Any) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"the server at {url} exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                await client.get(url)
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server at {url} did not start")


async def sign_in(database: Any, settings: Any) -> dict[str, str]:
    from tradeos.accounts.models import User
    from tradeos.accounts.service import ClientInfo, open_session

    async with database.session() as session:
        user = User(
            email="bench@example.com",
            username="bench",
            password_hash="x",
            role="user",
            is_active=True,
        )
        session.add(user)
        await session.flush()
        tokens = await open_session(session, settings, user, device=None, client=ClientInfo())
    return {"Authorization": f"Bearer {tokens.access_token}", "Accept-Encoding": "identity"}


@dataclass
class Case:
    server: str  # tradeos | baseline
    limit: int
    kind: str  # no end | end cold | end warm | end
    url: str
    params: Callable[[int], dict[str, str]]
    latencies: list[float]


def _same_candles(tradeos: bytes, baseline: bytes) -> bool:
    a, b = orjson.loads(tradeos), orjson.loads(baseline)

    def key(body: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (
                datetime.fromisoformat(c["time"]),
                *(Decimal(c[k]) for k in ("open", "high", "low", "close", "volume")),
                c["partial"],
            )
            for c in body["candles"]
        ]

    return (a["symbol"], a["source"]) == (b["symbol"], b["source"]) and key(a) == key(b)


async def reads(
    backend: Backend,
    database: Any,
    headers: dict[str, str],
    tradeos_url: str,
    baseline_url: str,
    last_whole: datetime,
    requests: int,
) -> tuple[list[Case], dict[int, float]]:
    """Sequential requests, alternating in blocks of 10 between the servers."""

    def iso(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    warm_end = iso(last_whole + MINUTE)
    cases: list[Case] = []
    for limit in LIMITS:
        base = {"timeframe": "1m", "limit": str(limit)}
        tradeos = f"{tradeos_url}/api/v1/market/candles/{SYMBOL}"
        bare = f"{baseline_url}/candles/{SYMBOL}"

        def cold(n: int, base: dict[str, str] = base) -> dict[str, str]:
            # A different end each request: a cache key never seen (n < rows - limit).
            return {**base, "end": iso(last_whole - MINUTE * (n + 1))}

        cases += [
            Case("tradeos", limit, "no end", tradeos, lambda _n, b=base: b, []),
            Case("baseline", limit, "no end", bare, lambda _n, b=base: b, []),
            Case("tradeos", limit, "end cold", tradeos, cold, []),
            Case(
                "tradeos", limit, "end warm", tradeos, lambda _n, b=base: {**b, "end": warm_end}, []
            ),
            Case("baseline", limit, "end", bare, cold, []),
        ]
    direct: dict[int, float] = {}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        for limit in LIMITS:
            # Same answer, both servers (a fixed end: both see the same window).
            params = {"timeframe": "1m", "limit": str(limit), "end": warm_end}
            ours = await client.get(f"{tradeos_url}/api/v1/market/candles/{SYMBOL}", params=params)
            assert ours.status_code == 200, ours.text
            theirs = await client.get(f"{baseline_url}/candles/{SYMBOL}", params=params)
            assert _same_candles(ours.content, theirs.content), "the baseline answers differently"
            assert len(ours.json()["candles"]) == limit
        counters = {id(case): 0 for case in cases}
        for _block in range(0, requests, 10):
            for case in cases:
                for _ in range(10):
                    n = counters[id(case)]
                    counters[id(case)] += 1
                    started = time.perf_counter()
                    response = await client.get(case.url, params=case.params(n))
                    case.latencies.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
    # The baseline's work without HTTP, in this process.
    engine = create_async_engine(backend.url)
    try:
        for limit in LIMITS:
            timings = []
            for n in range(requests):
                end = last_whole - MINUTE * (n + 1)
                started = time.perf_counter()
                await direct_candles(engine, SYMBOL, limit, end, datetime.now(UTC))
                timings.append(time.perf_counter() - started)
            direct[limit] = statistics.median(timings)
    finally:
        await engine.dispose()
    return cases, direct


# -- profiling -------------------------------------------------------------------------------


def _top(profile: cProfile.Profile, lines: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


async def profile(backend: Backend, database: Any, instrument_id: int, csv_path: Path) -> None:
    from tradeos.app import create_app
    from tradeos.config import Settings
    from tradeos.market import csv_candles
    from tradeos.market import service as market

    bars = list(_read_bars(csv_path))
    batches = list(csv_candles.bar_batches(bars, size=market.WRITE_BATCH))
    await backend.empty("candles")
    profiler = cProfile.Profile()
    profiler.enable()
    await _upsert_batches(database, instrument_id, batches)
    profiler.disable()
    print(f"\n== cProfile: tradeos write-only ingest of {len(bars)} bars ({backend.name})")
    print(_top(profiler))

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=backend.url,
        data_dir=backend.folder / "profile-data",
        jwt_secret_key=secrets.token_hex(32),
        rate_limit_market_data="1000000/minute",
        rate_limit_user="1000000/minute",
        log_level="WARNING",
    )
    headers = await sign_in(database, settings)
    app = create_app(settings)
    last = bars[-1].open_time - timedelta(hours=2)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            # "end warm": the same request each time, served from the cache: what a request
            # costs besides the candles (authentication, rate limit, session, middleware).
            # "no end" of 1000 bars first: the read whose fixed cost is the gap to the target.
            cases = (("no end", 1000), ("no end", 5000), ("end cold", 5000), ("end warm", 1000))
            for kind, limit in cases:
                profiler = cProfile.Profile()
                for n in range(20):
                    params = {"timeframe": "1m", "limit": str(limit)}
                    moment = last - MINUTE * (n if kind == "end cold" else 0)
                    if kind != "no end":
                        params["end"] = moment.isoformat().replace("+00:00", "Z")
                    profiler.enable()
                    response = await client.get(f"/api/v1/market/candles/{SYMBOL}", params=params)
                    profiler.disable()
                    assert response.status_code == 200, response.text
                print(f"\n== cProfile: 20 in-process GETs of {limit} bars, {kind} ({backend.name})")
                print(_top(profiler))


# -- main ------------------------------------------------------------------------------------


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run_backend(name: str, arguments: argparse.Namespace) -> None:
    from tradeos.config import Settings
    from tradeos.core.db import Database

    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        backend = make_backend(name, folder, arguments.postgres)
        await backend.create()
        database = Database(backend.url)
        try:
            instrument_id = await add_instrument(database)
            # The file's last bars lie ahead of now: a read without `end` finds full windows.
            now_minute = datetime.now(UTC).replace(second=0, microsecond=0)
            last_open = now_minute + timedelta(hours=2)
            csv_path = folder / "bars.csv"
            write_csv(csv_path, arguments.rows, last_open)

            print(f"\n## {name}: ingest of {arguments.rows} 1m bars (load {_load()})")
            seconds = await ingest(backend, database, instrument_id, csv_path, arguments.rounds)
            raw_rate = statistics.median(arguments.rows / s for s in seconds["raw"])
            print(f"{'variant':<22}{'rows/s (each round)':>34}{'median':>10}{'of raw':>8}")
            for variant, values in seconds.items():
                rates = [arguments.rows / s for s in values]
                median = statistics.median(rates)
                each = " / ".join(f"{r:,.0f}" for r in rates)
                print(f"{variant:<22}{each:>34}{median:>10,.0f}{median / raw_rate:>8.0%}")

            if arguments.profile:
                await profile(backend, database, instrument_id, csv_path)
                return

            secret = secrets.token_hex(32)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=backend.url,
                data_dir=folder / "data",
                jwt_secret_key=secret,
                access_token_minutes=120,
            )
            headers = await sign_in(database, settings)
            tradeos_env = _server_environment(
                {
                    "DATABASE_URL": backend.url,
                    "DATA_DIR": str(folder / "data"),
                    "JWT_SECRET_KEY": secret,
                    "ACCESS_TOKEN_MINUTES": "120",
                    "RATE_LIMIT_MARKET_DATA": "1000000/minute",
                    "RATE_LIMIT_USER": "1000000/minute",
                    "MARKET_CACHE_SECONDS": "3600",
                    "LOG_LEVEL": "WARNING",
                }
            )
            baseline_env = _server_environment({"BENCH_DATABASE_URL": backend.url})
            ours, tradeos_url = start_server(["tradeos.app:app_factory"], tradeos_env, folder)
            theirs, baseline_url = start_server(
                ["--app-dir", BENCH_FOLDER, "candles:baseline_app"], baseline_env, folder
            )
            try:
                await wait_until_up(f"{tradeos_url}/live", ours)
                await wait_until_up(f"{baseline_url}/candles/{SYMBOL}", theirs)
                await asyncio.sleep(2)  # start-up jobs (the sim listings sync) done
                last_whole = now_minute - timedelta(hours=1)
                print(
                    f"\n## {name}: GET candles, {arguments.requests} sequential requests per row"
                    f" (load {_load()})"
                )
                cases, direct = await reads(
                    backend, database, headers, tradeos_url, baseline_url, last_whole,
                    arguments.requests,
                )  # fmt: skip
                print(f"(load after: {_load()})")
            finally:
                for process in (ours, theirs):
                    process.terminate()
                    process.wait(10)
            baseline_p50 = {
                (c.limit, c.kind): statistics.median(c.latencies)
                for c in cases
                if c.server == "baseline"
            }
            print(
                f"{'server':<10}{'bars':>6}  {'request':<10}{'p50 ms':>9}{'p90 ms':>9}"
                f"{'req/s':>8}{'× baseline p50':>16}"
            )
            for case in cases:
                ordered = sorted(case.latencies)
                p50 = statistics.median(ordered)
                p90 = ordered[int(len(ordered) * 0.9) - 1]
                rate = len(ordered) / sum(ordered)
                versus = baseline_p50[(case.limit, "no end" if case.kind == "no end" else "end")]
                print(
                    f"{case.server:<10}{case.limit:>6}  {case.kind:<10}{p50 * 1000:>9.1f}"
                    f"{p90 * 1000:>9.1f}{rate:>8.0f}{p50 / versus:>16.2f}"
                )
            for limit, seconds_each in direct.items():
                print(f"direct, no HTTP, {limit} bars: {seconds_each * 1000:.1f} ms (median)")
        finally:
            await database.dispose()
            await backend.drop()


async def main(arguments: argparse.Namespace) -> None:
    names = ["sqlite", "postgresql"] if arguments.backend == "both" else [arguments.backend]
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {_load()}")
    for name in names:
        await run_backend(name, arguments)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--profile", action="store_true")
    asyncio.run(main(parser.parse_args()))
