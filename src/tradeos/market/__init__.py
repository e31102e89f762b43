"""Market data: instruments, crypto listings, candles, tickers, providers, sync and live feed."""
