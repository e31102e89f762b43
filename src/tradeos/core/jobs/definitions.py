"""Declaring a job: the `job` decorator, priorities, backoff and schedules.

    @job("market.sync_candles", priority=Priority.LOW, timeout=300, max_attempts=5,
         schedule=Every(minutes=5))
    async def sync_candles(ctx: JobContext, symbol: str = "BTC-USD") -> dict[str, int]:
        ...

A job is an `async def` taking a `JobContext` and JSON keyword arguments; what it returns (JSON)
is kept as the run's result summary. Declared once, it runs wherever jobs run: in `serve`
(embedded) or in `tradeos worker` processes. Jobs are delivered at least once: a job that must
not apply twice checks whether its work is already done.

A declared schedule is a default: operators change it, or switch it off, in the JOB_SCHEDULES
setting, written as `parse_schedule` reads it (`every 10m`, `0 4 * * *`, `off`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol

from croniter import CroniterBadDateError, croniter

if TYPE_CHECKING:
    from tradeos.core.jobs.context import JobContext

__all__ = [
    "JOBS",
    "Cron",
    "Every",
    "JobDefinition",
    "Priority",
    "Schedule",
    "describe_schedule",
    "job",
    "on_worker_start",
    "parse_schedule",
]

_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_TIMEOUT_SECONDS: Final = 24 * 3600

# Plain functions a process that runs jobs calls once, in a background thread, as it starts
# taking jobs (a domain registers its warm-up here, e.g. compiling numeric code).
WORKER_START_HOOKS: list[Callable[[], None]] = []


def on_worker_start(hook: Callable[[], None]) -> Callable[[], None]:
    """Register `hook` to run once per job-running process (`serve` embedded, `tradeos
    worker`) as it starts taking jobs, in a background thread. A hook that fails is logged,
    not fatal."""
    if hook not in WORKER_START_HOOKS:
        WORKER_START_HOOKS.append(hook)
    return hook


class Priority(StrEnum):
    """A priority is a queue of its own; workers take from `high` first."""

    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS: Final = {Priority.HIGH: 0, Priority.DEFAULT: 1, Priority.LOW: 2}


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment` (UTC)."""

    def describe(self) -> str: ...


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Every:
    """Every N seconds, on multiples of the period since 1970-01-01 UTC: `Every(minutes=5)`
    fires at :00, :05, :10… Every scheduler computes the same fire times, which is how a
    period fires once in a cluster."""

    seconds: int = 0
    minutes: int = 0
    hours: int = 0
    days: int = 0

    @property
    def period(self) -> int:
        return self.seconds + 60 * self.minutes + 3600 * self.hours + 86400 * self.days

    def __post_init__(self) -> None:
        if self.period < 1:
            raise ValueError("a schedule's period must be at least one second")

    def next_after(self, moment: datetime) -> datetime:
        elapsed = int((moment - _EPOCH).total_seconds() // self.period)
        return _EPOCH + timedelta(seconds=(elapsed + 1) * self.period)

    def describe(self) -> str:
        return f"every {self.period} s"


@dataclass(frozen=True)
class Cron:
    """A cron expression in UTC: `Cron("0 3 * * *")` is 03:00 UTC daily (croniter syntax,
    five fields, or six with seconds last)."""

    expression: str

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.expression):
            raise ValueError(f"{self.expression!r} is not a cron expression")

    def next_after(self, moment: datetime) -> datetime:
        fire: datetime = croniter(self.expression, moment.astimezone(UTC)).get_next(datetime)
        return fire.astimezone(UTC)

    def describe(self) -> str:
        return f"cron {self.expression}"


# What JOB_SCHEDULES accepts, for messages.
SCHEDULE_SYNTAX: Final = (
    "every <n><s|m|h|d> (e.g. every 10m), a five-field cron expression in UTC "
    "(e.g. 0 4 * * *), or off"
)
OFF: Final = "off"
_EVERY_TEXT: Final = re.compile(r"every (\d{1,9}) ?([smhd])")
_EVERY_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Rarer than yearly is a calendar matter, better said in cron; the cap also keeps every fire
# time within what `datetime` can hold.
MAX_EVERY_PERIOD: Final = timedelta(days=366)
_CRON_FIELDS: Final = 5


