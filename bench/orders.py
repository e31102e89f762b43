"""Order placement through the API vs two baselines: `GET /api/v1/ping` and a bare one-row insert.

    python bench/orders.py [--backend sqlite|postgresql|both] [--clients 16] [--requests 400]
                           [--rounds 5] [--warmup 100]
                           [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
                           [--sides alternate|buy] [--profile] [--orders 300]

Three variants, each served by one uvicorn worker on the same database (a migrated SQLite file
in a temporary folder, or a PostgreSQL database the bench creates and drops):

- order: `POST /api/v1/orders` of a real `uvicorn --factory tradeos.app:app_factory` process, a
  market order of 0.01 BTC-USD (the offline `sim` market gives the price): authentication,
  rate limits (raised out of the way), the risk checks, the order, its fill, the position, the
  balance, the notification and the events, in one unit of work. Every client is a user of its
  own with a paper account of 1e9 USD whose risk profile has no daily trades cap (the default
  caps at 50); a client alternates buy and sell, so its position stays small. Each answer must
  be 201 with status `filled`. (`--sides buy`: buys only, no position is ever closed.)
- ping: `GET /api/v1/ping` of the same process: what the framework and middleware cost.
- bare insert: a bare FastAPI app in a second uvicorn process (`baseline_app` below) whose
  endpoint takes a small JSON body and inserts one row in one transaction through SQLAlchemy
  async, with TradeOS's engine settings (`core.db.create_engine`: the same driver, and on
  SQLite the same pragmas, one connection and BEGIN IMMEDIATE). Each answer must be 201.

`--clients` concurrent clients (one keep-alive connection each) send requests back to back;
after a warm-up of each variant, the variants alternate in rounds of `--requests` requests
(the order of the variants rotating), so all see the same machine load. Reports req/s,
p50/p95/p99 latency, the server process's CPU ms per request, errors (a run with errors is not
a result), and order ÷ bare-insert throughput; orders per round show whether placement slows
as the accounts' history grows.

`--profile` places orders in-process instead (httpx ASGITransport against `app_factory()` with
its lifespan, one request at a time, `--orders` of them after a warm-up): the wall time of each
step of the request (authentication, `place_order`'s steps, the commit) with the SQL statements
each ran, then cProfile's CPU time of one order and of all of them, grouped by area (auth, risk,
trading, market, DB, events, serialization, framework) and as the top functions by cumulative
and by own time. On SQLite the statements run in aiosqlite's thread, which cProfile does not
see: the step table's SQL column has that time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import io
import os
import pstats
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI, status
from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
    make_url,
)
from sqlalchemy import insert as sql_insert
from sqlalchemy.ext.asyncio import AsyncEngine

API = "/api/v1"
SYMBOL = "BTC-USD"
QUANTITY = "0.01"
STARTING_BALANCE = "1000000000"  # the most a paper account may start with
BENCH_FOLDER = str(Path(__file__).resolve().parent)
RAISED_LIMIT = "1000000/minute"
IDLE_SECONDS = 5

# -- the bare baseline: one row, one transaction, no TradeOS code on the request path --------

_metadata = MetaData()
bench_rows = Table(
    "bench_rows",
    _metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("account_id", Integer, nullable=False),
    Column("symbol", String(41), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", String(40), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


class RowIn(BaseModel):
    account_id: int
    symbol: str
    side: str
    quantity: str


def baseline_app() -> FastAPI:
    """`uvicorn --factory --app-dir bench orders:baseline_app` (BENCH_DATABASE_URL set)."""
    from tradeos.core.db import create_engine

    state: dict[str, AsyncEngine] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # TradeOS's engine settings, so the baseline pays what TradeOS's connection pays.
        state["engine"] = create_engine(os.environ["BENCH_DATABASE_URL"])
        yield
        await state["engine"].dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/rows", status_code=status.HTTP_201_CREATED)
    async def add_row(body: RowIn) -> dict[str, int]:
        async with state["engine"].begin() as connection:
            row_id = await connection.scalar(
                sql_insert(bench_rows).values(**body.model_dump()).returning(bench_rows.c.id)
            )
        return {"id": int(row_id)}

    return app


# -- databases -------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    url: str  # SQLAlchemy URL (async driver)
    admin_url: str | None = None  # PostgreSQL: where to create/drop the database
    database: str | None = None

    async def create(self) -> None:
        from tradeos import migrations
        from tradeos.core.db import create_engine

        if self.name == "postgresql":
            admin = await asyncpg.connect(self.admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await admin.close()
        await asyncio.to_thread(migrations.upgrade, self.url)
        engine = create_engine(self.url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(_metadata.create_all)
        finally:
            await engine.dispose()

    async def drop(self) -> None:
        if self.name == "postgresql":
            admin = await asyncpg.connect(self.admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()


def make_backend(name: str, folder: Path, postgres: str) -> Backend:
    from tradeos.config import normalize_database_url

    if name == "sqlite":
        return Backend(name, f"sqlite+aiosqlite:///{folder / 'tradeos.db'}")
    database = f"tradeos_bench_orders_{os.getpid()}"
    url = normalize_database_url(make_url(postgres).set(database=database).render_as_string(False))
    return Backend(name, url, admin_url=postgres, database=database)


# -- traders ---------------------------------------------------------------------------------


@dataclass
class Trader:
    headers: dict[str, str]
    account_id: int = 0
    sides: str = "alternate"  # alternate: buy, sell, buy...; buy: buys only
    side: str = "buy"  # of the next order

    def next_order(self) -> dict[str, str | int]:
        body: dict[str, str | int] = {
            "account_id": self.account_id,
            "symbol": SYMBOL,
            "side": self.side,
            "type": "market",
            "quantity": QUANTITY,
        }
        if self.sides == "alternate":
            self.side = "sell" if self.side == "buy" else "buy"
        return body


async def sign_in_traders(url: str, settings: Any, count: int, sides: str) -> list[Trader]:
    """`count` users with a login session each (no password check: the bench is no login)."""
    from tradeos.accounts.models import User
    from tradeos.accounts.service import ClientInfo, open_session
    from tradeos.core.db import Database

    database = Database(url)
    traders = []
    try:
        async with database.session() as session:
            for n in range(count):
                user = User(
                    email=f"bench{n}@example.com",
                    username=f"bench{n}",
                    password_hash="x",
                    role="user",
                    is_active=True,
                )
                session.add(user)
                await session.flush()
                tokens = await open_session(
                    session, settings, user, device=None, client=ClientInfo()
                )
                headers = {"Authorization": f"Bearer {tokens.access_token}"}
                traders.append(Trader(headers, sides=sides))
    finally:
        await database.dispose()
    return traders


async def open_accounts(client: httpx.AsyncClient, traders: list[Trader]) -> None:
    """A paper account each, through the API, with no daily trades cap."""
    for trader in traders:
        response = await client.post(
            f"{API}/accounts",
            headers=trader.headers,
            json={"name": "Bench", "starting_balance": STARTING_BALANCE},
        )
        assert response.status_code == 201, response.text
        trader.account_id = response.json()["id"]
        response = await client.put(
            f"{API}/risk/profile",
            params={"account_id": trader.account_id},
            headers=trader.headers,
            json={"max_daily_trades": None},
        )
        assert response.status_code == 200, response.text


def _settings_values(backend: Backend, folder: Path, secret: str) -> dict[str, str]:
    """The TradeOS settings of the bench, as environment variables."""
    return {
        "DATABASE_URL": backend.url,
        "DATA_DIR": str(folder / "data"),
        "JWT_SECRET_KEY": secret,
        "ACCESS_TOKEN_MINUTES": "240",
        "MARKET_PROVIDER": "sim",
        "RATE_LIMIT_USER": RAISED_LIMIT,
        "RATE_LIMIT_TRADING": RAISED_LIMIT,
        "RATE_LIMIT_MARKET_DATA": RAISED_LIMIT,
        "LOG_LEVEL": "WARNING",
    }


def _tradeos_settings(values: dict[str, str]) -> Any:
    from tradeos.config import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=values["DATABASE_URL"],
        data_dir=values["DATA_DIR"],
        jwt_secret_key=values["JWT_SECRET_KEY"],
        access_token_minutes=int(values["ACCESS_TOKEN_MINUTES"]),
    )


# -- servers ---------------------------------------------------------------------------------


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


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def wait_until_up(self, path: str) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server at {self.url} exited")
                with contextlib.suppress(httpx.TransportError):
                    await client.get(self.url + path)
                    return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the server at {self.url} did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(app: list[str], environment: dict[str, str], folder: Path) -> Server:
    port = _free_port()
    command = [
        sys.executable, "-m", "uvicorn", *app, "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "--no-access-log", "--no-server-header",
        # A client idle while the other variants run keeps its connection (uvicorn's default
        # of 5 s would close it, and a request racing the close fails).
        "--timeout-keep-alive", "600",
    ]  # fmt: skip
    # cwd: a folder without a .env file. One worker, as the issue asks.
    process = subprocess.Popen(command, env=environment, cwd=folder)  # noqa: S603
    return Server(process, f"http://127.0.0.1:{port}")


# -- load ------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One kind of request, and what each round of it measured."""

    name: str
    server: Server
    send: Callable[[httpx.AsyncClient, int], Awaitable[str | None]]  # client n -> error or None
    latencies: list[float] = field(default_factory=list)
    round_rates: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def burst(
    variant: Variant, clients: list[httpx.AsyncClient], requests: int, record: bool
) -> None:
    """`requests` requests, `len(clients)` at a time: each client sends its next request as
    soon as its previous one is answered."""
    next_request = 0
    latencies: list[float] = []

    async def client_loop(n: int, client: httpx.AsyncClient) -> None:
        nonlocal next_request
        while next_request < requests:
            next_request += 1
            started = time.perf_counter()
            try:
                error = await variant.send(client, n)
            except httpx.HTTPError as exc:
                error = repr(exc)
            latencies.append(time.perf_counter() - started)
            if error is not None:
                variant.errors.append(error)

    cpu = variant.server.cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(client_loop(n, client) for n, client in enumerate(clients)))
    seconds = time.perf_counter() - started
    if record:
        variant.latencies += latencies
        variant.round_rates.append(requests / seconds)
        variant.seconds += seconds
        variant.cpu += variant.server.cpu_seconds() - cpu


