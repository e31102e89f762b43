"""The HTML report stands alone (nothing fetched) and shows the run; the PNG has the asked size."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest

from tests.backtest.test_runner import CONFIG, SMA_CROSS, walk
from tradeos.backtest.report import (
    MAX_CHART_POINTS,
    format_metric,
    html_report,
    png_equity_chart,
)
from tradeos.backtest.runner import run_formula

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_page_is_self_contained_and_shows_the_run() -> None:
    first, second = walk(500, 21, symbol="AAA"), walk(500, 22, symbol="BBB")
    run = run_formula([first, second], SMA_CROSS, config=CONFIG)
    page = html_report(run, title="SMA <cross> & co", candles=[first, second])

    assert page.startswith("<!DOCTYPE html>")
    for external in ("http://", "https://", "src=", "href=", "@import", "url("):
        assert external not in page
    assert "<script" not in page
    assert "SMA &lt;cross&gt; &amp; co" in page  # the title is escaped
    # Equity, drawdown and one price chart per instrument.
    assert page.count("<svg") == 4
    assert 'aria-label="Equity"' in page and 'aria-label="Drawdown"' in page
    # Two markers per trade (entry and exit), long and short entries told apart.
    trades = run.trades()
    assert len(re.findall(r'class="marker entry (?:long|short)"', page)) == len(trades)
    assert len(re.findall(r'class="marker exit (?:long|short)"', page)) == len(trades)
    assert 'class="marker entry short"' in page and 'class="marker entry long"' in page
    # The metrics, formatted, and the trade list.
    assert format_metric("total_return", run.metrics.total_return) in page
    assert format_metric("sharpe", run.metrics.sharpe) in page
    assert f"{run.final_equity:,.2f}" in page
    assert page.count("<tr>") >= len(trades) + 1 + len(run.metrics.as_dict())
    assert "fast = 5" in page


def test_charts_are_down_sampled() -> None:
    candles = walk(20_000, 23, step=60)
    run = run_formula([candles], SMA_CROSS, config=CONFIG)
    page = html_report(run, title="long", candles=[candles])
    for points in re.findall(r'<polyline class="\w+" points="([^"]*)"', page):
        assert 0 < len(points.split()) <= MAX_CHART_POINTS


def test_metric_formats() -> None:
    assert format_metric("total_return", 0.1234) == "12.34 %"
    assert format_metric("max_drawdown", -0.0) == "0.00 %"
    assert format_metric("sharpe", 1.5) == "1.50"
    assert format_metric("profit_factor", float("inf")) == "∞"
    assert format_metric("win_rate", float("nan")) == "–"
    assert format_metric("expectancy", 1234.5) == "1,234.50"
    assert format_metric("trades", 12) == "12"


@pytest.mark.parametrize(("width", "height"), [(1000, 400), (640, 300)])
def test_png_equity_chart_has_the_asked_size(width: int, height: int) -> None:
    candles = walk(3000, 24)
    run = run_formula([candles], SMA_CROSS, config=CONFIG)
    image = png_equity_chart(run, width=width, height=height)
    assert image.startswith(PNG_SIGNATURE)
    # IHDR is the first chunk: its width and height follow the chunk length and type.
    assert image[12:16] == b"IHDR"
    assert struct.unpack(">II", image[16:24]) == (width, height)


def test_png_refuses_absurd_sizes() -> None:
    run = run_formula([walk(100, 25)], SMA_CROSS, config=CONFIG)
    with pytest.raises(ValueError, match="pixels"):
        png_equity_chart(run, width=0, height=400)
    assert np.isfinite(run.equity).all()
