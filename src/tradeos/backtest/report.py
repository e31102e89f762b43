"""Backtest reports (pure): a self-contained HTML page and a PNG equity chart.

`html_report` writes one page that opens with no network: inline CSS, charts drawn here as
inline SVG (equity, drawdown, and each instrument's price with its trades' entries and exits),
the metrics table and the trade list. No script, font, image or style sheet is fetched.
Every chart holds at most `MAX_CHART_POINTS` points (`runner.downsample`: the extremes
survive) and the trade list at most `MAX_TRADE_ROWS` rows.

`png_equity_chart` draws the equity curve with matplotlib (Agg, no display), imported only
when called, so processes that never draw one do not load it.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from tradeos.backtest.runner import BacktestRun, CandleArrays, SymbolTrade, downsample

__all__ = ["MAX_CHART_POINTS", "MAX_TRADE_ROWS", "format_metric", "html_report", "png_equity_chart"]

MAX_CHART_POINTS: Final = 2000
MAX_TRADE_ROWS: Final = 1000
# Trades drawn as markers on a price chart (two markers each); more are left off the chart.
MAX_MARKED_TRADES: Final = 1000

_WIDTH, _HEIGHT = 960, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 12, 12, 28

# How each metric reads: (label, kind). Kinds: percent, ratio, money, count, bars.
_METRICS: Final[dict[str, tuple[str, str]]] = {
    "total_return": ("Total return", "percent"),
    "cagr": ("CAGR", "percent"),
    "volatility": ("Volatility (annualized)", "percent"),
    "sharpe": ("Sharpe ratio", "ratio"),
    "sortino": ("Sortino ratio", "ratio"),
    "calmar": ("Calmar ratio", "ratio"),
    "max_drawdown": ("Max drawdown", "percent"),
    "max_drawdown_duration": ("Max drawdown duration", "bars"),
    "trades": ("Trades", "count"),
    "win_rate": ("Win rate", "percent"),
    "profit_factor": ("Profit factor", "ratio"),
    "expectancy": ("Expectancy per trade", "money"),
    "avg_win": ("Average win", "money"),
    "avg_loss": ("Average loss", "money"),
    "best_trade": ("Best trade", "percent"),
    "worst_trade": ("Worst trade", "percent"),
    "exposure": ("Exposure", "percent"),
    "buy_and_hold_return": ("Buy and hold return", "percent"),
}

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;
background:#fff;max-width:1000px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6475;font-size:13px;margin-bottom:16px}
table{border-collapse:collapse;font-size:13px}
td,th{padding:4px 10px;border-bottom:1px solid #e4e7ee;text-align:right}
th{background:#f5f6f9}td:first-child,th:first-child{text-align:left}
.metrics td:first-child{color:#5b6475}.pos{color:#137a3a}.neg{color:#b3261e}
svg{display:block;background:#fcfcfd;border:1px solid #e4e7ee;max-width:100%;height:auto}
svg text{font-size:11px;fill:#5b6475;font-family:inherit}
.grid{stroke:#eceef3;stroke-width:1}.equity{fill:none;stroke:#2457c5;stroke-width:1.5}
.price{fill:none;stroke:#1d2330;stroke-width:1}.dd{fill:#f3c7c3;stroke:#b3261e;stroke-width:1}
.marker.long.entry{fill:#137a3a}.marker.short.entry{fill:#b3261e}
.marker.exit{fill:#fff;stroke:#1d2330;stroke-width:1.2}
.legend{font-size:12px;color:#5b6475;margin:4px 0}.note{font-size:12px;color:#5b6475}
"""


def format_metric(name: str, value: float | int) -> str:
    """A metric as the report shows it: percentages, ratios, money, counts; "–" for none."""
    kind = _METRICS.get(name, ("", "ratio"))[1]
    number = float(value) + 0.0  # no "-0.00"
    if math.isnan(number):
        return "–"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    if kind == "percent":
        return f"{number * 100:,.2f} %"
    if kind == "money":
        return f"{number:,.2f}"
    if kind in ("count", "bars"):
        return f"{int(number):,}"
    return f"{number:,.2f}"


def _time_text(seconds: float, with_time: bool = True) -> str:
    moment = datetime.fromtimestamp(int(seconds), UTC)
    return moment.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def _number_text(value: float) -> str:
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:,.1f}"
    return f"{value:,.4g}"


class _Frame:
    """Scales from data to SVG coordinates for one chart."""

    def __init__(self, t0: float, t1: float, y0: float, y1: float) -> None:
        if not (math.isfinite(y0) and math.isfinite(y1)):
            y0, y1 = 0.0, 1.0
        if y1 <= y0:
            pad = abs(y0) * 0.01 or 1.0
            y0, y1 = y0 - pad, y1 + pad
        self.t0, self.t1 = t0, t1 if t1 > t0 else t0 + 1
        self.y0, self.y1 = y0, y1

    def x(self, t: NDArray[Any] | float) -> Any:
        return _LEFT + (np.asarray(t, dtype=np.float64) - self.t0) / (self.t1 - self.t0) * (
            _WIDTH - _LEFT - _RIGHT
        )

    def y(self, v: NDArray[Any] | float) -> Any:
        return _TOP + (self.y1 - np.asarray(v, dtype=np.float64)) / (self.y1 - self.y0) * (
            _HEIGHT - _TOP - _BOTTOM
        )


