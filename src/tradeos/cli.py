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
                # The live market feed runs once per deployment too: beside the schedules.
                await asyncio.gather(schedule.run(), *([feed.run()] if feed else []))
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
