"""`tradeos backtest --optimize`: a parameter grid from the command line, ranked like
`runner.optimize`, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.backtest.test_cli import rounded, write_csv
from tests.backtest.test_runner import SMA_CROSS, walk
from tests.test_cli import cli_env, run
from tradeos.backtest.engine import BacktestConfig
from tradeos.backtest.runner import OptimizationError, optimize, parse_grid

__all__ = ["cli_env"]  # the fixture, used by name


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    formula = tmp_path / "sma.txt"
    formula.write_text(SMA_CROSS)
    data = tmp_path / "acme.csv"
    write_csv(data, rounded(walk(500, 41, symbol="ACME")))
    return formula, data


def test_the_grid_is_ranked_like_runner_optimize(cli_env: Path, files: tuple[Path, Path]) -> None:
    formula, data = files
    result = run(
        "backtest", str(formula), "--data", str(data), "--timeframe", "1h", "--json",
        "--optimize", "fast=3:9:3, slow=20:30:5", "--rank-by", "sharpe", "--top", "4",
        "--commission", "0.001", "--fractional",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    expected = optimize(
        rounded(walk(500, 41, symbol="acme")),
        SMA_CROSS,
        {"fast": [3, 6, 9], "slow": [20, 25, 30]},
        objective="sharpe",
        top=4,
        config=BacktestConfig(commission=0.001, quantity_step=0),
    )  # fmt: skip
    assert got["rank_by"] == "sharpe" and got["bars"] == 500
    assert [row["rank"] for row in got["top"]] == [1, 2, 3, 4]
    assert [row["params"] for row in got["top"]] == [row.params for row in expected]
    assert [row["metrics"]["sharpe"] for row in got["top"]] == pytest.approx(
        [row.metrics.sharpe for row in expected]
    )
    sharpes = [row["metrics"]["sharpe"] for row in got["top"]]
    assert sharpes == sorted(sharpes, reverse=True)

    table = run(
        "backtest", str(formula), "--data", str(data), "--timeframe", "1h",
        "--optimize", "fast=3:9:3,slow=20:30:5", "--top", "2", "--param", "slow=25",
    )  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "9 parameter combinations, best 2 by total_return" in table.stdout


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["--optimize", "fast=5:1:1"], "must not end before it starts"),
        (["--optimize", "fast"], "name=start:stop:step"),
        (["--optimize", "fast=1:2"], "start:stop:step"),
        (["--optimize", "nope=1:3:1"], "unknown parameter 'nope'"),
        (["--optimize", "fast=3:5:1", "--rank-by", "luck"], "--rank-by must be one of"),
        (["--optimize", "fast=1:10000:1,slow=1:2:1"], "at most 10,000"),
    ],
)
def test_a_bad_grid_is_one_line_and_exit_code_2(
    cli_env: Path, files: tuple[Path, Path], arguments: list[str], said: str
) -> None:
    formula, data = files
    result = run("backtest", str(formula), "--data", str(data), *arguments)
    assert result.exit_code == 2
    assert said in result.output
    assert "Traceback" not in result.output


def test_parse_grid() -> None:
    assert parse_grid("fast=5:20:5, slow=50, step=0.1:0.3:0.1") == {
        "fast": [5.0, 10.0, 15.0, 20.0],
        "slow": [50.0],
        "step": pytest.approx([0.1, 0.2, 0.3]),
    }
    with pytest.raises(OptimizationError, match="given twice"):
        parse_grid("fast=1,fast=2")
    with pytest.raises(OptimizationError, match="positive"):
        parse_grid("fast=1:5:0")
