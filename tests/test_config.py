"""Settings: defaults, environment and .env, validation, the JWT secret rules."""

from __future__ import annotations

import importlib.util
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from tradeos.config import JWT_SECRET_FILE, Settings, load_or_create_secret, settings_error_lines

REPO = Path(__file__).resolve().parents[1]
STRONG_SECRET = "q8Zr2-Vx9LmN4pT7wYb1Kc6HdJ3sFg0A"


def load(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def error_lines(**values: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        load(**values)
    return settings_error_lines(caught.value)


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    settings = load(data_dir=tmp_path)
    assert settings.environment == "development"
    assert settings.debug is False
    assert settings.log_level == "INFO"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'tradeos.db'}"
    assert settings.redis_url is None
    assert (settings.database_backend, settings.cache_backend, settings.broker_backend) == (
        "sqlite",
        "memory",
        "memory",
    )
    assert settings.cors_origins == []


def test_default_data_dir_is_data_under_the_working_directory(tmp_path: Path) -> None:
    # The autouse fixture chdir'ed into tmp_path.
    assert load().data_dir == tmp_path / "data"


def test_environment_variables_and_dotenv_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "LOG_LEVEL=debug\nCORS_ORIGINS=https://a.example.com, https://b.example.com\nDEBUG=true\n"
    )
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("LOG_LEVEL", "warning")  # the environment wins over .env
    settings = Settings()
    assert settings.log_level == "WARNING"
    assert settings.debug is True
    assert settings.cors_origins == ["https://a.example.com", "https://b.example.com"]
    assert settings.data_dir == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/trading", "postgresql+asyncpg://u:p@db:5432/trading"),
        ("postgresql://u@db/trading", "postgresql+asyncpg://u@db/trading"),
        ("sqlite:////var/lib/tradeos.db", "sqlite+aiosqlite:////var/lib/tradeos.db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert load(database_url=given).database_url == expected


def test_cors_origins_are_normalized_to_what_browsers_send() -> None:
    settings = load(cors_origins="https://app.example.com/, http://localhost:5173")
    assert settings.cors_origins == ["https://app.example.com", "http://localhost:5173"]
    [line] = error_lines(cors_origins="https://app.example.com/dashboard")
    assert line.startswith("Invalid setting CORS_ORIGINS:")


def test_safe_database_url_hides_the_password() -> None:
    settings = load(database_url="postgresql://trader:hunter2secret@db/trading")
    assert "hunter2secret" not in settings.safe_database_url
    assert settings.database_backend == "postgresql"


@pytest.mark.parametrize(
    ("values", "variable", "fragment"),
    [
        ({"environment": "staging"}, "ENVIRONMENT", "development"),
        ({"log_level": "loud"}, "LOG_LEVEL", "DEBUG"),
        ({"database_url": "mysql://db/x"}, "DATABASE_URL", "not supported"),
        ({"database_url": "not a url"}, "DATABASE_URL", "not a database URL"),
        ({"redis_url": "http://cache"}, "REDIS_URL", "redis://"),
        ({"cors_origins": "ftp://x"}, "CORS_ORIGINS", "origin"),
        ({"debug": "maybe"}, "DEBUG", "boolean"),
        ({"database_pool_size": 0}, "DATABASE_POOL_SIZE", "greater than"),
        ({"database_url": "postgresql://u@db:xx/trading"}, "DATABASE_URL", "not a database URL"),
        ({"database_url": "postgresql://u@db:99999/trading"}, "DATABASE_URL", "port"),
        ({"redis_url": "redis://:pw@cache:xx/0"}, "REDIS_URL", "port"),
    ],
)
def test_a_bad_value_names_its_variable_in_one_line(
    values: dict[str, object], variable: str, fragment: str
) -> None:
    lines = error_lines(**values)
    assert len(lines) == 1
    assert lines[0].startswith(f"Invalid setting {variable}:")
    assert fragment in lines[0]
    assert "\n" not in lines[0]


@pytest.mark.parametrize(
    ("values", "variable", "extra"),
    [
        ({"database_url": "postgresql://u@db/trading"}, "DATABASE_URL", "postgres"),
        ({"redis_url": "redis://cache:6379/0"}, "REDIS_URL", "redis"),
    ],
)
def test_a_missing_driver_is_named_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, object], variable: str, extra: str
) -> None:
    real_find_spec = importlib.util.find_spec
    missing = {"postgres": "asyncpg", "redis": "redis"}[extra]
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == missing else real_find_spec(name, *a),
    )
    [line] = error_lines(**values)
    assert line.startswith(f"Invalid setting {variable}:")
    assert f"pip install 'tradeos[{extra}]'" in line


