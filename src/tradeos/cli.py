"""The `tradeos` command: serve, worker, scheduler, db upgrade|downgrade|current|seed|reset,
users create-admin, version."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import structlog
import typer
from alembic.util import CommandError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from tradeos import __version__
from tradeos import migrations as db_migrations
from tradeos.config import Settings, get_settings, settings_error_lines
from tradeos.core.db import Database, create_engine
from tradeos.core.logging import configure_logging, redact_text

if TYPE_CHECKING:
    from tradeos.core.jobs import Priority

app = typer.Typer(name="tradeos", help="TradeOS trading platform backend.", no_args_is_help=True)
db_app = typer.Typer(help="Database: migrations, demo data, reset.", no_args_is_help=True)
app.add_typer(db_app, name="db")
users_app = typer.Typer(help="User accounts: create administrators.", no_args_is_help=True)
app.add_typer(users_app, name="users")

console = Console()
logger = structlog.get_logger("tradeos.cli")

MIN_SEED_PASSWORD_LENGTH = 8
T = TypeVar("T")


def _fail(message: str, code: int = 2) -> NoReturn:
    # Plain echo, not rich: one line must stay one line whatever the terminal width.
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """The settings, or one clear line per bad variable and exit 2: never a traceback."""
    try:
        settings = get_settings()
    except ValidationError as error:
        for line in settings_error_lines(error):
            typer.secho(f"TradeOS cannot start: {line}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    except OSError as error:
        _fail(f"TradeOS cannot start: DATA_DIR is not usable: {error}")
    configure_logging(settings.log_level, json=settings.is_production, sql=settings.debug)
    return settings


@contextmanager
def _database_errors(settings: Settings) -> Iterator[None]:
    """A database that cannot be reached, or a revision Alembic does not know, is one clear
    line, not a driver traceback."""
    try:
        yield
    except CommandError as error:
        _fail(f"TradeOS cannot migrate {settings.safe_database_url}: {error}")
    except (DBAPIError, OSError) as error:
        reason = redact_text(str(getattr(error, "orig", None) or error).splitlines()[0])
        _fail(f"TradeOS cannot use the database at {settings.safe_database_url}: {reason}")


def _prepare_database(settings: Settings) -> None:
    """Embedded SQLite is migrated on start; a shared database must be upgraded on purpose."""
    if settings.is_embedded_database:
        _ensure_sqlite_folder(settings)
        db_migrations.upgrade(settings.sqlalchemy_url)
        return
    current = _current_revision(settings)
    head = db_migrations.head_revision()
    if current != head:
        _fail(
            f"TradeOS cannot start: the database at {settings.safe_database_url} is at revision "
            f"{current or 'none'}, this version needs {head}. Run: tradeos db upgrade"
        )


def _ensure_sqlite_folder(settings: Settings) -> None:
    if settings.sqlite_path is not None:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)


def _on_database(settings: Settings, work: Callable[[Connection], T]) -> T:
    """Run `work` in one transaction on an engine of its own (the CLI has no app running)."""

    async def run() -> T:
        engine = create_engine(settings.sqlalchemy_url)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _current_revision(settings: Settings) -> str | None:
    return _on_database(settings, db_migrations.current_revision)


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    # Each worker writes its metrics to files here; /metrics aggregates them. Stale files from
    # an earlier run would add old counts, so the folder starts empty.
    metrics_dir = settings.data_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Start the API server (migrates the embedded SQLite database first)."""
    import uvicorn

    settings = load_settings()
    _import_job_modules([])
    _check_job_schedules(settings)
    with _database_errors(settings):
        _prepare_database(settings)
    if workers > 1 and reload:
        _fail("--reload and --workers cannot be combined; use one or the other.")
    if workers > 1:
        _prepare_multiprocess_metrics(settings)
    console.print(
        f"TradeOS {__version__} on http://{host}:{port}  (API docs: http://{host}:{port}/docs)"
    )
    uvicorn.run(
        "tradeos.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        reload_dirs=[os.path.dirname(__file__)] if reload else None,
        log_config=None,
        access_log=False,
        server_header=False,
        # Compressing small WebSocket frames costs a quarter of a fan-out's server CPU
        # (bench/RESULTS.md); market ticks and events are a few hundred bytes.
        ws_per_message_deflate=False,
    )


@app.command()
def version() -> None:
    """Print the TradeOS version."""
    console.print(f"TradeOS {__version__}")


