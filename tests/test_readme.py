"""The README's two commands are the ones CI and users run, and its market data commands and
settings are ones TradeOS takes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer

from tests.backtest.test_cli import write_csv
from tests.backtest.test_runner import walk
from tests.test_cli import cli_env, run
from tradeos.backtest.runner import CandleArrays
from tradeos.backtest.schemas import BacktestIn
from tradeos.cli import app as cli_app
from tradeos.config import Settings
from tradeos.market.providers.registry import make_listings
from tradeos.market.providers.sim import SimProvider
from tradeos.market.symbols import normalize
from tradeos.market.timeframes import Timeframe
from tradeos.strategies.formula import compile_formula

__all__ = ["cli_env"]  # the fixture, used by name

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    [command] = re.findall(r'^TEST_COMMAND="(.*)"$', ci, flags=re.MULTILINE)
    assert command + "\n" in _bash_blocks()


def test_the_first_command_installs_and_serves() -> None:
    first = _bash_blocks()[0].strip()
    assert first.startswith("python3 -m venv .venv && ")
    assert "-c constraints.txt -e ." in first and first.endswith("tradeos serve")


def test_every_dependency_is_pinned() -> None:
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert all(
        "==" in line
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for required in (
        "fastapi",
        "sqlalchemy",
        "alembic",
        "aiosqlite",
        "asyncpg",
        "redis",
        "structlog",
        "pytest",
    ):
        assert required in pins


# -- market data: importing candles, other providers --------------------------------------------


def _commands(program: str) -> list[list[str]]:
    """The README's bash lines that run `program`, split as a shell would."""
    lines = (
        line.strip() for block in _bash_blocks() for line in block.replace("\\\n", " ").splitlines()
    )
    return [shlex.split(line) for line in lines if program in line]


def _environment(words: list[str]) -> dict[str, str]:
    """The NAME=value assignments a command line starts with."""
    env = {}
    for word in words:
        name, equals, value = word.partition("=")
        if not equals or not name.isupper():
            break
        env[name] = value
    return env


def test_the_readme_shows_how_to_import_candles_from_a_csv_file() -> None:
    imports = [words for words in _commands("tradeos") if words[1:3] == ["import", "candles"]]
    assert imports, "no `tradeos import candles` command in the README"
    command: Any = typer.main.get_command(cli_app)
    candles = command.commands["import"].commands["candles"]
    known = {option for param in candles.params for option in param.opts}
    for words in imports:
        assert words[0].endswith("tradeos")
        file, options = words[3], words[4:]
        assert file.endswith(".csv")
        assert "--symbol" in options and "--timeframe" in options
        # Every option it shows is one the command takes, with a value it accepts.
        assert {word for word in options if word.startswith("--")} <= known
        Timeframe(options[options.index("--timeframe") + 1])
        assert normalize(options[options.index("--symbol") + 1])
    assert any(
        words[words.index("--symbol") + 1] == "BTC-USD"
        and words[words.index("--timeframe") + 1] == "1h"
        for words in imports
    )


async def test_the_readme_shows_how_to_take_listings_from_coingecko(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [setting] = re.findall(r"`(LISTINGS_PROVIDER=coingecko)`", README)
    assert "`COINGECKO_API_KEY`" in README
    # That variable alone switches the listings to CoinGecko, the simulated ones standing by.
    name, _, value = setting.partition("=")
    monkeypatch.setenv(name, value)
    listings = make_listings(Settings(_env_file=None), SimProvider())  # type: ignore[call-arg]
    try:
        assert (listings.primary.name, getattr(listings.fallback, "name", None)) == (
            "coingecko",
            "sim",
        )
    finally:
        await listings.aclose()


def test_the_readme_shows_how_to_take_candles_from_an_exchange(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("ccxt")  # the `exchanges` extra, which the test extra installs
    [serve] = [words for words in _commands("tradeos serve") if "MARKET_PROVIDER=ccxt" in words]
    env = _environment(serve)
    assert env["MARKET_PROVIDER"] == "ccxt" and env.get("CCXT_EXCHANGE")
    assert serve[len(env) :][-1] == "serve"
    # The settings those variables make are valid, and name the exchange's instruments.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.market_provider == "ccxt"
    assert settings.ccxt_exchange == env["CCXT_EXCHANGE"]
    assert settings.ccxt_symbols == env["CCXT_SYMBOLS"].split(",")
    # The extra it needs is installed the way the README says.
    assert any(".[exchanges]" in words for words in _commands("pip install"))


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _formula_example() -> str:
    # The section's first plain (language-less) code block.
    blocks = re.findall(r"```\n(.*?)```", _section("Strategy formulas and backtests"), re.DOTALL)
    assert blocks, "no formula example in the README"
    example: str = blocks[0]
    return example


def test_the_readme_formula_example_compiles_with_its_parameters_and_rules() -> None:
    formula = compile_formula(_formula_example())
    assert formula.parameters == {"fast": 10, "slow": 20}
    assert set(formula.rules) == {"entry_long", "exit_long", "entry_short", "exit_short"}


def test_the_readme_backtest_commands_on_a_csv_file_run(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backtests = [words for words in _commands("tradeos") if words[1:2] == ["backtest"]]
    assert any("--data" in words for words in backtests), "no CSV backtest in the README"
    command: Any = typer.main.get_command(cli_app)
    known = {
        option
        for param in command.commands["backtest"].params
        for option in (*param.opts, *param.secondary_opts)  # --whole-units / --fractional
    }
    # The files the commands name: the README's formula and 400 daily bars.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sma.txt").write_text(_formula_example())
    bars = walk(400, 17)
    daily = CandleArrays(
        "BTC",
        1_699_920_000 + np.arange(400, dtype=np.int64) * 86_400,  # midnight UTC
        *(getattr(bars, name) for name in ("open", "high", "low", "close", "volume")),
    )
    write_csv(tmp_path / "btc-1d.csv", daily)
    ran = []
    for words in backtests:
        assert {word for word in words if word.startswith("--")} <= known, words
        if "--data" in words:
            result = run(*words[1:])
            assert result.exit_code == 0, result.output
            assert "sharpe" in result.output.lower()
            ran.append("--optimize" in words)
    assert sorted(ran) == [False, True]  # a backtest and an optimization
    assert "<svg" in (tmp_path / "report.html").read_text()


def test_the_readme_api_backtest_is_a_request_the_api_takes() -> None:
    [payload] = re.findall(r"-d '(\{\"formula\".*?\})'", README, re.DOTALL)
    request = BacktestIn.model_validate_json(payload.replace("\n", " "))
    assert request.formula is not None
    assert compile_formula(request.formula).rules == ["entry_long", "exit_long"]
    assert request.params == {"fast": 12}
