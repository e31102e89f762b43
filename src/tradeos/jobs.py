"""Every job of TradeOS, imported in one place (as models.py does for tables), so `serve`,
`tradeos worker` and `tradeos scheduler` all know the same jobs. A domain's jobs live in its
`jobs.py`; add the module here."""

from tradeos.backtest import jobs as _backtest
from tradeos.core.jobs import JOBS, on_worker_start
from tradeos.core.jobs import maintenance as _maintenance
from tradeos.market import jobs as _market

__all__ = ["JOBS"]

DECLARING_MODULES = (_maintenance, _market, _backtest)


@on_worker_start
def _warm_up_backtests() -> None:
    """Compile (or load from numba's cache) the backtest engine and the formula indicators
    before this process runs its first job: never inside a job or a request. Imported here,
    not at module level, so processes that only enqueue never load numba."""
    from tradeos.backtest.runner import warm_up

    warm_up()
