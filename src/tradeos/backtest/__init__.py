"""Backtesting: the numba engine over candle arrays, its metrics, and backtest runs."""