def parse_schedule(text: str) -> Schedule | None:
    """A schedule as operators write it in settings: `every 10m` is `Every(minutes=10)`, five
    cron fields are a `Cron` (UTC), and `off` is None: the job never fires."""
    words = text.split()
    spoken = " ".join(words).lower()
    if spoken == OFF:
        return None
    every = _EVERY_TEXT.fullmatch(spoken)
    if every:
        return _every(int(every[1]), every[2], text)
    if len(words) == _CRON_FIELDS:
        return _cron(" ".join(words), text)
    raise ValueError(f"{text!r} is not a schedule: use {SCHEDULE_SYNTAX}")


def _every(count: int, unit: str, text: str) -> Every:
    if count == 0:
        raise ValueError(f"{text!r} never comes round: the period must be at least 1{unit}")
    schedule = Every(**{_EVERY_UNITS[unit]: count})
    if timedelta(seconds=schedule.period) > MAX_EVERY_PERIOD:
        raise ValueError(
            f"{text!r} is longer than {MAX_EVERY_PERIOD.days} days: use a cron expression"
        )
    return schedule


def _cron(expression: str, text: str) -> Cron:
    if not croniter.is_valid(expression):
        raise ValueError(
            f"{text!r} is not a valid cron expression (minute hour day month weekday, UTC)"
        )
    schedule = Cron(expression)
    try:
        # A date no month has (0 0 31 2 *) is valid cron, but would stop the scheduler cold.
        schedule.next_after(_EPOCH)
    except CroniterBadDateError:
        raise ValueError(f"{text!r} names a date that never comes: it would never fire") from None
    return schedule


def describe_schedule(schedule: Schedule | None) -> str:
    """How a schedule reads in the admin overview; `off` for a switched-off job."""
    return OFF if schedule is None else schedule.describe()


JobFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class JobDefinition:
    name: str
    function: JobFunction
    priority: Priority = Priority.DEFAULT
    max_attempts: int = 3
    timeout: float = 300.0
    # Wait before attempt n+1: backoff * 2**(n-1), at most max_backoff (seconds).
    backoff: float = 5.0
    max_backoff: float = 600.0
    schedule: Schedule | None = None
    schedule_arguments: Mapping[str, Any] = field(default_factory=dict)

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt: exponential, capped."""
        return float(min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1)))

    async def __call__(self, ctx: JobContext, **arguments: Any) -> Any:
        """Run the job's function directly (tests, or composing jobs): no queue, no record."""
        return await self.function(ctx, **arguments)


# Every declared job by name; `tradeos.jobs` imports the modules that declare them.
JOBS: dict[str, JobDefinition] = {}


def job(
    name: str,
    *,
    priority: Priority = Priority.DEFAULT,
    max_attempts: int = 3,
    timeout: float = 300.0,
    backoff: float = 5.0,
    max_backoff: float = 600.0,
    schedule: Schedule | None = None,
    schedule_arguments: Mapping[str, Any] | None = None,
) -> Callable[[JobFunction], JobDefinition]:
    """Declare a job (see the module docstring). The name is dotted, domain first."""
    if not _NAME.match(name) or len(name) > 100:
        raise ValueError(f"job name {name!r} must be dotted lower-case words, e.g. market.sync")
    if not 1 <= max_attempts <= 100:
        raise ValueError("max_attempts must be 1 to 100")
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"timeout must be more than 0 and at most {MAX_TIMEOUT_SECONDS} s")
    if backoff < 0 or max_backoff < backoff:
        raise ValueError("backoff must be at least 0 and at most max_backoff")

    def declare(function: JobFunction) -> JobDefinition:
        definition = JobDefinition(
            name=name,
            function=function,
            priority=Priority(priority),
            max_attempts=max_attempts,
            timeout=timeout,
            backoff=backoff,
            max_backoff=max_backoff,
            schedule=schedule,
            schedule_arguments=dict(schedule_arguments or {}),
        )
        existing = JOBS.get(name)
        if existing is not None and existing.function is not function:
            # Re-importing the same module is harmless; two jobs with one name are not.
            same_place = (existing.function.__module__, existing.function.__qualname__) == (
                function.__module__,
                function.__qualname__,
            )
            if not same_place:
                raise ValueError(f"a job named {name!r} is already declared")
        JOBS[name] = definition
        return definition

    return declare