def _axes(frame: _Frame, label: str, percent: bool = False) -> list[str]:
    parts = []
    for k in range(5):
        value = frame.y0 + (frame.y1 - frame.y0) * k / 4
        y = float(frame.y(value))
        text = f"{value * 100:.1f} %" if percent else _number_text(value)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{html.escape(text)}</text>'
        )
    with_time = frame.t1 - frame.t0 < 10 * 86400
    for k in range(5):
        t = frame.t0 + (frame.t1 - frame.t0) * k / 4
        x = float(frame.x(t))
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{_HEIGHT - 8}" text-anchor="{anchor}">'
            f"{_time_text(t, with_time)}</text>"
        )
    parts.append(f"<title>{html.escape(label)}</title>")
    return parts


def _svg(body: list[str], label: str) -> str:
    return (
        f'<svg role="img" aria-label="{html.escape(label)}" '
        f'width="{_WIDTH}" height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}">'
        + "".join(body)
        + "</svg>"
    )


def _points(xs: NDArray[np.float64], ys: NDArray[np.float64]) -> str:
    finite = np.isfinite(ys)
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs[finite], ys[finite], strict=True))


def _bounds(values: NDArray[np.float64]) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = (high - low) * 0.04
    return low - pad, high + pad


def _line_chart(times: NDArray[np.int64], values: NDArray[np.float64], label: str) -> str:
    t, v = downsample(times, values, MAX_CHART_POINTS)
    frame = _Frame(float(t[0]), float(t[-1]), *_bounds(v))
    body = _axes(frame, label)
    body.append(f'<polyline class="equity" points="{_points(frame.x(t), frame.y(v))}"/>')
    return _svg(body, label)


def _drawdown_chart(times: NDArray[np.int64], drawdown: NDArray[np.float64]) -> str:
    label = "Drawdown"
    t, v = downsample(times, drawdown, MAX_CHART_POINTS)
    deepest = float(np.nanmin(v)) if np.isfinite(v).any() else 0.0
    frame = _Frame(float(t[0]), float(t[-1]), min(deepest * 1.05, -0.001), 0.0)
    body = _axes(frame, label, percent=True)
    xs, ys = frame.x(t), frame.y(np.nan_to_num(v))
    zero = float(frame.y(0.0))
    outline = f"{xs[0]:.1f},{zero:.1f} {_points(xs, ys)} {xs[-1]:.1f},{zero:.1f}"
    body.append(f'<polygon class="dd" points="{outline}"/>')
    return _svg(body, label)


def _price_chart(candles: CandleArrays, trades: Sequence[SymbolTrade]) -> tuple[str, int]:
    label = f"{candles.symbol} close and trades"
    t, v = downsample(candles.open_time, candles.close, MAX_CHART_POINTS)
    marked = trades[:MAX_MARKED_TRADES]
    levels = [v] + [np.array([tr.entry_price, tr.exit_price]) for tr in marked]
    frame = _Frame(float(t[0]), float(t[-1]), *_bounds(np.concatenate(levels)))
    body = _axes(frame, label)
    body.append(f'<polyline class="price" points="{_points(frame.x(t), frame.y(v))}"/>')
    for trade in marked:
        ex = float(frame.x(trade.entry_time.timestamp()))
        ey = float(frame.y(trade.entry_price))
        # A long entry points up, a short entry points down; an exit is a ring.
        if trade.side == "long":
            shape = f"{ex:.1f},{ey - 6:.1f} {ex - 5:.1f},{ey + 4:.1f} {ex + 5:.1f},{ey + 4:.1f}"
        else:
            shape = f"{ex:.1f},{ey + 6:.1f} {ex - 5:.1f},{ey - 4:.1f} {ex + 5:.1f},{ey - 4:.1f}"
        tip = (
            f"{trade.side} entry {_time_text(trade.entry_time.timestamp())} "
            f"at {_number_text(trade.entry_price)}"
        )
        body.append(
            f'<polygon class="marker entry {trade.side}" points="{shape}">'
            f"<title>{html.escape(tip)}</title></polygon>"
        )
        xx = float(frame.x(trade.exit_time.timestamp()))
        xy = float(frame.y(trade.exit_price))
        tip = (
            f"{trade.side} exit ({trade.exit_reason}) {_time_text(trade.exit_time.timestamp())} "
            f"at {_number_text(trade.exit_price)}, PnL {trade.pnl:,.2f}"
        )
        body.append(
            f'<circle class="marker exit {trade.side}" cx="{xx:.1f}" cy="{xy:.1f}" r="4">'
            f"<title>{html.escape(tip)}</title></circle>"
        )
    return _svg(body, label), len(marked)


