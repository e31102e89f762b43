"""Portfolio analytics: round trips (trades and journal entries), the portfolio at its live
marks, its history from periodic snapshots, and its performance statistics."""
