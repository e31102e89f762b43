"""The errors of the trading core's pure modules (orders, positions, ledger).

They are plain exceptions, free of HTTP: the trading service turns them into TradeOS's problem
responses (`OrderInvalid` into a 422 naming each field, `InsufficientFunds` into a 422 with the
amounts, `InvalidTransition` into a 409).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tradeos.trading.orders import OrderStatus


class TradingError(Exception):
    """Base of the trading core's domain errors."""


@dataclass(frozen=True)
class FieldError:
    """One refused field of an order request: `field` is the request's field name."""

    field: str
    message: str


class OrderInvalid(TradingError):
    """An order request broke one or more rules; `errors` names every refused field."""

    def __init__(self, errors: tuple[FieldError, ...]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{error.field}: {error.message}" for error in errors))


class InvalidTransition(TradingError):
    """An order was asked to move between two statuses the transition table does not link."""

    def __init__(self, current: OrderStatus, target: OrderStatus) -> None:
        self.current = current
        self.target = target
        super().__init__(f"an order cannot go from {current} to {target}")


class InvalidFill(TradingError):
    """A fill that cannot apply: wrong instrument, non-positive quantity, more than remains."""


class LedgerError(TradingError):
    """A balance operation that would break the ledger's rules (negative amounts, releasing
    more than is reserved)."""


class InsufficientFunds(LedgerError):
    """The operation needs more than the account has available."""

    def __init__(self, needed: Decimal, available: Decimal) -> None:
        self.needed = needed
        self.available = available
        super().__init__(f"insufficient funds: needs {needed}, {available} available")


class ShortSaleNotAllowed(TradingError):
    """A sell would open or increase a short position in an account that does not permit it."""

    def __init__(self, short_quantity: Decimal) -> None:
        self.short_quantity = short_quantity
        super().__init__(
            f"this account does not permit short sales: the order would sell {short_quantity} "
            "more than the position holds"
        )


class OrderNotOpen(TradingError):
    """Only an open order (accepted or partially filled) can be matched or filled."""