def test_development_generates_the_jwt_secret_once_and_keeps_it(tmp_path: Path) -> None:
    first = load(data_dir=tmp_path)
    second = load(data_dir=tmp_path)
    assert first.jwt_secret_key is not None and second.jwt_secret_key is not None
    assert first.jwt_secret_key.get_secret_value() == second.jwt_secret_key.get_secret_value()
    assert len(first.jwt_secret_key.get_secret_value()) >= 32
    secret_file = tmp_path / JWT_SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert load(data_dir=tmp_path / "other").jwt_secret_key != first.jwt_secret_key


@pytest.mark.parametrize("damaged", ["", "   \n", "short"])
def test_a_damaged_secret_file_is_replaced(tmp_path: Path, damaged: str) -> None:
    (tmp_path / JWT_SECRET_FILE).write_text(damaged)
    settings = load(data_dir=tmp_path)
    assert settings.jwt_secret_key is not None
    secret = settings.jwt_secret_key.get_secret_value()
    assert len(secret) >= 32
    assert (tmp_path / JWT_SECRET_FILE).read_text() == secret
    assert [p.name for p in tmp_path.iterdir()] == [JWT_SECRET_FILE]  # no drafts left behind


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        secrets = set(
            pool.map(lambda _: load_or_create_secret(tmp_path / JWT_SECRET_FILE), range(32))
        )
    assert len(secrets) == 1 and len(secrets.pop()) >= 32


def test_a_given_jwt_secret_is_used_and_never_shown(tmp_path: Path) -> None:
    settings = load(data_dir=tmp_path, jwt_secret_key=STRONG_SECRET)
    assert settings.jwt_secret_key == SecretStr(STRONG_SECRET)
    assert STRONG_SECRET not in repr(settings)
    assert not (tmp_path / JWT_SECRET_FILE).exists()


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        (None, "is not set"),
        ("short-secret", "at least 32"),
        ("change-me-change-me-change-me-change-me", "placeholder"),
        ("a" * 40, "placeholder"),
    ],
)
def test_production_refuses_a_missing_or_weak_secret(
    tmp_path: Path, secret: str | None, reason: str
) -> None:
    lines = error_lines(environment="production", data_dir=tmp_path, jwt_secret_key=secret)
    assert len(lines) == 1
    assert "JWT_SECRET_KEY" in lines[0] and reason in lines[0]
    assert not (tmp_path / JWT_SECRET_FILE).exists()  # production never generates one


def test_production_starts_with_a_strong_secret(tmp_path: Path) -> None:
    settings = load(environment="production", data_dir=tmp_path, jwt_secret_key=STRONG_SECRET)
    assert settings.is_production


def _env_example_names() -> list[str]:
    text = (REPO / ".env.example").read_text()
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE)


def test_env_example_lists_every_setting() -> None:
    names = _env_example_names()
    expected = {name.upper() for name in Settings.model_fields}
    assert expected <= set(names), f"missing from .env.example: {expected - set(names)}"


def test_readme_settings_table_lists_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in readme, (
            f"{name.upper()} missing from the README settings table"
        )


# -- JOB_SCHEDULES ----------------------------------------------------------------------------


def test_job_schedules_default_to_the_declared_ones() -> None:
    assert load().job_schedules == {}


def test_job_schedules_are_read_as_json_from_the_environment_and_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text('JOB_SCHEDULES=\'{"jobs.prune_runs": "off"}\'\n')
    assert Settings().job_schedules == {"jobs.prune_runs": "off"}
    monkeypatch.setenv(
        "JOB_SCHEDULES",
        '{"market.sync_top_listings": "every 10m", "market.prune_price_history": " 0  4 * * *"}',
    )
    assert Settings().job_schedules == {
        "market.sync_top_listings": "every 10m",
        "market.prune_price_history": "0 4 * * *",
    }


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ('{"market.sync_top_listings": "every 10x"}', ["market.sync_top_listings:", "'every 10x'"]),
        ('{"jobs.prune_runs": "61 * * * *"}', ["jobs.prune_runs:", "not a valid cron"]),
        ('{"jobs.prune_runs": "0 0 31 2 *"}', ["jobs.prune_runs:", "never fire"]),
        ('{"jobs.prune_runs": "every 0h"}', ["jobs.prune_runs:", "at least 1h"]),
        ('{"jobs.prune_runs": 5}', ["jobs.prune_runs:", "as text"]),
        ('{"jobs.prune_runs": "off", "jobs.prune_runs": "every 1h"}', ["jobs.prune_runs more"]),
        ('["jobs.prune_runs"]', ["JSON object like"]),
        ("jobs.prune_runs=off", ["not valid JSON", "JSON object like"]),
    ],
)
def test_job_schedules_refuse_a_bad_value_naming_the_job_and_the_value(
    value: str, fragments: list[str]
) -> None:
    [line] = error_lines(job_schedules=value)
    assert line.startswith("Invalid setting JOB_SCHEDULES:")
    assert "\n" not in line
    for fragment in fragments:
        assert fragment in line