def order_sender(
    traders: list[Trader],
) -> Callable[[httpx.AsyncClient, int], Awaitable[str | None]]:
    async def send(client: httpx.AsyncClient, n: int) -> str | None:
        trader = traders[n]
        response = await client.post(
            f"{API}/orders", headers=trader.headers, json=trader.next_order()
        )
        if response.status_code != 201:
            return f"{response.status_code}: {response.text[:300]}"
        placed = response.json()
        if placed["status"] != "filled":
            return f"201 but {placed['status']}: {placed.get('cancel_reason')}"
        return None

    return send


async def ping(client: httpx.AsyncClient, _n: int) -> str | None:
    response = await client.get(f"{API}/ping")
    return None if response.status_code == 200 else f"{response.status_code}: {response.text}"


async def bare_insert(client: httpx.AsyncClient, n: int) -> str | None:
    body = {"account_id": n + 1, "symbol": SYMBOL, "side": "buy", "quantity": QUANTITY}
    response = await client.post("/rows", json=body)
    return None if response.status_code == 201 else f"{response.status_code}: {response.text}"


def _clients(base_url: str, count: int) -> list[httpx.AsyncClient]:
    # A client (one keep-alive connection) each: as many connections as concurrent requests.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return [httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) for _ in range(count)]


async def measure(variants: list[Variant], arguments: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        pools = {}
        for variant in variants:
            clients = _clients(variant.server.url, arguments.clients)
            for client in clients:
                await stack.enter_async_context(client)
            pools[variant.name] = clients
        for variant in variants:
            await burst(variant, pools[variant.name], arguments.warmup, record=False)
        for round_number in range(arguments.rounds):
            shift = round_number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                await burst(variant, pools[variant.name], arguments.requests, record=True)
            rates = ", ".join(f"{v.name} {v.round_rates[-1]:,.0f}" for v in variants)
            print(f"round {round_number + 1}: req/s {rates} (load {_load()})", flush=True)


def report(name: str, variants: list[Variant]) -> None:
    by_name = {variant.name: variant for variant in variants}
    print(f"\n| {name} | req/s | p50 ms | p95 ms | p99 ms | server CPU ms/req | errors |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        rate = v.requests / v.seconds
        print(
            f"| {v.name} | {rate:,.0f} | {v.percentile(0.5) * 1000:.1f} | "
            f"{v.percentile(0.95) * 1000:.1f} | {v.percentile(0.99) * 1000:.1f} | "
            f"{v.cpu / v.requests * 1000:.2f} | {len(v.errors)} |"
        )
    order, bare = by_name["order"], by_name["bare insert"]
    ratio = (order.requests / order.seconds) / (bare.requests / bare.seconds)
    p99 = order.percentile(0.99) * 1000
    throughput = "met" if ratio >= 0.25 else "missed"
    latency = "met" if p99 < 50 else "missed"
    print(
        f"\norder ÷ bare insert: {ratio:.1%} (target ≥ 25%: {throughput});"
        f" order p99 {p99:.1f} ms (target < 50 ms: {latency})"
    )
    print("orders/s by round: " + ", ".join(f"{rate:,.0f}" for rate in order.round_rates))
    for v in variants:
        if v.errors:
            print(f"{v.name}: {len(v.errors)} errors, e.g. {v.errors[0]}")
    if any(v.errors for v in variants):
        print("ERRORS: this run is not a result")


# -- profile ---------------------------------------------------------------------------------


class StepClock:
    """Wall time of named steps of a request (inclusive: a step's time includes the steps and
    statements it ran), and the SQL statements run inside each (counted to the innermost)."""

    def __init__(self) -> None:
        self.stack: list[str] = ["(outside the steps)"]
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.statements: dict[str, int] = {}
        self.sql_seconds: dict[str, float] = {}
        self._statement_started = 0.0

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            self.stack.append(label)
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
                self.calls[label] = self.calls.get(label, 0) + 1
                self.stack.pop()

        setattr(owner, attribute, timed)

    def watch(self, engine: AsyncEngine) -> None:
        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _before(*_args: Any) -> None:
            self._statement_started = time.perf_counter()

        @event.listens_for(engine.sync_engine, "after_cursor_execute")
        def _after(*_args: Any) -> None:
            label = self.stack[-1]
            elapsed = time.perf_counter() - self._statement_started
            self.statements[label] = self.statements.get(label, 0) + 1
            self.sql_seconds[label] = self.sql_seconds.get(label, 0.0) + elapsed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.statements.clear()
        self.sql_seconds.clear()


# (module[:class], function, label) of the steps of `POST /orders` timed, in the order they run;
# a function this tree does not have is skipped.
ORDER_STEPS = (
    ("tradeos.accounts.deps", "_authenticate", "auth: token, user, rate limit"),
    ("tradeos.trading.service", "place_order", "place_order, of which:"),
    ("tradeos.trading.service", "get_account", "  account (read, then locked)"),
    ("tradeos.trading.state", "start_day", "  trading_state.start_day"),
    ("tradeos.market.service", "get_instrument", "  instrument"),
    ("tradeos.market.service", "ticker", "  market.ticker: tick + 24h stats"),
    ("tradeos.trading.service", "_risk_violations", "  risk: profile, positions, day, orders"),
    ("tradeos.trading.service", "book_execution", "  book_execution: fill, position, balance"),
    ("tradeos.trading.service", "record_round_trip", "    of which record_round_trip"),
    ("tradeos.trading.state", "review_after_fill", "    of which state.review_after_fill"),
    ("tradeos.notifications.service", "notify", "    of which the notification"),
    ("tradeos.trading.service", "open_bracket_children", "  open_bracket_children"),
    ("sqlalchemy.ext.asyncio:AsyncSession", "flush", "  ORM flushes (inserts, updates)"),
    ("sqlalchemy.ext.asyncio:AsyncSession", "commit", "commit"),
)


def clock_steps(app: FastAPI) -> StepClock:
    """Time the steps of `POST /orders` by wrapping the functions the request calls (looked
    up at call time: module attributes, so the wrappers are what the callers find)."""
    import importlib

    clock = StepClock()
    for where, attribute, label in ORDER_STEPS:
        module_name, _, class_name = where.partition(":")
        owner: Any = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
        if hasattr(owner, attribute):
            clock.wrap(owner, attribute, label)
    clock.watch(app.state.database.engine)
    return clock


AREAS = (
    # (area, substrings of a function's file or name), first match wins
    ("DB: SQLAlchemy + driver", ("sqlalchemy", "aiosqlite", "asyncpg", "sqlite3")),
    ("auth + rate limit", ("tradeos/accounts", "ratelimit", "core/security", "/jwt/", "limits/")),
    ("risk", ("tradeos/risk",)),
    ("trading: orders, fill, ledger", ("tradeos/trading",)),
    ("market: instrument, tick", ("tradeos/market",)),
    ("events + notifications", ("core/events", "core/transactions", "tradeos/notifications")),
    ("serialization: pydantic, JSON", ("pydantic", "json", "encoders", "core/fields")),
    ("decimal", ("decimal",)),
    ("framework: FastAPI, Starlette, middleware, logs", (
        "fastapi", "starlette", "tradeos/core", "structlog", "prometheus", "logging",
    )),
    ("asyncio event loop", ("asyncio", "anyio", "selectors")),
)  # fmt: skip
# The bench's own side of the requests (httpx's client and its ASGI transport): left out.
CLIENT_SIDE = "the bench's httpx client"


def _area(key: tuple[str, int, str]) -> str | None:
    filename, _, name = key
    where = name if filename == "~" else filename.replace(os.sep, "/")
    if "/httpx/" in where or where.endswith("bench/orders.py"):
        return CLIENT_SIDE
    for area, marks in AREAS:
        if any(mark in where for mark in marks):
            return area
    return None if filename == "~" else "other"


def areas(stats: pstats.Stats) -> dict[str, float]:
    """Own (tottime) seconds by area; a built-in function's time goes to its callers' areas,
    shared as they called it."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    shares: dict[str, float] = {}
    for key, (_cc, _nc, own, _cum, callers) in table.items():
        area = _area(key)
        if area is not None or not callers:
            shares[area or "other"] = shares.get(area or "other", 0.0) + own
            continue
        called = sum(entry[2] for entry in callers.values()) or 1.0
        for caller, entry in callers.items():
            caller_area = _area(caller) or "other"
            shares[caller_area] = shares.get(caller_area, 0.0) + own * entry[2] / called
    return shares


def print_profile(profiler: cProfile.Profile, orders: int, lines: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    shares = areas(stats)
    client = shares.pop(CLIENT_SIDE, 0.0)
    total = sum(shares.values())
    print(
        f"CPU of the event loop's thread (cProfile, thread time) per order:"
        f" {total / orders * 1000:.2f} ms in the app"
        f" (+ {client / orders * 1000:.2f} ms in the bench's client), by area (own time):"
    )
    for area, seconds in sorted(shares.items(), key=lambda item: -item[1]):
        print(f"  {area:<50}{seconds / orders * 1000:>8.3f} ms {seconds / total:>6.1%}")
    stats.sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    print(out.getvalue())


async def profile(name: str, arguments: argparse.Namespace) -> None:
    from tradeos.app import app_factory
    from tradeos.config import get_settings

    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        backend = make_backend(name, folder, arguments.postgres)
        await backend.create()
        values = _settings_values(backend, folder, secrets.token_hex(32))
        saved, cwd = dict(os.environ), os.getcwd()
        try:
            os.environ.clear()
            os.environ.update(_server_environment(values))
            os.chdir(folder)  # no .env of the checkout
            get_settings.cache_clear()
            settings = _tradeos_settings(values)
            traders = await sign_in_traders(backend.url, settings, 1, arguments.sides)
            app = app_factory()
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://bench"
                ) as client:
                    await open_accounts(client, traders)
                    await profile_orders(app, client, traders[0], name, arguments)
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()
            await backend.drop()


async def profile_orders(
    app: FastAPI,
    client: httpx.AsyncClient,
    trader: Trader,
    name: str,
    arguments: argparse.Namespace,
) -> None:
    async def place() -> float:
        started = time.perf_counter()
        response = await client.post(
            f"{API}/orders", headers=trader.headers, json=trader.next_order()
        )
        seconds = time.perf_counter() - started
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "filled", response.text
        return seconds

    for _ in range(50):  # warm-up: caches, statement caches, first-call imports
        await place()
    clock = clock_steps(app)
    walls = [await place() for _ in range(arguments.orders)]
    orders = len(walls)
    total = sum(walls)
    print(f"\n== {name}: {orders} orders in-process, one at a time (load {_load()})")
    print(
        f"wall per order: mean {total / orders * 1000:.2f} ms, p50 "
        f"{statistics.median(walls) * 1000:.2f} ms; steps (inclusive, mean ms per order):"
    )
    print(f"  {'step':<52}{'wall ms':>9}{'share':>8}{'SQL stmts':>11}{'SQL ms':>8}")
    print(
        "  (SQL: the statements a step ran itself, not in a step listed under it; flushes'"
        " statements are counted under the flushes)"
    )
    for label in [*(label for *_, label in ORDER_STEPS), clock.stack[0]]:
        if label not in clock.calls and label not in clock.statements:
            continue
        seconds = clock.seconds.get(label, 0.0)
        print(
            f"  {label:<52}{seconds / orders * 1000:>9.2f}{seconds / total:>8.1%}"
            f"{clock.statements.get(label, 0) / orders:>11.1f}"
            f"{clock.sql_seconds.get(label, 0.0) / orders * 1000:>8.2f}"
        )
    statements = sum(clock.statements.values())
    sql = sum(clock.sql_seconds.values())
    print(
        f"  all SQL: {statements / orders:.1f} statements, {sql / orders * 1000:.2f} ms per order"
        f" ({sql / total:.0%} of the wall time)"
    )

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    await place()
    profiler.disable()
    print(f"\n== cProfile: one order ({name})")
    print_profile(profiler, 1, 25)

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for _ in range(arguments.orders):
        await place()
    profiler.disable()
    print(f"\n== cProfile: {arguments.orders} orders ({name})")
    print_profile(profiler, arguments.orders, 40)


# -- main ------------------------------------------------------------------------------------


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run_backend(name: str, arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        backend = make_backend(name, folder, arguments.postgres)
        await backend.create()
        servers: list[Server] = []
        try:
            values = _settings_values(backend, folder, secrets.token_hex(32))
            traders = await sign_in_traders(
                backend.url, _tradeos_settings(values), arguments.clients, arguments.sides
            )
            tradeos = start_server(["tradeos.app:app_factory"], _server_environment(values), folder)
            servers.append(tradeos)
            bare = start_server(
                ["--app-dir", BENCH_FOLDER, "orders:baseline_app"],
                _server_environment({"BENCH_DATABASE_URL": backend.url}),
                folder,
            )
            servers.append(bare)
            await tradeos.wait_until_up("/live")
            await bare.wait_until_up("/docs")
            await asyncio.sleep(2)  # start-up jobs (the sim listings sync) done
            async with httpx.AsyncClient(base_url=tradeos.url, timeout=60) as client:
                await open_accounts(client, traders)
            # What the app burns with no request (the sim live feed, the scheduler): the CPU
            # column of its variants includes it.
            cpu = tradeos.cpu_seconds()
            await asyncio.sleep(IDLE_SECONDS)
            idle = (tradeos.cpu_seconds() - cpu) / IDLE_SECONDS
            print(f"TradeOS server idle: {idle * 1000:.0f} ms CPU per second", flush=True)
            variants = [
                Variant("order", tradeos, order_sender(traders)),
                Variant("ping", tradeos, ping),
                Variant("bare insert", bare, bare_insert),
            ]
            print(
                f"\n## {name}: {arguments.clients} clients, {arguments.rounds} rounds of"
                f" {arguments.requests} requests per variant after {arguments.warmup} of warm-up"
                f" (load {_load()})",
                flush=True,
            )
            await measure(variants, arguments)
            print(f"(load after: {_load()})")
            report(name, variants)
        finally:
            for server in servers:
                server.stop()
            await backend.drop()


async def main(arguments: argparse.Namespace) -> None:
    names = ["sqlite", "postgresql"] if arguments.backend == "both" else [arguments.backend]
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {_load()}")
    for name in names:
        if arguments.profile:
            await profile(name, arguments)
        else:
            await run_backend(name, arguments)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=100, help="requests per variant")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--sides",
        choices=["alternate", "buy"],
        default="alternate",
        help="each client's orders: buy, sell, buy... (every sell closes a round trip), or buys",
    )
    parser.add_argument("--profile", action="store_true", help="profile in-process instead")
    parser.add_argument("--orders", type=int, default=300, help="orders profiled (--profile)")
    asyncio.run(main(parser.parse_args()))
