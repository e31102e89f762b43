"""Trading: accounts, orders, fills, positions, portfolio, the execution engine and brokers."""