def _metrics_table(run: BacktestRun) -> str:
    rows = [
        ("Initial cash", f"{run.config.initial_cash:,.2f}", 0.0),
        ("Final equity", f"{run.final_equity:,.2f}", run.final_equity - run.config.initial_cash),
    ]
    for name, value in run.metrics.as_dict().items():
        label, kind = _METRICS.get(name, (name, "ratio"))
        sign = float(value) if kind in ("percent", "money") and name != "max_drawdown" else 0.0
        if name in ("volatility", "exposure", "win_rate"):
            sign = 0.0
        rows.append((label, format_metric(name, value), sign))
    cells = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        f'<td class="{_sign_class(sign)}">{html.escape(text)}</td></tr>'
        for label, text, sign in rows
    )
    return f'<table class="metrics"><tbody>{cells}</tbody></table>'


def _sign_class(value: float) -> str:
    if not math.isfinite(value) or value == 0:
        return ""
    return "pos" if value > 0 else "neg"


def _trades_table(trades: Sequence[SymbolTrade]) -> str:
    head = (
        "<tr><th>#</th><th>Symbol</th><th>Side</th><th>Entry time</th><th>Entry</th>"
        "<th>Exit time</th><th>Exit</th><th>Quantity</th><th>Fees</th><th>PnL</th>"
        "<th>Return</th><th>Exit reason</th></tr>"
    )
    rows = []
    for number, trade in enumerate(trades[:MAX_TRADE_ROWS], start=1):
        rows.append(
            f"<tr><td>{number}</td><td>{html.escape(trade.symbol)}</td><td>{trade.side}</td>"
            f"<td>{_time_text(trade.entry_time.timestamp())}</td>"
            f"<td>{_number_text(trade.entry_price)}</td>"
            f"<td>{_time_text(trade.exit_time.timestamp())}</td>"
            f"<td>{_number_text(trade.exit_price)}</td><td>{trade.quantity:,.6g}</td>"
            f"<td>{trade.fees:,.2f}</td>"
            f'<td class="{_sign_class(trade.pnl)}">{trade.pnl:,.2f}</td>'
            f'<td class="{_sign_class(trade.return_)}">{trade.return_ * 100:,.2f} %</td>'
            f"<td>{html.escape(trade.exit_reason)}</td></tr>"
        )
    note = ""
    if len(trades) > MAX_TRADE_ROWS:
        note = f'<p class="note">The first {MAX_TRADE_ROWS:,} of {len(trades):,} trades.</p>'
    if not trades:
        return '<p class="note">No closed trades.</p>'
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>{note}"


def html_report(run: BacktestRun, *, title: str, candles: Sequence[CandleArrays]) -> str:
    """The run as one self-contained HTML page (no external resources)."""
    trades = run.trades()
    times = run.open_time
    params = ", ".join(f"{name} = {value:g}" for name, value in run.params.items()) or "none"
    sub = (
        f"{html.escape(', '.join(run.symbols))} · {times.size:,} bars from "
        f"{_time_text(float(times[0]))} to {_time_text(float(times[-1]))} UTC · "
        f"parameters: {html.escape(params)}"
    )
    sections = [
        "<h2>Equity</h2>",
        _line_chart(times, run.equity, "Equity"),
        "<h2>Drawdown</h2>",
        _drawdown_chart(times, np.asarray(run.result.drawdown, dtype=np.float64)),
    ]
    by_symbol = {instrument.symbol: instrument for instrument in candles}
    for symbol in run.symbols:
        instrument = by_symbol.get(symbol)
        if instrument is None or len(instrument) == 0:
            continue
        own = [trade for trade in trades if trade.symbol == symbol]
        chart, marked = _price_chart(instrument, own)
        sections.append(f"<h2>{html.escape(symbol)}</h2>")
        sections.append(
            '<p class="legend">▲ long entry · ▼ short entry · ○ exit'
            + (f" · the first {marked:,} of {len(own):,} trades" if marked < len(own) else "")
            + "</p>"
        )
        sections.append(chart)
    sections += ["<h2>Metrics</h2>", _metrics_table(run), "<h2>Trades</h2>", _trades_table(trades)]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><div class="sub">{sub}</div>'
        + "\n".join(sections)
        + "</body></html>\n"
    )


def png_equity_chart(run: BacktestRun, *, width: int = 1000, height: int = 400) -> bytes:
    """The equity curve as a PNG image of `width` × `height` pixels."""
    if not (50 <= width <= 10_000 and 50 <= height <= 10_000):
        raise ValueError("width and height must be between 50 and 10,000 pixels")
    # Lazily: matplotlib takes a while to import, and only chart requests need it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t, v = downsample(run.open_time, run.equity, MAX_CHART_POINTS)
    dpi = 100
    # A Figure without pyplot: no global state, safe in threads.
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    moments = t.astype("datetime64[s]")
    axes.plot(moments, v, color="#2457c5", linewidth=1.2)
    axes.set_title(f"Equity · {', '.join(run.symbols)}", fontsize=10)
    axes.grid(True, color="#eceef3")
    axes.margins(x=0)
    figure.autofmt_xdate()
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=dpi)
    return out.getvalue()
