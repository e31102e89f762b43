"""Jobs the job tests run, in the test process or in a `tradeos worker --module` process."""

from __future__ import annotations

import asyncio
from typing import Any

from tradeos.core.jobs import JobContext, Priority, job


@job("sample.record", max_attempts=1)
async def record(ctx: JobContext, value: Any = None) -> dict[str, Any]:
    return {"value": value, "attempt": ctx.attempt}


@job("sample.flaky", max_attempts=3, backoff=0.5, max_backoff=5)
async def flaky(ctx: JobContext, fail_times: int) -> dict[str, int]:
    if ctx.attempt <= fail_times:
        raise ValueError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


@job("sample.slow", max_attempts=2, timeout=0.5, backoff=0.2)
async def slow(ctx: JobContext, seconds: float) -> None:
    await asyncio.sleep(seconds)


@job("sample.sleepy", max_attempts=3, timeout=30)
async def sleepy(ctx: JobContext, seconds: float) -> dict[str, int]:
    await ctx.progress(10, "sleeping")
    await asyncio.sleep(seconds)
    return {"attempt": ctx.attempt}


@job("sample.progress", max_attempts=1)
async def progress(ctx: JobContext, hold: float = 1.0) -> str:
    await ctx.progress(50, "halfway")
    await asyncio.sleep(hold)
    return "done"


@job("sample.high", priority=Priority.HIGH, max_attempts=1)
async def high(ctx: JobContext, label: str) -> str:
    return label


@job("sample.low", priority=Priority.LOW, max_attempts=1)
async def low(ctx: JobContext, label: str) -> str:
    return label


@job("sample.tick", max_attempts=1)
async def tick(ctx: JobContext) -> str:
    return "tick"
