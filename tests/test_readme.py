"""The README's two commands are the ones CI and users run, and its market data commands and
settings are ones TradeOS takes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from tradeos.cli import app as cli_app
from tradeos.config import Settings
from tradeos.market.providers.registry import make_listings
from tradeos.market.providers.sim import SimProvider
from tradeos.market.symbols import normalize
from tradeos.market.timeframes import Timeframe

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
