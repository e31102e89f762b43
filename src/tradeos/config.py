"""TradeOS settings: one object, read from the environment and `.env`.

Every field here is listed with its default and meaning in `.env.example` and in the README
(a test keeps the three in step). A bad value stops start-up with one line per variable
(`settings_error_lines`), never a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import limits
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tradeos.market import symbols
from tradeos.market.timeframes import Timeframe

Environment = Literal["development", "test", "production"]
RateLimitStrategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]


def _check_rate_limit(value: str) -> str:
    try:
        limit = limits.parse(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit like 10/minute or 100 per hour") from None
    if limit.amount < 1:
        raise ValueError(f"{value!r} allows no requests at all; use at least 1")
    return value


RateLimitText = Annotated[str, AfterValidator(_check_rate_limit)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# The file in DATA_DIR that keeps the generated development JWT secret across restarts.
JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name, not a secret
MIN_SECRET_LENGTH = 32
# Placeholders people copy from examples; production refuses them whatever their length.
_KNOWN_PLACEHOLDERS = ("change", "secret", "example", "default", "password", "tradeos")

# The candle sync's back-fill reaches at most this far (a year of minutes is 525,600 bars per
# instrument: deeper history is a `tradeos import candles` matter).
MAX_BACKFILL_DAYS = 366

_SQLITE_DRIVER = "sqlite+aiosqlite"
_POSTGRES_DRIVER = "postgresql+asyncpg"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
        # Error messages name the variable and the rule, never the value (it may be a secret).
        hide_input_in_errors=True,
    )

    environment: Environment = "development"
    debug: bool = False
    log_level: LogLevel = "INFO"
    data_dir: Path = Path("data")
    database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    redis_url: str | None = None
    jwt_secret_key: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Keys TradeOS writes to Redis start with this, so several deployments can share one Redis.
    redis_key_prefix: str = Field(default="tradeos", pattern=r"^[A-Za-z0-9_.:-]{1,50}$")

    # -- identity ---------------------------------------------------------------------------
    access_token_minutes: int = Field(default=15, ge=1, le=1440)
    refresh_token_days: int = Field(default=30, ge=1, le=365)
    jwt_issuer: str = Field(default="tradeos", min_length=1)
    jwt_audience: str = Field(default="tradeos-api", min_length=1)
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_failure_window_minutes: int = Field(default=15, ge=1, le=1440)
    login_lockout_minutes: int = Field(default=15, ge=1, le=1440)
    login_max_failures_per_ip: int = Field(default=50, ge=1, le=100_000)

    # -- rate limits (the `limits` library's notation: "10/minute", "100 per hour") ----------
    rate_limit_enabled: bool = True
    rate_limit_strategy: RateLimitStrategy = "moving-window"
    rate_limit_auth: RateLimitText = "10/minute"
    rate_limit_trading: RateLimitText = "50/minute"
    rate_limit_market_data: RateLimitText = "200/minute"
    rate_limit_data_sync: RateLimitText = "10/minute"
    rate_limit_user: RateLimitText = "1000/minute"
    # Per-tier overrides of RATE_LIMIT_USER: "pro=3000/minute,enterprise=10000/minute".
    rate_limit_tier_overrides: Annotated[dict[str, RateLimitText], NoDecode] = Field(
        default_factory=lambda: {"pro": "3000/minute", "enterprise": "10000/minute"}
    )

    # -- file storage (KYC documents) -------------------------------------------------------
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    kyc_max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    # -- background jobs --------------------------------------------------------------------
    # auto: Redis Streams when REDIS_URL is set, else in-process; or RabbitMQ (RABBITMQ_URL).
    jobs_broker: Literal["auto", "memory", "redis", "rabbitmq"] = "auto"
    rabbitmq_url: SecretStr | None = None
    # Whether `serve` runs jobs and schedules itself; unset: yes with the in-process broker.
    jobs_run_in_serve: bool | None = None
    jobs_concurrency: int = Field(default=4, ge=1, le=100)
    jobs_redeliver_after_seconds: int = Field(default=900, ge=10, le=7 * 86400)
    jobs_keep_days: int = Field(default=30, ge=1, le=3650)
    # Periodic jobs' schedules changed without code changes: a JSON object of job name to
    # "every <n><s|m|h|d>", a five-field cron expression (UTC) or "off". The names are checked
    # where schedulers start, once the jobs are declared.
    job_schedules: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    # -- market data ------------------------------------------------------------------------
    market_provider: Literal["sim", "ccxt"] = "sim"
    # The exchange for MARKET_PROVIDER=ccxt: any id ccxt knows (binance, kraken, coinbase, …).
    ccxt_exchange: str = Field(default="binance", pattern=r"^[a-z0-9_]{2,30}$")
    # Only these instruments of the exchange are listed (comma-separated, e.g. BTC-USDT);
    # empty: every active spot market.
    ccxt_symbols: Annotated[list[str], NoDecode] = Field(default_factory=list)
    listings_provider: Literal["sim", "coingecko", "coinmarketcap"] = "sim"
    # Serves listings when the primary listings provider fails; "none" for no fallback.
    listings_fallback_provider: Literal["none", "sim", "coingecko", "coinmarketcap"] = "sim"
    coingecko_api_key: SecretStr | None = None
    coingecko_pro: bool = False
    coinmarketcap_api_key: SecretStr | None = None
    sim_seed: int = Field(default=42, ge=0, le=2**63 - 1)
    market_cache_seconds: int = Field(default=300, ge=1, le=86400)
    price_history_keep_days: int = Field(default=365, ge=1, le=36500)
    # Paper trading fills (the fill model shared with backtests): slippage of a taker fill in
    # basis points, fees in percent of the notional, and the smallest fee of one fill.
    paper_slippage_bps: Decimal = Field(default=Decimal(5), ge=0, le=1000)
    paper_taker_fee_percent: Decimal = Field(default=Decimal("0.1"), ge=0, le=10)
    paper_maker_fee_percent: Decimal = Field(default=Decimal("0.1"), ge=0, le=10)
    paper_min_fee: Decimal = Field(default=Decimal(0), ge=0, le=1000)
    # Minutes between two portfolio snapshots of an account (the `portfolio.snapshot` job
    # takes them on multiples of it).
    portfolio_snapshot_minutes: int = Field(default=15, ge=1, le=1440)
    # Serves candles and tickers when MARKET_PROVIDER fails: none, sim, or ccxt (a second
    # exchange, CCXT_FALLBACK_EXCHANGE).
    market_fallback_provider: Literal["none", "sim", "ccxt"] = "none"
    ccxt_fallback_exchange: str | None = Field(default=None, pattern=r"^[a-z0-9_]{2,30}$")
    # Instruments whose candles are stored and kept complete (comma-separated). Empty: those of
    # CCXT_SYMBOLS for ccxt, none for sim (the simulated market makes any bar on demand, the
    # same every time: storing it would gain nothing).
    market_tracked_symbols: Annotated[list[str], NoDecode] = Field(default_factory=list)
    market_sync_timeframes: Annotated[list[Timeframe], NoDecode] = Field(
        default_factory=lambda: [Timeframe.M1, Timeframe.H1]
    )
    # How far back the candle sync fills the tracked instruments' history.
    market_backfill_days: int = Field(default=30, ge=1, le=MAX_BACKFILL_DAYS)
    # How many coins the scheduled listing syncs fetch: the top ones every 5 minutes, all hourly.
    listings_sync_top: int = Field(default=50, ge=1, le=5000)
    listings_sync_all: int = Field(default=200, ge=1, le=5000)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("environment", mode="before")
    @classmethod
    def _lower_environment(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("ccxt_symbols", "market_tracked_symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return [symbol.strip() for symbol in value.split(",") if symbol.strip()]
        return value

    @field_validator("market_tracked_symbols")
    @classmethod
    def _canonical_symbols(cls, values: list[str]) -> list[str]:
        # normalize's ValueError names the bad symbol; repeats are dropped, order kept.
        return list(dict.fromkeys(symbols.normalize(value) for value in values))

    @field_validator("market_sync_timeframes", mode="before")
    @classmethod
    def _split_timeframes(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        known = [timeframe.value for timeframe in Timeframe]
        for item in value:
            if item not in known:
                raise ValueError(f"{str(item)[:20]!r} is not a timeframe: use {', '.join(known)}")
        if not value:
            raise ValueError(f"names no timeframe: give some of {', '.join(known)}")
        return list(dict.fromkeys(value))

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # Comma-separated in the environment: CORS_ORIGINS=https://a.example,https://b.example
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        # A browser sends its origin as scheme://host[:port], nothing more: anything else here
        # would never match, and every request from it would be refused.
        checked = []
        for origin in origins:
            if origin == "*":
                checked.append(origin)
                continue
            parts = urlsplit(origin.rstrip("/"))
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path
                or parts.query
            ):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
            checked.append(f"{parts.scheme}://{parts.netloc}")
        return checked

    @field_validator("rate_limit_tier_overrides", mode="before")
    @classmethod
    def _split_tier_overrides(cls, value: object) -> object:
        # Comma-separated in the environment: pro=3000/minute,enterprise=10000/minute
        if not isinstance(value, str):
            return value
        overrides = {}
        for part in filter(None, (item.strip() for item in value.split(","))):
            tier, sep, limit = part.partition("=")
            if not sep or not tier.strip() or not limit.strip():
                raise ValueError(f"{part!r} is not tier=limit, e.g. pro=3000/minute")
            overrides[tier.strip()] = limit.strip()
        return overrides

    @field_validator("job_schedules", mode="before")
    @classmethod
    def _parse_job_schedules(cls, value: object) -> object:
        return job_schedules_from(value)

    @field_validator("database_url")
    @classmethod
    def _normalize_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = normalize_database_url(value)
        if url.startswith(_POSTGRES_DRIVER):
            _require_module("asyncpg", "the PostgreSQL driver", "postgres")
        return url

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        try:
            urlsplit(value).port  # noqa: B018 - parsing the port is the check
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        _require_module("redis", "the Redis client", "redis")
        return value

    @field_validator("rabbitmq_url")
    @classmethod
    def _check_rabbitmq_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("amqp://", "amqps://")):
            raise ValueError("must start with amqp:// or amqps://")
        return value

    @field_validator("jwt_secret_key")
    @classmethod
    def _strong_secret_in_production(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if info.data.get("environment") == "production":
            problem = weak_secret_reason(value)
            if problem:
                raise ValueError(f"{problem}; production refuses to start without a strong secret")
        return value

    @model_validator(mode="after")
    def _resolve_runtime_values(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.storage_dir is None:
            # Outside any served path: nothing under DATA_DIR is ever served over HTTP.
            self.storage_dir = self.data_dir / "files"
        self.storage_dir = self.storage_dir.expanduser().resolve()
        if self.storage_backend == "s3":
            if not self.s3_bucket:
                raise ValueError("STORAGE_BACKEND=s3 needs S3_BUCKET")
            _require_module("boto3", "the S3 client", "s3")
        if self.jobs_broker == "redis" and not self.redis_url:
            raise ValueError("JOBS_BROKER=redis needs REDIS_URL")
        if self.jobs_broker == "rabbitmq":
            if self.rabbitmq_url is None:
                raise ValueError("JOBS_BROKER=rabbitmq needs RABBITMQ_URL")
            _require_module("taskiq_aio_pika", "the RabbitMQ client", "rabbitmq")
        if self.market_provider == "ccxt":
            _require_module("ccxt", "the exchange client (ccxt)", "exchanges")
        for provider in (self.listings_provider, self.listings_fallback_provider):
            if provider == "coinmarketcap" and self.coinmarketcap_api_key is None:
                raise ValueError("the coinmarketcap listings provider needs COINMARKETCAP_API_KEY")
            if provider == "coingecko" and self.coingecko_pro and self.coingecko_api_key is None:
                raise ValueError("COINGECKO_PRO=true needs COINGECKO_API_KEY")
        if self.database_url is None:
            self.database_url = f"{_SQLITE_DRIVER}:///{self.data_dir / 'tradeos.db'}"
        if self.jwt_secret_key is None and self.environment != "production":
            # Development and tests: a random secret, generated once and kept in DATA_DIR.
            self.jwt_secret_key = SecretStr(load_or_create_secret(self.data_dir / JWT_SECRET_FILE))
        return self

    @model_validator(mode="after")
    def _check_market_data(self) -> Settings:
        if self.market_fallback_provider == "ccxt":
            _require_module("ccxt", "the exchange client (ccxt)", "exchanges")
            if self.ccxt_fallback_exchange is None:
                raise ValueError("MARKET_FALLBACK_PROVIDER=ccxt needs CCXT_FALLBACK_EXCHANGE")
            if self.market_provider == "ccxt" and self.ccxt_fallback_exchange == self.ccxt_exchange:
                raise ValueError(
                    "CCXT_FALLBACK_EXCHANGE is CCXT_EXCHANGE itself: name another exchange"
                )
        if self.market_fallback_provider == self.market_provider == "sim":
            raise ValueError(
                "MARKET_FALLBACK_PROVIDER=sim is MARKET_PROVIDER itself: use none, or ccxt"
            )
        if self.market_provider == "ccxt":
            listed = list(dict.fromkeys(symbols.normalize(s) for s in self.ccxt_symbols))
            if not self.market_tracked_symbols:
                self.market_tracked_symbols = listed
            left_out = [s for s in self.market_tracked_symbols if listed and s not in listed]
            if left_out:
                raise ValueError(
                    f"MARKET_TRACKED_SYMBOLS names {', '.join(left_out)}, which CCXT_SYMBOLS "
                    "leaves out: add them there too"
                )
        return self

    def __repr_args__(self) -> Any:
        # URLs may carry passwords: repr() (and so any log line of this object) masks them.
        for name, value in super().__repr_args__():
            if name in ("database_url", "redis_url") and isinstance(value, str):
                value = mask_url_password(value)
            yield name, value

    # -- what the rest of the code asks of the settings ------------------------------------

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def sqlalchemy_url(self) -> str:
        assert self.database_url is not None  # filled in by the validator
        return self.database_url

    @property
    def database_backend(self) -> str:
        """`sqlite` or `postgresql`: what /api/v1/info shows, never the URL itself."""
        return make_url(self.sqlalchemy_url).get_backend_name()

    @property
    def is_embedded_database(self) -> bool:
        return self.database_backend == "sqlite"

    @property
    def cache_backend(self) -> str:
        return "redis" if self.redis_url else "memory"

    @property
    def events_backend(self) -> str:
        return "redis" if self.redis_url else "memory"

    @property
    def broker_backend(self) -> str:
        """Where jobs travel: "memory" (in-process) or "redis" (Redis Streams)."""
        if self.jobs_broker != "auto":
            return self.jobs_broker
        return "redis" if self.redis_url else "memory"

    @property
    def runs_jobs_in_serve(self) -> bool:
        if self.jobs_run_in_serve is not None:
            return self.jobs_run_in_serve
        return self.broker_backend == "memory"

    @property
    def safe_database_url(self) -> str:
        """The database URL with any password masked, for log lines and messages."""
        return mask_url_password(self.sqlalchemy_url)

    @property
    def sqlite_path(self) -> Path | None:
        url = make_url(self.sqlalchemy_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database)


_JOB_SCHEDULES_EXAMPLE = '{"market.sync_top_listings": "every 10m", "jobs.prune_runs": "off"}'


def job_schedules_from(value: object) -> dict[str, str]:
    """JOB_SCHEDULES as JSON text (the environment) or a mapping (code), every schedule checked
    and its spacing tidied; a problem names the job and the value."""
    if not value:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value, object_pairs_hook=_refuse_repeated_names)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"is not valid JSON ({error.msg} at character {error.pos}): "
                f"write a JSON object like {_JOB_SCHEDULES_EXAMPLE}"
            ) from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object like {_JOB_SCHEDULES_EXAMPLE}")
    if not value:
        return {}
    # Imported here: the jobs package loads taskiq, which reading settings alone need not.
    from tradeos.core.jobs.definitions import parse_schedule

    schedules = {}
    for name, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f"{name}: {text!r} is not a schedule: give it as text, e.g. every 10m")
        try:
            parse_schedule(text)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        schedules[name] = " ".join(text.split())
    return schedules


def _refuse_repeated_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would keep the last of two entries silently; one of them is a mistake.
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"names {', '.join(repeated)} more than once")
    return dict(pairs)


def _require_module(module: str, what: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"needs {what}, which is not installed: pip install 'tradeos[{extra}]'")


def mask_url_password(url: str) -> str:
    """`redis://:secret@host/0` -> `redis://:***@host/0`, for database and Redis URLs alike."""
    return make_url(url).render_as_string(hide_password=True)


def normalize_database_url(value: str) -> str:
    """Accept the URL forms people paste (postgres://, sqlite:///) and pick the async driver."""
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(
            "is not a database URL (expected sqlite:///path or postgresql://user@host/db)"
        ) from None
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError("has a port that is not a number from 1 to 65535")
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername=_SQLITE_DRIVER).render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return url.set(drivername=_POSTGRES_DRIVER).render_as_string(hide_password=False)
    raise ValueError(f"backend {backend!r} is not supported (use sqlite or postgresql)")


