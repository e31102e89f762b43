"""Where market data comes from: one port (`MarketProvider`), an adapter per source."""
