"""Strategies: formulas (the safe formula language), indicators, marketplace."""
