"""`tradeos import candles`: a CSV file into the database, with a summary; twice is once."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import cli_env, run

__all__ = ["cli_env"]  # the fixture, used by name

SAMPLES = Path(__file__).parent / "csv"


def test_a_file_is_imported_once_however_often_it_is_run(cli_env: Path, tmp_path: Path) -> None:
    sample = tmp_path / "acme.csv"
    sample.write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02,187.15,188.44,183.89,185.64,184.93,82488700\n"
        "2024-01-03,184.22,185.88,183.43,184.25,183.55,58414500\n"
        "2024-01-04,oops,183.09,180.88,181.91,181.22,71983600\n"
        "2024-01-05,181.99,182.76,180.17,181.18,180.49,62303300\n"
    )
    unknown = run("import", "candles", str(sample), "--symbol", "ACME", "--timeframe", "1d")
    assert unknown.exit_code == 2
    assert "--create" in unknown.output

    first = run(
        "import", "candles", str(sample), "--symbol", "ACME", "--timeframe", "1d",
        "--create", "--asset-class", "equity",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "rows read: 4, bars: 3, rejected: 1" in first.output
    assert "unparsable number" in first.output
    assert "inserted: 3, updated: 0, unchanged: 0, rejected: 1" in first.output

    again = run("import", "candles", str(sample), "--symbol", "acme", "--timeframe", "1d")
    assert again.exit_code == 0, again.output
    assert "inserted: 0, updated: 0, unchanged: 3" in again.output

    sample.write_text(sample.read_text().replace("181.18,180.49", "181.20,180.49"))
    changed = run("import", "candles", str(sample), "--symbol", "ACME", "--timeframe", "1d")
    assert "inserted: 0, updated: 1, unchanged: 2" in changed.output


def test_common_layouts_import(cli_env: Path) -> None:
    result = run(
        "import", "candles", str(SAMPLES / "binance_klines.csv"), "--symbol", "BTC-USDT",
        "--timeframe", "1m", "--create",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rejected: 0" in result.output.splitlines()[-1]


def test_bad_options_are_refused(cli_env: Path, tmp_path: Path) -> None:
    sample = tmp_path / "x.csv"
    sample.write_text("time,open,high,low,close\n")
    bad_tf = run("import", "candles", str(sample), "--symbol", "BTC-USD", "--timeframe", "2h")
    assert bad_tf.exit_code == 2
    assert "--timeframe must be one of" in bad_tf.output
    nonsense = tmp_path / "y.csv"
    nonsense.write_text("a,b,c\n1,2,3\n")
    unreadable = run("import", "candles", str(nonsense), "--symbol", "BTC-USD", "--timeframe", "1h")
    assert unreadable.exit_code == 2
    assert "Cannot read y.csv" in unreadable.output
