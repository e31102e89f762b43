"""`tradeos backtest`: CSV files with no database, stored and simulated candles, JSON, reports,
and one-line errors with exit code 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.backtest.test_runner import SMA_CROSS, walk
from tests.conftest import TEST_DATABASE_URL
from tests.test_cli import cli_env, run
from tradeos.backtest.engine import BacktestConfig
from tradeos.backtest.runner import CandleArrays, metrics_dict, run_formula

__all__ = ["cli_env"]  # the fixture, used by name

HOUR = 3600


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL not set"),
        ),
    ]
)
def cli_database(
    request: pytest.FixtureRequest, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The CLI's database: the SQLite file under DATA_DIR, or the test PostgreSQL database
    (migrated, and emptied after the test)."""
    if request.param == "postgresql":
        request.getfixturevalue("database")
        assert TEST_DATABASE_URL is not None
        monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    return str(request.param)


def rounded(candles: CandleArrays) -> CandleArrays:
    """Prices as a CSV holds them (6 decimals), bars on hour boundaries."""
    return CandleArrays(
        candles.symbol,
        candles.open_time - candles.open_time[0] % HOUR,
        *(np.round(getattr(candles, name), 6) for name in ("open", "high", "low", "close")),
        np.round(candles.volume, 6),
    )


def write_csv(path: Path, candles: CandleArrays) -> None:
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(len(candles)):
        prices = (candles.open[i], candles.high[i], candles.low[i], candles.close[i])
        lines.append(
            f"{candles.open_time[i]}," + ",".join(f"{p:.6f}" for p in prices)
            + f",{candles.volume[i]:.6f}"
        )  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def formula(tmp_path: Path) -> Path:
    path = tmp_path / "sma.txt"
    path.write_text(SMA_CROSS)
    return path


def answer(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)  # nothing else on stdout
    return parsed


def test_a_csv_file_backtests_like_run_formula(
    cli_env: Path, tmp_path: Path, formula: Path
) -> None:
    candles = rounded(walk(600, 31, symbol="ACME"))
    data = tmp_path / "acme.csv"
    write_csv(data, candles)
    result = run(
        "backtest", str(formula), "--data", str(data), "--timeframe", "1h", "--json",
        "--cash", "5000", "--commission", "0.001", "--slippage-bps", "2", "--fractional",
        "--param", "fast=8", "--param", "slow=25", "--long-only", "--fill", "close",
    )  # fmt: skip
    got = answer(result)
    config = BacktestConfig(
        initial_cash=5000, commission=0.001, slippage_bps=2, quantity_step=0,
        allow_short=False, fill_at="close",
    )  # fmt: skip
    expected = run_formula([candles], SMA_CROSS, params={"fast": 8, "slow": 25}, config=config)
    assert got["symbols"] == ["acme"]  # the file's name, without --symbol
    assert got["params"] == {"fast": 8.0, "slow": 25.0}
    assert got["bars"] == 600
    assert got["metrics"] == pytest.approx(metrics_dict(expected.metrics))
    assert got["final_equity"] == pytest.approx(expected.final_equity)
    assert len(got["trades"]) == expected.metrics.trades > 0
    assert {t["side"] for t in got["trades"]} == {"long"}
    first = expected.trades()[0]
    assert got["trades"][0]["entry_time"] == first.entry_time.isoformat()
    assert got["trades"][0]["pnl"] == pytest.approx(first.pnl)
    assert not (cli_env / "tradeos.db").exists()  # no database needed


# Tight levels on hourly bars: some bars reach both the stop and the target.
BRACKETED = SMA_CROSS + "stop_loss = 0.003\ntake_profit = 0.003\n"