def weak_secret_reason(secret: SecretStr | None) -> str | None:
    """Why a JWT secret is too weak for production, or None when it is fine."""
    if secret is None:
        return "is not set"
    value = secret.get_secret_value()
    if len(value) < MIN_SECRET_LENGTH:
        return f"must be at least {MIN_SECRET_LENGTH} characters"
    lowered = value.lower()
    if any(word in lowered for word in _KNOWN_PLACEHOLDERS) or len(set(value)) < 12:
        return "looks like a placeholder, not a random secret"
    return None


def load_or_create_secret(path: Path) -> str:
    """The development secret kept in DATA_DIR: created once, readable by its owner only.

    The file appears complete or not at all (written aside, then linked into place), so a
    process starting alongside never reads a half-written secret; a damaged one (empty, too
    short) is replaced.
    """
    existing = _read_secret(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(48))
    try:
        os.link(draft, path)  # fails if the file exists: published by another process, or damaged
    except FileExistsError:
        if _read_secret(path) is None:
            os.replace(draft, path)  # damaged: replace it
    finally:
        draft.unlink(missing_ok=True)
    secret = _read_secret(path)
    if secret is None:
        raise ValueError(f"cannot keep a development secret in {path}")
    return secret


def _read_secret(path: Path) -> str | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value if len(value) >= MIN_SECRET_LENGTH else None


def settings_error_lines(error: ValidationError) -> list[str]:
    """One line per bad variable, naming it the way the user set it (upper-case env name)."""
    lines = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        name = loc[0].upper() if loc else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(
            f"Invalid setting {name}: {message}" if name else f"Invalid settings: {message}"
        )
    return lines


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and `.env`."""
    return Settings()