def _parse_queues(value: str) -> list[Priority]:
    from tradeos.core.jobs import Priority

    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    try:
        return [Priority(name) for name in names] or list(Priority)
    except ValueError:
        allowed = ", ".join(p.value for p in Priority)
        _fail(f"--queues takes a comma-separated list of: {allowed}")


def _import_job_modules(modules: list[str]) -> None:
    """Every TradeOS job, plus the modules named with --module (jobs of your own)."""
    import importlib

    import tradeos.jobs  # noqa: F401 - declares every job of TradeOS

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            _fail(f"Cannot import job module {module!r}: {error}")


def _check_job_schedules(settings: Settings) -> None:
    """JOB_SCHEDULES names only periodic jobs, checked once the jobs are declared."""
    from tradeos.core.jobs.scheduler import check_job_schedules

    try:
        check_job_schedules(settings.job_schedules)
    except ValueError as error:
        _fail(f"TradeOS cannot start: {error}")


def _require_shared_broker(settings: Settings, command: str) -> None:
    if settings.broker_backend == "memory":
        _fail(
            f"tradeos {command} needs a shared job broker: set REDIS_URL. With the in-process "
            "broker, `tradeos serve` runs the jobs and schedules itself."
        )


async def _run_until_stopped(main: Callable[[], Awaitable[None]]) -> None:
    """Run `main` until it ends or SIGINT / SIGTERM arrives, then let it clean up."""
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main())
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    with suppress(asyncio.CancelledError):
        await task


ModuleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--module", "-m", help="Also import this module's jobs (repeatable).", show_default=False
    ),
]


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="Queues to take jobs from, highest priority first.")
    ] = "high,default,low",
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=100, help="Jobs run at once (default: JOBS_CONCURRENCY)."),
    ] = None,
    module: ModuleOption = None,
) -> None:
    """Run background jobs from the shared broker (Redis) until stopped."""
    from tradeos.core.jobs import JobQueue

    settings = load_settings()
    _require_shared_broker(settings, "worker")
    consume = _parse_queues(queues)
    _import_job_modules(module or [])
    with _database_errors(settings):
        _prepare_database(settings)

    async def run() -> None:
        async with _job_ports(settings) as ports:
            jobs = JobQueue(settings, **ports, consume=consume, concurrency=concurrency)
            try:
                await jobs.start_consuming()
                console.print(
                    f"TradeOS worker {jobs.worker_id}: queues {', '.join(consume)}, "
                    f"{jobs.concurrency} at once"
                )
                await asyncio.Event().wait()
            finally:
                await jobs.aclose()

    asyncio.run(_run_until_stopped(run))


@app.command()
def scheduler(module: ModuleOption = None) -> None:
    """Send scheduled jobs when they are due, until stopped. Several may run: each period
    fires once."""
    from tradeos.core.jobs import JobQueue, Scheduler
    from tradeos.market import startup as market_startup
    from tradeos.trading.execution import RestingOrderWatcher

    settings = load_settings()
    _require_shared_broker(settings, "scheduler")
    _import_job_modules(module or [])
    _check_job_schedules(settings)
    with _database_errors(settings):
        _prepare_database(settings)

    async def run() -> None:
        async with _job_ports(settings) as ports:
            jobs = JobQueue(settings, **ports)
            await jobs.start()
            market_data = market_startup.make(settings, None)
            feed = market_startup.live_feed(settings, market_data, ports["events"])
            try:
                schedule = Scheduler(jobs)
                names = ", ".join(d.name for d in schedule.definitions) or "none"
                off = f" (off: {', '.join(schedule.switched_off)})" if schedule.switched_off else ""
                console.print(f"TradeOS scheduler {schedule.worker_id}: {names}{off}")
                # The live market feed runs once per deployment too: beside the schedules,
                # with the matcher of resting orders on its ticks.
                watcher = RestingOrderWatcher(
                    ports["database"], ports["events"], settings, lambda: market_data.provider
                )
                live = [feed.run(), watcher.run()] if feed else []
                await asyncio.gather(schedule.run(), *live)
            finally:
                await jobs.aclose()
                await market_data.aclose()

    asyncio.run(_run_until_stopped(run))


