"""Every job of TradeOS, imported in one place (as models.py does for tables), so `serve`,
`tradeos worker` and `tradeos scheduler` all know the same jobs. A domain's jobs live in its
`jobs.py`; add the module here."""

from tradeos.backtest import jobs as _backtest
from tradeos.core.jobs import JOBS
from tradeos.core.jobs import maintenance as _maintenance
from tradeos.market import jobs as _market
from tradeos.portfolio import jobs as _portfolio
from tradeos.trading import jobs as _trading
from tradeos.trading import state_jobs as _trading_state

__all__ = ["JOBS"]

DECLARING_MODULES = (_maintenance, _market, _backtest, _portfolio, _trading_state, _trading)