def test_fees_and_the_intrabar_rule_reach_the_engine(cli_env: Path, tmp_path: Path) -> None:
    candles = rounded(walk(600, 31, symbol="ACME"))
    data = tmp_path / "acme.csv"
    write_csv(data, candles)
    bracketed = tmp_path / "bracketed.txt"
    bracketed.write_text(BRACKETED)
    result = run(
        "backtest", str(bracketed), "--data", str(data), "--timeframe", "1h", "--json",
        "--cash", "5000", "--fixed-fee", "1.5", "--min-fee", "2", "--intrabar", "best",
        "--fractional",
    )  # fmt: skip
    got = answer(result)
    config = BacktestConfig(
        initial_cash=5000, fixed_fee=1.5, min_fee=2, intrabar_rule="best", quantity_step=0
    )
    expected = run_formula([candles], BRACKETED, config=config)
    assert got["final_equity"] == pytest.approx(expected.final_equity)
    assert got["metrics"] == pytest.approx(metrics_dict(expected.metrics))
    assert got["trades"]
    assert all(t["fees"] == pytest.approx(4.0) for t in got["trades"])  # the minimum, both sides
    # The rule and the fees changed the run: with the defaults it comes out otherwise.
    for changed in ({"intrabar_rule": "worst"}, {"fixed_fee": 0.0, "min_fee": 0.0}):
        other = run_formula([candles], BRACKETED, config=dataclasses.replace(config, **changed))
        assert other.final_equity != pytest.approx(expected.final_equity)


def test_sizes_and_windows(cli_env: Path, tmp_path: Path, formula: Path) -> None:
    candles = rounded(walk(400, 32, symbol="X"))
    data = tmp_path / "x.csv"
    write_csv(data, candles)
    start = int(candles.open_time[100])
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M")
    got = answer(
        run(
            "backtest",
            str(formula),
            "--data",
            str(data),
            "--timeframe",
            "1h",
            "--json",
            "--size",
            "2",
            "--start",
            iso,
            "--symbol",
            "XYZ",
        )
    )
    assert got["symbols"] == ["XYZ"]
    assert got["bars"] == 300
    assert {t["quantity"] for t in got["trades"]} == {2.0}  # a fixed quantity
    half = answer(
        run(
            "backtest",
            str(formula),
            "--data",
            str(data),
            "--timeframe",
            "1h",
            "--json",
            "--size",
            "50%",
            "--fractional",
        )
    )
    first = half["trades"][0]
    assert first["quantity"] * first["entry_price"] <= 0.5 * 10_000 + 1e-6


def test_the_simulated_market_on_a_fresh_install(cli_database: str, formula: Path) -> None:
    got = answer(
        run(
            "backtest",
            str(formula),
            "--symbol",
            "BTC-USD",
            "--timeframe",
            "1h",
            "--bars",
            "300",
            "--fractional",
            "--json",
        )
    )
    assert got["symbols"] == ["BTC-USD"]
    assert got["bars"] == 300
    assert got["metrics"]["trades"] == len(got["trades"])
    table = run("backtest", str(formula), "--symbol", "BTC-USD", "--timeframe", "1h")
    assert table.exit_code == 0, table.output
    assert "total return" in table.stdout and "sharpe" in table.stdout