@asynccontextmanager
async def _job_ports(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    """What jobs are given to work with, as `serve` gives them."""
    from tradeos.core.cache import make_cache
    from tradeos.core.events import make_event_bus
    from tradeos.core.storage import make_storage
    from tradeos.core.transactions import flush_after_commit

    database = Database(settings.sqlalchemy_url, pool_size=settings.database_pool_size)
    events = make_event_bus(settings)
    cache = make_cache(settings)
    storage = make_storage(settings)
    try:
        yield {"database": database, "events": events, "cache": cache, "storage": storage}
    finally:
        await flush_after_commit()
        await events.aclose()
        await cache.aclose()
        await storage.aclose()
        await database.dispose()


import_app = typer.Typer(help="Import data from files.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("candles")
def import_candles(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file.")
    ],
    symbol: Annotated[str, typer.Option(help="The instrument, e.g. BTC-USD or AAPL.")],
    timeframe: Annotated[str, typer.Option(help="1m, 5m, 15m, 30m, 1h, 4h, 1d or 1w.")],
    create: Annotated[
        bool, typer.Option(help="Add the instrument if TradeOS does not know it.")
    ] = False,
    asset_class: Annotated[
        str, typer.Option(help="The asset class of an instrument --create adds.")
    ] = "crypto",
) -> None:
    """Import OHLCV candles from a CSV file (header names detected; epoch seconds or
    milliseconds, ISO times or dates). Importing the same file again changes nothing."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from tradeos.core.cache import make_cache
    from tradeos.market import csv_candles, importer
    from tradeos.market import service as market
    from tradeos.market.providers.base import AssetClass
    from tradeos.market.providers.registry import make_market_provider
    from tradeos.market.timeframes import Timeframe

    try:
        frame = Timeframe(timeframe)
    except ValueError:
        _fail(f"--timeframe must be one of: {', '.join(tf.value for tf in Timeframe)}")
    if asset_class not in {a.value for a in AssetClass}:
        _fail(f"--asset-class must be one of: {', '.join(a.value for a in AssetClass)}")
    settings = load_settings()
    # Progress counts characters: the bytes of an ASCII file, near enough for any other.
    total_chars = file.stat().st_size

    async def run() -> Any:
        from tradeos.core.errors import NotFound

        database = Database(settings.sqlalchemy_url)
        try:
            provider = make_market_provider(settings)
            specs = await provider.instruments()
            try:
                async with database.session() as session:
                    # The provider's instruments are known here as in `serve`.
                    await market.upsert_instruments(session, specs, provider.name)
                    instrument = await market.find_or_create_instrument(
                        session, symbol, create=create, asset_class=asset_class
                    )
                    instrument_id, name = instrument.id, instrument.symbol
            except (NotFound, ValueError) as error:
                _fail(f"{error} Add --create to import it as a new instrument.")
            with Progress(
                TextColumn(f"importing {name} {frame}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("import", total=total_chars or 1)
                written, summary = await importer.import_candle_file(
                    database,
                    file,
                    instrument_id,
                    frame,
                    on_progress=lambda read: progress.update(task, completed=read),
                )
                progress.update(task, completed=total_chars or 1)
            if written.inserted or written.updated:
                # Cached reads of this instrument's candles are stale now (shared with the API
                # processes when the cache is Redis; in-process caches expire by themselves).
                cache = make_cache(settings)
                try:
                    await cache.invalidate_tag(market.candles_tag(name))
                finally:
                    await cache.aclose()
            return written, summary
        finally:
            await database.dispose()

    with _database_errors(settings):
        _prepare_database(settings)
        try:
            written, summary = asyncio.run(run())
        except csv_candles.CsvLayoutError as error:
            _fail(f"Cannot read {file.name}: {error}")
        except importer.ImportFailed as error:
            _fail(f"Cannot import {file.name}: {error}")
    for line in summary.describe():
        typer.echo(line)
    typer.echo(
        f"inserted: {written.inserted}, updated: {written.updated}, "
        f"unchanged: {written.unchanged}, rejected: {summary.rejected}"
    )


BACKTEST_DEFAULT_BARS = 1000
BACKTEST_MAX_BARS = 1_000_000


@app.command()
def backtest(
    formula_file: Annotated[Path, typer.Argument(help="The formula, as a text file.")],
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbol",
            help="An instrument's stored (or simulated) candles; repeat for several instruments "
            "on one cash balance. With --data: the name of each file's instrument.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="Candles from a CSV file instead (any layout `import candles` reads; no "
            "database). Repeatable.",
            show_default=False,
        ),
    ] = None,
    timeframe: Annotated[str, typer.Option(help="1m, 5m, 15m, 30m, 1h, 4h, 1d or 1w.")] = "1h",
    start: Annotated[
        str | None, typer.Option(help="First open time, ISO (UTC), inclusive.", show_default=False)
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Last open time, ISO (UTC), exclusive.", show_default=False)
    ] = None,
    bars: Annotated[
        int,
        typer.Option(
            min=2,
            max=BACKTEST_MAX_BARS,
            help="With --symbol and no --start: the last this many bars before --end (or now).",
        ),
    ] = BACKTEST_DEFAULT_BARS,
    cash: Annotated[float, typer.Option(help="Initial cash.")] = 10_000.0,
    commission: Annotated[
        float, typer.Option(help="Fee per fill (each side), a fraction of the notional.")
    ] = 0.0,
    fixed_fee: Annotated[
        float,
        typer.Option(
            min=0, max=1_000_000, help="A fixed fee per fill (each side), on top of the commission."
        ),
    ] = 0.0,
    min_fee: Annotated[
        float, typer.Option(min=0, max=1_000_000, help="The least a fill pays in fees.")
    ] = 0.0,
    slippage_bps: Annotated[float, typer.Option(help="Slippage per fill, in basis points.")] = 0.0,
    fill: Annotated[
        str,
        typer.Option(
            help="next_open: a signal fills at the next bar's open; close: at its own close."
        ),
    ] = "next_open",
    intrabar: Annotated[
        str,
        typer.Option(
            help="When one bar reaches both the stop-loss and the take-profit: worst (the one "
            "worse for the trader), best, or nearest_to_open."
        ),
    ] = "worst",
    size: Annotated[
        str,
        typer.Option(
            help="Entry size: '100%' = percent of equity, '50%cash' = percent of free cash, "
            "a plain number = a fixed quantity. A formula's `size` rule sets the amount per "
            "bar in the same unit (0.5 = 50 %)."
        ),
    ] = "100%",
    whole_units: Annotated[
        bool, typer.Option("--whole-units/--fractional", help="Trade whole units only.")
    ] = True,
    allow_short: Annotated[
        bool, typer.Option("--allow-short/--long-only", help="Let entry_short open shorts.")
    ] = True,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="Override a formula parameter: name=value (repeatable).",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write an HTML report to this file.", show_default=False)
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the results as JSON on stdout (metrics, trades, params)."
        ),
    ] = False,
    optimize: Annotated[
        str | None,
        typer.Option(
            "--optimize",
            help="Optimize instead: a grid of parameter values, name=start:stop:step (stop "
            "included) or name=value, comma separated, e.g. 'fast=5:50:5,slow=20:200:10'. "
            "One instrument.",
            show_default=False,
        ),
    ] = None,
    rank_by: Annotated[
        str, typer.Option("--rank-by", help="With --optimize: the metric to rank by.")
    ] = "total_return",
    top: Annotated[
        int, typer.Option(min=1, max=100, help="With --optimize: how many best sets to show.")
    ] = 10,
) -> None:
    """Backtest a formula on stored or simulated candles (--symbol) or on CSV files (--data),
    or optimize its parameters over a grid (--optimize).

    tradeos backtest sma.txt --symbol BTC-USD --timeframe 1h --bars 2000
    tradeos backtest sma.txt --data btc.csv --timeframe 1d --param fast=5 --report out.html
    tradeos backtest sma.txt --data btc.csv --optimize "fast=5:50:5,slow=20:200:10" --rank-by sharpe
    """
    import json

    from rich.progress import BarColumn, Progress, TextColumn

    from tradeos.backtest import runner
    from tradeos.market.csv_candles import CsvLayoutError
    from tradeos.market.timeframes import Timeframe
    from tradeos.strategies.formula import EvaluationError, InvalidFormula, compile_formula

    try:
        frame = Timeframe(timeframe)
    except ValueError:
        _fail(f"--timeframe must be one of: {', '.join(tf.value for tf in Timeframe)}")
    if not data and not symbol:
        _fail("Give --symbol SYMBOL (stored or simulated candles) or --data FILE.csv.")
    if data and symbol and len(symbol) != len(data):
        _fail("With --data, give one --symbol per file, or none (the file names are used).")
    window = (_backtest_moment(start, "--start"), _backtest_moment(end, "--end"))
    if window[0] and window[1] and window[0] >= window[1]:
        _fail("--start must be before --end.")
    params = _backtest_params(param or [])
    grid = _backtest_grid(optimize, rank_by, params, symbol, data, report) if optimize else None
    config = _backtest_config(
        cash=cash, commission=commission, fixed_fee=fixed_fee, min_fee=min_fee,
        slippage_bps=slippage_bps, fill=fill, intrabar=intrabar, size=size,
        whole_units=whole_units, allow_short=allow_short,
    )  # fmt: skip
    try:
        formula = formula_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"Cannot read the formula file {formula_file}: {_reason(error)}")
    try:  # before any candle is read: a bad formula fails fast
        compile_formula(formula).parameter_values(params)
    except (InvalidFormula, EvaluationError) as error:
        _fail(f"{formula_file.name}: {error}")
    err = Console(stderr=True)
    out = err if as_json else console

    try:
        if data:
            names = symbol or [path.stem for path in data]
            candles = [
                _backtest_csv(path, name, frame, *window, err)
                for path, name in zip(data, names, strict=True)
            ]
        else:
            candles = _backtest_stored(symbol or [], frame, *window, bars)
    except CsvLayoutError as error:
        _fail(f"Cannot read the candles: {error}")
    for instrument in candles:
        if len(instrument) == 0:
            _fail(f"No candles of {instrument.symbol} {frame} in the chosen window.")

    if grid is not None:
        _optimize(
            formula_file, formula, candles[0], grid, rank_by, top, config, frame.value, as_json
        )
        return
    with Progress(
        TextColumn("backtest {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=100)
        try:
            run = runner.run_formula(
                candles,
                formula,
                params=params,
                config=config,
                progress=lambda percent, message: progress.update(
                    task, completed=percent, description=message
                ),
            )
        except (InvalidFormula, EvaluationError) as error:
            _fail(f"{formula_file.name}: {error}")
        except ValueError as error:  # BacktestInputError, a config the engine refuses
            _fail(f"Cannot backtest: {error}")

    if report is not None:
        from tradeos.backtest.report import html_report

        title = f"Backtest of {formula_file.name} on {', '.join(run.symbols)} {frame}"
        try:
            report.write_text(html_report(run, title=title, candles=candles), encoding="utf-8")
        except OSError as error:
            _fail(f"Cannot write the report {report}: {_reason(error)}")
    if as_json:
        answer = run.as_dict()
        answer["timeframe"] = frame.value
        typer.echo(json.dumps(answer))
    else:
        _print_backtest(run, frame.value)
    if report is not None:
        out.print(f"Report written to {report}", highlight=False)
    if run.metrics.trades == 0 and whole_units:
        err.print(
            "No trade was made. If the formula signalled entries, one whole unit may cost more "
            "than the cash: try --fractional.",
            highlight=False,
        )


def _backtest_grid(
    text: str,
    rank_by: str,
    params: dict[str, float],
    symbol: list[str] | None,
    data: list[Path] | None,
    report: Path | None,
) -> dict[str, list[float]]:
    """The --optimize grid, with --param values of parameters outside it as one value each
    (as `POST /backtests/optimize` does)."""
    import math

    from tradeos.backtest import runner

    if len(data or symbol or []) > 1:
        _fail("--optimize runs on one instrument: give one --symbol or one --data file.")
    if report is not None:
        _fail("--report shows one backtest: run the best parameters without --optimize.")
    if rank_by not in runner.METRIC_NAMES:
        _fail(f"--rank-by must be one of: {', '.join(runner.METRIC_NAMES)}")
    try:
        grid = runner.parse_grid(text)
    except runner.OptimizationError as error:
        _fail(f"--optimize: {error}")
    count = math.prod(len(values) for values in grid.values())
    if count > runner.MAX_COMBINATIONS:
        _fail(f"--optimize: {count:,} combinations; at most {runner.MAX_COMBINATIONS:,}.")
    grid.update({name: [value] for name, value in params.items() if name not in grid})
    return grid


def _optimize(
    formula_file: Path,
    formula: str,
    candles: Any,
    grid: dict[str, list[float]],
    rank_by: str,
    top: int,
    config: Any,
    timeframe: str,
    as_json: bool,
) -> None:
    import json

    from tradeos.backtest import runner
    from tradeos.backtest.report import format_metric
    from tradeos.strategies.formula import EvaluationError, InvalidFormula

    try:
        rows = runner.optimize(candles, formula, grid, objective=rank_by, top=top, config=config)
    except (InvalidFormula, EvaluationError) as error:
        _fail(f"{formula_file.name}: {error}")
    except ValueError as error:  # OptimizationError (an unknown name), BacktestInputError
        _fail(f"Cannot optimize: {error}")
    if as_json:
        answer = {
            "symbol": candles.symbol,
            "timeframe": timeframe,
            "bars": len(candles),
            "rank_by": rank_by,
            "top": [row.as_dict() for row in rows],
        }
        typer.echo(json.dumps(answer))
        return
    combos = 1
    for values in grid.values():
        combos *= len(values)
    console.print(
        f"{candles.symbol} {timeframe}: {len(candles):,} bars, {combos:,} parameter "
        f"combinations, best {len(rows)} by {rank_by}",
        highlight=False,
    )
    shown = [rank_by, *(m for m in ("total_return", "sharpe", "max_drawdown", "trades")
                        if m != rank_by)]  # fmt: skip
    table = Table(title="Optimization")
    table.add_column("rank", justify="right")
    table.add_column("parameters")
    for name in shown:
        table.add_column(name.replace("_", " "), justify="right")
    for row in rows:
        said = ", ".join(f"{name}={value:g}" for name, value in row.params.items())
        values = row.metrics.as_dict()
        table.add_row(str(row.rank), said, *(format_metric(name, values[name]) for name in shown))
    console.print(table)


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


def _backtest_moment(text: str | None, option: str) -> Any:
    from datetime import UTC, datetime

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{option} must be an ISO date or time, e.g. 2024-01-31 or 2024-01-31T12:00Z.")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _backtest_params(pairs: list[str]) -> dict[str, float]:
    import math

    params: dict[str, float] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not equals or not name.strip() or not math.isfinite(value):
            _fail(f"--param takes name=number, e.g. --param fast=10 (got {pair!r}).")
        params[name.strip()] = value
    return params


def _backtest_config(
    *,
    cash: float,
    commission: float,
    fixed_fee: float,
    min_fee: float,
    slippage_bps: float,
    fill: str,
    intrabar: str,
    size: str,
    whole_units: bool,
    allow_short: bool,
) -> Any:
    from tradeos.backtest.engine import BacktestConfig, FillTiming, Sizing
    from tradeos.trading.fill_model import IntrabarRule

    if fill not in {f.value for f in FillTiming}:
        _fail(f"--fill must be one of: {', '.join(f.value for f in FillTiming)}")
    if intrabar not in {r.value for r in IntrabarRule}:
        _fail(f"--intrabar must be one of: {', '.join(r.value for r in IntrabarRule)}")
    text = size.strip().lower().replace(" ", "")
    sizing = Sizing.FIXED
    if text.endswith("%cash"):
        sizing, text = Sizing.PERCENT_CASH, text.removesuffix("%cash")
    elif text.endswith("%"):
        sizing, text = Sizing.PERCENT_EQUITY, text.removesuffix("%")
    try:
        amount = float(text)
    except ValueError:
        amount = -1.0
    if sizing is not Sizing.FIXED:
        amount /= 100
    if not amount > 0 or amount == float("inf"):
        _fail("--size must be a positive percent of equity ('100%'), of free cash ('50%cash') "
              "or a fixed quantity ('2.5').")  # fmt: skip
    try:
        return BacktestConfig(
            initial_cash=cash,
            commission=commission,
            fixed_fee=fixed_fee,
            min_fee=min_fee,
            slippage_bps=slippage_bps,
            fill_at=FillTiming(fill),
            intrabar_rule=IntrabarRule(intrabar),
            sizing=sizing,
            size=amount,
            quantity_step=1.0 if whole_units else 0.0,
            allow_short=allow_short,
        )
    except ValueError as error:
        option = str(error).split(" ")[0].replace("initial_cash", "cash").replace("_", "-")
        _fail(f"--{option}: {error}")


def _backtest_csv(
    path: Path, symbol: str, timeframe: Any, start: Any, end: Any, err: Console
) -> Any:
    from tradeos.backtest.runner import CandleArrays
    from tradeos.market.csv_candles import CsvSummary
    from tradeos.market.csv_frames import parse_candle_frames

    summary = CsvSummary()
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            frames = list(parse_candle_frames(handle, timeframe, summary=summary))
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"Cannot read {path}: {_reason(error)}")
    if summary.rejected:
        for line in summary.describe():
            err.print(f"{path.name}: {line}", markup=False, highlight=False)
    candles = CandleArrays.from_frames(symbol, frames)
    if start is None and end is None:
        return candles
    import numpy as np

    seconds = candles.open_time
    keep = np.ones(seconds.size, dtype=np.bool_)
    if start is not None:
        keep &= seconds >= int(start.timestamp())
    if end is not None:
        keep &= seconds < int(end.timestamp())
    return CandleArrays(
        symbol, seconds[keep], candles.open[keep], candles.high[keep], candles.low[keep],
        candles.close[keep], candles.volume[keep],
    )  # fmt: skip


def _backtest_stored(symbols: list[str], timeframe: Any, start: Any, end: Any, bars: int) -> Any:
    """Each instrument's bars as `GET /market/candles` answers them: stored, resampled from a
    finer stored timeframe, or produced by the market provider (the simulated market by
    default); a bar still forming is left out."""
    from tradeos.backtest.runner import CandleArrays
    from tradeos.core.db import utcnow
    from tradeos.core.errors import NotFound, TradeOSError
    from tradeos.market import service as market
    from tradeos.market.providers.registry import make_market_provider

    settings = load_settings()
    # One more than asked: the last bar may still be forming, and is left out.
    limit = BACKTEST_MAX_BARS if start is not None else bars + 1

    async def load() -> list[CandleArrays]:
        database = Database(settings.sqlalchemy_url)
        try:
            provider = make_market_provider(settings)
            specs = await provider.instruments()
            found = []
            async with database.session() as session:
                # The provider's instruments are known here as in `serve`.
                await market.upsert_instruments(session, specs, provider.name)
                for text in symbols:
                    try:
                        instrument = await market.get_instrument(session, text)
                    except NotFound:
                        _fail(f"Unknown symbol {text!r}: import its candles first "
                              "(tradeos import candles FILE --symbol ... --create).")  # fmt: skip
                    window = market.candle_window(timeframe, start, end, limit, utcnow())
                    try:
                        series = await market.candles(
                            session, provider, instrument, timeframe, *window, limit
                        )
                    except TradeOSError as error:
                        _fail(f"Cannot read the candles of {instrument.symbol}: {error}")
                    closed = [row.bar for row in series.bars if not row.partial]
                    if start is None:
                        closed = closed[-bars:]
                    found.append(CandleArrays.from_bars(instrument.symbol, closed))
            return found
        finally:
            await database.dispose()

    with _database_errors(settings):
        _prepare_database(settings)
        return asyncio.run(load())


def _print_backtest(run: Any, timeframe: str) -> None:
    from tradeos.backtest.report import format_metric

    times = run.open_time
    first, last = (_utc_text(int(times[0])), _utc_text(int(times[-1])))
    console.print(
        f"{', '.join(run.symbols)} {timeframe}: {times.size:,} bars from {first} to {last}",
        highlight=False,
    )
    if run.params:
        said = ", ".join(f"{name}={value:g}" for name, value in run.params.items())
        console.print(f"parameters: {said}", highlight=False)
    table = Table(title="Backtest")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("initial cash", f"{run.config.initial_cash:,.2f}")
    table.add_row("final equity", f"{run.final_equity:,.2f}")
    for name, value in run.metrics.as_dict().items():
        table.add_row(name.replace("_", " "), format_metric(name, value))
    console.print(table)


def _utc_text(seconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = load_settings()
    _ensure_sqlite_folder(settings)
    with _database_errors(settings):
        db_migrations.upgrade(settings.sqlalchemy_url, revision)
    console.print(f"Database at {revision} ({settings.safe_database_url}).")


# ignore_unknown_options: relative revisions such as -1 look like options to the parser.
@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")],
) -> None:
    """Revert migrations down to REVISION."""
    settings = load_settings()
    with _database_errors(settings):
        db_migrations.downgrade(settings.sqlalchemy_url, revision)
    console.print(f"Database downgraded to {revision}.")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and the latest one this version knows."""
    settings = load_settings()
    with _database_errors(settings):
        current = _current_revision(settings)
    console.print(
        f"current: {current or 'none (empty database)'}\nhead:    {db_migrations.head_revision()}"
    )


@db_app.command("reset")
def db_reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every table and all data, then migrate to the latest revision."""
    settings = load_settings()
    if not yes:
        typer.confirm(
            f"This deletes ALL data in {settings.safe_database_url}. Continue?",
            default=False,
            abort=True,
        )
    with _database_errors(settings):
        _on_database(settings, _drop_all_tables)
        db_migrations.upgrade(settings.sqlalchemy_url)
    console.print("Database reset and migrated to the latest revision.")


def _drop_all_tables(connection: Connection) -> None:
    # Reflect what is really there (it may predate these models), then drop it all.
    metadata = MetaData()
    with warnings.catch_warnings():
        # Expression indexes cannot be reflected on SQLite; they go with their table.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        metadata.reflect(connection)
    metadata.drop_all(connection)


def _seed_password(given: str | None, who: str) -> tuple[str, bool]:
    if given is None:
        return secrets.token_urlsafe(12), True
    if len(given) < MIN_SEED_PASSWORD_LENGTH:
        _fail(f"The {who} password must be at least {MIN_SEED_PASSWORD_LENGTH} characters.")
    return given, False


@db_app.command("seed")
def db_seed(
    admin_email: Annotated[str, typer.Option(help="Admin's email.")] = "admin@example.com",
    admin_password: Annotated[
        str | None,
        typer.Option(envvar="SEED_ADMIN_PASSWORD", help="Admin's password (generated if unset)."),
    ] = None,
    demo_email: Annotated[str, typer.Option(help="Demo user's email.")] = "demo@example.com",
    demo_password: Annotated[
        str | None,
        typer.Option(
            envvar="SEED_DEMO_PASSWORD", help="Demo user's password (generated if unset)."
        ),
    ] = None,
) -> None:
    """Create an admin and a demo user. Generated passwords are printed once, here only."""
    from tradeos.accounts import management
    from tradeos.accounts import service as accounts
    from tradeos.accounts.models import Role

    settings = load_settings()
    seeds = [
        ("admin", admin_email, *_seed_password(admin_password, "admin"), Role.SUPER_ADMIN),
        ("demo", demo_email, *_seed_password(demo_password, "demo"), Role.USER),
    ]

    async def seed() -> list[tuple[str, str, str, bool]]:
        database = Database(settings.sqlalchemy_url)
        rows = []
        try:
            for username, email, password, generated, role in seeds:
                async with database.session(write=False) as session:
                    exists = await accounts.find_user(session, email) or await accounts.find_user(
                        session, username
                    )
                if exists:
                    rows.append((username, email, "exists, left unchanged", False))
                    continue
                # Both hash first, then take the write lock for their own unit of work; an
                # administrator is made the one way the audit log records.
                if role is Role.USER:
                    await accounts.register(
                        database, email=email, username=username, password=password
                    )
                else:
                    await management.create_admin(
                        database, email=email, username=username, password=password, role=role
                    )
                rows.append((username, email, password if generated else "(as given)", generated))
        finally:
            await database.dispose()
        return rows

    with _database_errors(settings):
        _prepare_database(settings)
        rows = asyncio.run(seed())
    table = Table(title="Seeded users")
    for column in ("username", "email", "password"):
        table.add_column(column)
    for username, email, shown, _ in rows:
        table.add_row(username, email, shown)
    console.print(table)
    if any(generated for *_, generated in rows):
        console.print("Generated passwords are shown only this once: store them now.")


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@users_app.command("create-admin")
def users_create_admin(
    email: Annotated[str, typer.Option(help="The administrator's email.")],
    username: Annotated[str, typer.Option(help="The administrator's username.")],
    password: Annotated[
        str | None,
        typer.Option(
            envvar="TRADEOS_ADMIN_PASSWORD",
            help="The password. Asked for on a terminal; otherwise generated and printed once.",
        ),
    ] = None,
    super_admin: Annotated[
        bool,
        typer.Option(
            "--super/--no-super", help="A super admin (may grant admin) or a plain admin."
        ),
    ] = True,
) -> None:
    """Create an administrator account (a super admin unless --no-super)."""
    from tradeos.accounts import management
    from tradeos.accounts.models import Role
    from tradeos.accounts.schemas import RegisterRequest
    from tradeos.core.errors import Conflict

    generated = False
    if password is None:
        if _stdin_is_terminal():
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        else:
            password, generated = secrets.token_urlsafe(16), True
    try:
        # The same rules as sign-up: a valid email and username, a password not easily guessed.
        request = RegisterRequest(email=email, username=username, password=password)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            message = str(problem["msg"]).removeprefix("Value error, ")
            typer.secho(f"Invalid {field}: {message}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    role = Role.SUPER_ADMIN if super_admin else Role.ADMIN
    settings = load_settings()

    async def create() -> tuple[int, str]:
        database = Database(settings.sqlalchemy_url)
        try:
            user = await management.create_admin(
                database,
                email=str(request.email),
                username=request.username,
                password=request.password,
                role=role,
            )
            return user.id, user.username
        finally:
            await database.dispose()

    with _database_errors(settings):
        _prepare_database(settings)
        try:
            user_id, name = asyncio.run(create())
        except Conflict as error:
            _fail(f"Not created: {error.detail}", code=1)
    typer.echo(f"Created {role.value.replace('_', ' ')} {name} <{request.email}> (id {user_id}).")
    if generated:
        typer.echo(f"Password (shown only this once, store it now): {password}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)
