"""Embedded SQLite under concurrent read-then-write units of work, TradeOS's engine vs baselines.

    python bench/sqlite_writers.py [--tasks 32] [--units 2000]

Each unit of work reads the users table, then inserts one user and commits: the shape of
most use cases. All variants run here, in one process, on fresh database files:

- tradeos: the engine TradeOS uses (one connection per process, BEGIN IMMEDIATE for writes)
- pool-20-immediate: 20 pooled connections, BEGIN IMMEDIATE (writers poll SQLite's lock)
- pool-20-deferred: 20 pooled connections, plain BEGIN (SQLAlchemy's usual setup)

Prints units/s, p50/p99 latency and failed units; the figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tradeos import migrations
from tradeos.accounts.models import User
from tradeos.core.db import create_engine


def _pooled_engine(url: str, begin: str) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=20, max_overflow=0, pool_timeout=60)

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        for pragma in (
            "journal_mode=WAL",
            "busy_timeout=5000",
            "foreign_keys=ON",
            "synchronous=NORMAL",
        ):
            dbapi_connection.cursor().execute(f"PRAGMA {pragma}")

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


async def _unit(engine: AsyncEngine, n: int) -> float:
    started = time.perf_counter()
    async with engine.connect() as connection:
        await connection.scalar(select(func.count()).select_from(User))
        await connection.execute(
            insert(User).values(
                email=f"u{n}@example.com",
                username=f"u{n}",
                password_hash="x",
                role="user",
                is_active=True,
            )
        )
        await connection.commit()
    return time.perf_counter() - started


async def _run(engine: AsyncEngine, tasks: int, units: int) -> dict[str, float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(units):
        queue.put_nowait(n)
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while not queue.empty():
            n = queue.get_nowait()
            try:
                latencies.append(await _unit(engine, n))
            except Exception:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "units_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
        "failed": failures,
    }


async def main(tasks: int, units: int) -> None:
    variants = {
        "tradeos": lambda url: create_engine(url),
        "pool-20-immediate": lambda url: _pooled_engine(url, "BEGIN IMMEDIATE"),
        "pool-20-deferred": lambda url: _pooled_engine(url, "BEGIN"),
    }
    print(f"{tasks} concurrent tasks, {units} read-then-write units of work each variant")
    print(f"{'variant':<20}{'units/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for name, make in variants.items():
            url = f"sqlite+aiosqlite:///{Path(folder) / name}.db"
            await asyncio.to_thread(migrations.upgrade, url)
            engine = make(url)
            try:
                result = await _run(engine, tasks, units)
            finally:
                await engine.dispose()
            print(
                f"{name:<20}{result['units_per_s']:>10.0f}{result['p50_ms']:>10.1f}"
                f"{result['p99_ms']:>10.1f}{result['failed']:>8.0f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--units", type=int, default=2000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.tasks, arguments.units))
