"""Every table of TradeOS, imported in one place for Alembic (migrations/env.py reads this)."""

from tradeos.accounts.models import User
from tradeos.core.db import Base

__all__ = ["Base", "User"]