# -- market data ------------------------------------------------------------------------------


def test_market_sync_defaults_track_nothing_on_the_simulated_market() -> None:
    settings = load()
    assert settings.market_tracked_symbols == []
    assert [tf.value for tf in settings.market_sync_timeframes] == ["1m", "1h"]
    assert (settings.market_backfill_days, settings.market_fallback_provider) == (30, "none")
    assert (settings.listings_sync_top, settings.listings_sync_all) == (50, 200)


def test_an_exchange_tracks_its_listed_symbols_unless_told_otherwise() -> None:
    pytest.importorskip("ccxt")
    listed = load(market_provider="ccxt", ccxt_symbols="btc/usdt, ETH-USDT, BTC-USDT")
    assert listed.market_tracked_symbols == ["BTC-USDT", "ETH-USDT"]
    chosen = load(
        market_provider="ccxt", ccxt_symbols="BTC-USDT,ETH-USDT", market_tracked_symbols="eth_usdt"
    )
    assert chosen.market_tracked_symbols == ["ETH-USDT"]
    # Sim instruments may be tracked when named.
    assert load(market_tracked_symbols="BTC-USD, aapl").market_tracked_symbols == [
        "BTC-USD",
        "AAPL",
    ]


def test_market_sync_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MARKET_TRACKED_SYMBOLS", "BTC-USD,ETH-USD")
    monkeypatch.setenv("MARKET_SYNC_TIMEFRAMES", "1h, 1d,1h")
    monkeypatch.setenv("MARKET_BACKFILL_DAYS", "90")
    monkeypatch.setenv("LISTINGS_SYNC_TOP", "20")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.market_tracked_symbols == ["BTC-USD", "ETH-USD"]
    assert [tf.value for tf in settings.market_sync_timeframes] == ["1h", "1d"]
    assert (settings.market_backfill_days, settings.listings_sync_top) == (90, 20)


@pytest.mark.parametrize(
    ("values", "variable", "fragment"),
    [
        ({"market_sync_timeframes": "1m,2h"}, "MARKET_SYNC_TIMEFRAMES", "'2h' is not a timeframe"),
        ({"market_sync_timeframes": ","}, "MARKET_SYNC_TIMEFRAMES", "names no timeframe"),
        ({"market_tracked_symbols": "BTC-USD,$$"}, "MARKET_TRACKED_SYMBOLS", "'$$' is not an"),
        ({"market_backfill_days": 0}, "MARKET_BACKFILL_DAYS", "greater than"),
        ({"market_backfill_days": 367}, "MARKET_BACKFILL_DAYS", "less than"),
        ({"market_fallback_provider": "coingecko"}, "MARKET_FALLBACK_PROVIDER", "'ccxt'"),
        ({"listings_sync_top": 0}, "LISTINGS_SYNC_TOP", "greater than"),
        ({"listings_sync_all": 5001}, "LISTINGS_SYNC_ALL", "less than"),
    ],
)
def test_a_bad_market_setting_names_its_variable(
    values: dict[str, object], variable: str, fragment: str
) -> None:
    [line] = error_lines(**values)
    assert line.startswith(f"Invalid setting {variable}:")
    assert fragment in line


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"market_fallback_provider": "sim"}, "MARKET_FALLBACK_PROVIDER=sim is MARKET_PROVIDER"),
        ({"market_fallback_provider": "ccxt"}, "needs CCXT_FALLBACK_EXCHANGE"),
        (
            {
                "market_provider": "ccxt",
                "market_fallback_provider": "ccxt",
                "ccxt_fallback_exchange": "binance",
            },
            "CCXT_FALLBACK_EXCHANGE is CCXT_EXCHANGE itself",
        ),
        (
            {
                "market_provider": "ccxt",
                "ccxt_symbols": "BTC-USDT",
                "market_tracked_symbols": "BTC-USDT,SOL-USDT",
            },
            "MARKET_TRACKED_SYMBOLS names SOL-USDT, which CCXT_SYMBOLS leaves out",
        ),
    ],
)
def test_market_settings_that_contradict_each_other_are_refused(
    values: dict[str, object], fragment: str
) -> None:
    pytest.importorskip("ccxt")
    [line] = error_lines(**values)
    assert fragment in line


def test_a_second_exchange_serves_as_the_fallback() -> None:
    pytest.importorskip("ccxt")
    settings = load(
        market_provider="ccxt", market_fallback_provider="ccxt", ccxt_fallback_exchange="kraken"
    )
    assert (settings.ccxt_exchange, settings.ccxt_fallback_exchange) == ("binance", "kraken")