def test_stored_candles_are_backtested(cli_database: str, tmp_path: Path, formula: Path) -> None:
    candles = rounded(walk(300, 33, symbol="ACME"))
    data = tmp_path / "acme.csv"
    write_csv(data, candles)
    imported = run(
        "import", "candles", str(data), "--symbol", "ACME", "--timeframe", "1h", "--create",
        "--asset-class", "equity",
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    start = "2023-01-01"
    stored = answer(
        run(
            "backtest",
            str(formula),
            "--symbol",
            "acme",
            "--timeframe",
            "1h",
            "--start",
            start,
            "--json",
            "--fractional",
        )
    )
    from_file = answer(
        run(
            "backtest",
            str(formula),
            "--data",
            str(data),
            "--timeframe",
            "1h",
            "--json",
            "--fractional",
        )
    )
    assert stored["symbols"] == ["ACME"]
    assert stored["bars"] == 300
    assert stored["metrics"] == from_file["metrics"]
    assert stored["trades"] == [dict(t, symbol="ACME") for t in from_file["trades"]]


def test_several_instruments_and_a_report(cli_env: Path, tmp_path: Path, formula: Path) -> None:
    first = rounded(walk(300, 34, symbol="A"))
    second = rounded(walk(300, 35, symbol="B"))
    second = dataclasses.replace(second, open_time=second.open_time + 24 * HOUR)
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    write_csv(paths[0], first)
    write_csv(paths[1], second)
    report = tmp_path / "out" / "report.html"
    report.parent.mkdir()
    result = run(
        "backtest", str(formula), "--data", str(paths[0]), "--data", str(paths[1]),
        "--timeframe", "1h", "--fractional", "--report", str(report),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "a, b 1h: 324 bars" in result.stdout
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4
    assert "https://" not in page


def test_a_bad_formula_is_one_line_with_its_place(cli_env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("fast = 10\nentry_long = close > sma(close, fast) +\n")
    data = tmp_path / "x.csv"
    write_csv(data, rounded(walk(50, 36)))
    result = run("backtest", str(bad), "--data", str(data), "--timeframe", "1h")
    assert result.exit_code == 2
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert message.startswith("bad.txt: line 2, column")
    assert "Traceback" not in result.output
    # Checked before any candle is read: no database is opened for a bad formula.
    early = run("backtest", str(bad), "--symbol", "BTC-USD", "--timeframe", "1h")
    assert early.exit_code == 2
    assert early.output.startswith("bad.txt: line 2, column")
    assert not (cli_env / "tradeos.db").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--size", "lots"], "--size must be"),
        (["--param", "fast"], "--param takes name=number"),
        (["--param", "nope=3"], "unknown parameter 'nope'"),
        (["--param", "fast=1"], "period"),
        (["--fill", "later"], "--fill must be one of"),
        (["--intrabar", "first"], "--intrabar must be one of"),
        (["--fixed-fee", "-1"], "--fixed-fee"),
        (["--min-fee", "inf"], "--min-fee"),
        (["--timeframe", "2h"], "--timeframe must be one of"),
        (["--start", "yesterday"], "--start must be an ISO date"),
        (["--cash", "0"], "--cash"),
        (["--start", "2030-01-01"], "No candles of x 1h"),
    ],
)
def test_bad_options_are_refused(
    cli_env: Path, tmp_path: Path, formula: Path, extra: list[str], expected: str
) -> None:
    data = tmp_path / "x.csv"
    write_csv(data, rounded(walk(50, 37)))
    result = run("backtest", str(formula), "--data", str(data), "--timeframe", "1h", *extra)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_missing_files_and_unreadable_data(cli_env: Path, tmp_path: Path, formula: Path) -> None:
    missing = run("backtest", str(tmp_path / "nope.txt"), "--data", str(formula))
    assert missing.exit_code == 2
    assert "Cannot read the formula file" in missing.output
    no_data = run("backtest", str(formula), "--data", str(tmp_path / "nope.csv"))
    assert no_data.exit_code == 2
    assert "Cannot read" in no_data.output and "nope.csv" in no_data.output
    nonsense = tmp_path / "nonsense.csv"
    nonsense.write_text("a;b\n1;2\n")
    layout = run("backtest", str(formula), "--data", str(nonsense), "--timeframe", "1h")
    assert layout.exit_code == 2
    assert "Cannot read the candles" in layout.output
    neither = run("backtest", str(formula))
    assert neither.exit_code == 2
    assert "--symbol" in neither.output


def test_an_unknown_symbol_is_refused(cli_database: str, formula: Path) -> None:
    result = run("backtest", str(formula), "--symbol", "NOPE-XYZ", "--timeframe", "1h")
    assert result.exit_code == 2
    assert "Unknown symbol 'NOPE-XYZ'" in result.output
