"""Crypto exchanges through ccxt: instruments, candles and tickers of any exchange ccxt supports
(its async API, `ccxt.async_support`), as a `MarketProvider`.

ccxt is optional (`pip install 'tradeos[exchanges]'`) and imported only when a provider is made;
without it `ExchangeProvider(...)` raises `CcxtNotInstalled`, a `ProviderError` and an
`ImportError` that says what to install. ccxt is untyped: its objects stay `Any` here.

Symbols map exactly: the canonical `BTC-USDT` is ccxt's unified spot symbol `BTC/USDT`, and
`BTC-USD` is `BTC/USD` — never silently `BTC/USDT` on an exchange without a USD market (USDT is
not USD; the unknown symbol error lists the quotes the exchange has for that base instead). Only
spot markets are served. The provider's `name` is `ccxt:<exchange id>` (`ccxt:binance`): stored
instruments name their exchange, since tick sizes and prices differ between exchanges.

Numbers: ccxt parses exchange JSON into floats; each becomes a `Decimal` through `str` (the
shortest repr, exact for the up to 15 significant digits exchanges send), never through float
arithmetic.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any, Final

import structlog

from tradeos.market.providers.base import (
    AssetClass,
    Bar,
    InstrumentSpec,
    ProviderError,
    Tick,
    UnknownSymbol,
)
from tradeos.market.providers.http import (
    ClosedOnExit,
    Jitter,
    Sleep,
    equal_jitter,
    from_millis,
    to_decimal,
)
from tradeos.market.symbols import normalize, resolve
from tradeos.market.timeframes import Timeframe

logger = structlog.get_logger("tradeos.market.providers")

INSTALL_HINT: Final = "pip install 'tradeos[exchanges]'"
DEFAULT_PAGE_LIMIT: Final = 500  # candles per request when ccxt does not say the exchange's cap
_MAX_NAME: Final = 100  # instruments.name is String(100)
_MAX_DETAIL: Final = 300

Clock = Callable[[], datetime]


class CcxtNotInstalled(ProviderError, ImportError):
    """ccxt, an optional dependency, is missing."""


def load_ccxt() -> ModuleType:
    """`ccxt.async_support`, or `CcxtNotInstalled` saying how to install it."""
    try:
        return importlib.import_module("ccxt.async_support")
    except ImportError as exc:
        raise CcxtNotInstalled(
            f"the exchange market data provider needs ccxt, which is not installed: {INSTALL_HINT}"
        ) from exc


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Ccxt:
    """What this adapter uses of the ccxt module: error classes and precision modes."""

    base_error: type[Exception]
    operation_failed: type[Exception]
    bad_symbol: type[Exception]
    authentication_error: type[Exception]
    decimal_places: int
    significant_digits: int
    tick_size: int

    @classmethod
    def of(cls, module: ModuleType) -> _Ccxt:
        return cls(
            base_error=module.BaseError,
            operation_failed=module.OperationFailed,
            bad_symbol=module.BadSymbol,
            authentication_error=module.AuthenticationError,
            decimal_places=int(module.DECIMAL_PLACES),
            significant_digits=int(module.SIGNIFICANT_DIGITS),
            tick_size=int(module.TICK_SIZE),
        )


class ExchangeProvider(ClosedOnExit):
    """A `MarketProvider` over one ccxt exchange: its active spot markets, their candles and
    tickers. Public endpoints only (no API key needed).

    `exchange` injects a ready ccxt async exchange (tests, shared instances); then `exchange_id`
    is ignored and the exchange stays open on `aclose`. Otherwise one is made with ccxt's rate
    limiter on and `config` merged into its options (proxies, timeouts, `options`, keys).
    `symbols` limits what `instruments` lists (binance alone has thousands of markets).
    Failures ccxt calls retryable (`OperationFailed`: its `NetworkError` family, i.e.
    timeouts, dropped connections, `ExchangeNotAvailable`, `DDoSProtection`,
    `RateLimitExceeded`, maintenance; and bad or empty answers, e.g. Binance's "server is
    overloaded") are retried `max_retries` times with exponential backoff, then raise
    `ProviderError`. `BadSymbol` raises `UnknownSymbol`; `AuthenticationError` and every other
    ccxt error raise `ProviderError` at once.
    """

    def __init__(
        self,
        exchange_id: str = "binance",
        *,
        exchange: Any | None = None,
        symbols: Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        page_limit: int | None = None,
        max_retries: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        jitter: Jitter = equal_jitter,
        clock: Clock = _utcnow,
    ) -> None:
        if page_limit is not None and page_limit < 1:
            raise ValueError("page_limit must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.symbols: frozenset[str] | None = (
            None if symbols is None else frozenset(normalize(symbol) for symbol in symbols)
        )
        module = load_ccxt()
        self._ccxt = _Ccxt.of(module)
        if exchange is None:
            if exchange_id not in module.exchanges:
                raise ValueError(f"ccxt has no exchange {exchange_id!r} (see ccxt.exchanges)")
            exchange = getattr(module, exchange_id)({"enableRateLimit": True, **(config or {})})
            self._owns_exchange = True
        else:
            self._owns_exchange = False
        self._exchange: Any = exchange
        self.exchange_id: str = str(exchange.id)
        self.name: str = f"ccxt:{self.exchange_id}"
        self.page_limit = page_limit or _exchange_page_limit(exchange)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._indexed: Any = None  # the ccxt markets dict `_index` was built from
        self._index: dict[str, dict[str, Any]] = {}

    @property
    def exchange(self) -> Any:
        """The ccxt exchange (untyped)."""
        return self._exchange

    def __repr__(self) -> str:
        return f"ExchangeProvider(exchange={self.exchange_id!r}, page_limit={self.page_limit})"

    async def aclose(self) -> None:
        """Close the ccxt exchange (its HTTP session) if this provider made it."""
        if self._owns_exchange:
            await self._exchange.close()

    # --- the port ---------------------------------------------------------------------------

    async def instruments(self) -> Sequence[InstrumentSpec]:
        """The exchange's active spot markets (those in `symbols` if given), symbol order.

        ccxt's markets are loaded once per exchange object. A market whose `active` is unknown
        (None) counts as active; one without a usable price or amount precision is left out.
        """
        index = await self._markets()
        mode = int(self._exchange.precisionMode)
        if mode == self._ccxt.significant_digits:
            raise ProviderError(
                f"{self.name}: ccxt states this exchange's precision in significant digits, "
                "which gives no fixed tick size or quantity step"
            )
        specs: list[InstrumentSpec] = []
        skipped = 0
        for symbol in sorted(index):
            market = index[symbol]
            if self.symbols is not None and symbol not in self.symbols:
                continue
            if market.get("active") is False:
                continue
            spec = self._spec(symbol, market, mode)
            if spec is None:
                skipped += 1
                continue
            specs.append(spec)
        if skipped:
            logger.warning("ccxt_markets_without_precision", provider=self.name, count=skipped)
        if self.symbols is not None:
            missing = self.symbols - {spec.symbol for spec in specs}
            if missing:
                logger.warning(
                    "ccxt_symbols_not_listed",
                    provider=self.name,
                    symbols=sorted(missing),
                    reason="no active spot market with a usable precision",
                )
        return specs

    async def candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> Sequence[Bar]:
        """Bars with start <= open_time < end, oldest first (`fetch_ohlcv`, paged forward).

        Pages of `page_limit` bars follow each other from the newest bar seen until `end`, the
        present, an empty page or a page with nothing new. Bars seen twice count once (the later
        answer wins). Bars that do not open on a TradeOS boundary of the timeframe (UTC; weeks
        on Monday 00:00) are dropped: if every bar is, `ProviderError` says so.
        """
        _require_aware(start, "start")
        _require_aware(end, "end")
        market = await self._market(symbol)
        if not self._exchange.has.get("fetchOHLCV"):
            raise ProviderError(f"{self.name} has no candles (fetchOHLCV)")
        timeframes = self._exchange.timeframes
        if timeframes and timeframe.value not in timeframes:
            raise ProviderError(f"{self.name} has no {timeframe.value} candles")
        if start >= end:
            return []
        canonical = _canonical(market)
        start_ms, end_ms = _millis(start), _millis(end)
        step_ms = timeframe.seconds * 1000
        now_ms = _millis(self._clock())
        bars: dict[int, Bar] = {}
        seen: set[int] = set()
        misaligned = 0
        since = start_ms
        while True:
            page = await self._call(
                "fetch_ohlcv",
                canonical,
                self._exchange.fetch_ohlcv,
                market["symbol"],
                timeframe.value,
                since,
                self.page_limit,
            )
            if not isinstance(page, list) or not page:
                break
            new = 0
            newest: int | None = None
            for row in page:
                opened = _open_millis(row)
                if opened is None:
                    continue
                newest = opened if newest is None else max(newest, opened)
                if opened not in seen:
                    seen.add(opened)
                    new += 1
                if not start_ms <= opened < end_ms:
                    continue
                bar = _bar(row)
                if bar is None:
                    logger.warning("ccxt_candle_skipped", provider=self.name, symbol=canonical)
                elif timeframe.floor(bar.open_time) != bar.open_time:
                    misaligned += 1
                else:
                    bars[opened] = bar
            if new == 0 or newest is None or newest < since:
                break  # nothing new: the exchange has no more, or ignores `since`
            if newest + step_ms >= end_ms or newest + step_ms > now_ms:
                break  # the next bar opens after the window, or has not opened yet
            since = newest + 1
        if misaligned:
            if not bars:
                raise ProviderError(
                    f"{self.name} {timeframe.value} candles of {canonical} do not open on UTC "
                    f"{timeframe.value} boundaries (weeks: Monday 00:00): use a finer timeframe"
                )
            logger.warning(
                "ccxt_candles_misaligned",
                provider=self.name,
                symbol=canonical,
                timeframe=timeframe.value,
                dropped=misaligned,
            )
        return [bars[opened] for opened in sorted(bars)]

    async def ticker(self, symbol: str) -> Tick:
        """The last price and best bid / ask (`fetch_ticker`); a missing (or zero) bid or ask
        is the last price. Without a timestamp from the exchange, the tick is dated now."""
        market = await self._market(symbol)
        canonical = _canonical(market)
        if not self._exchange.has.get("fetchTicker"):
            raise ProviderError(f"{self.name} has no tickers (fetchTicker)")
        raw = await self._call(
            "fetch_ticker", canonical, self._exchange.fetch_ticker, market["symbol"]
        )
        if not isinstance(raw, dict):
            raise ProviderError(f"{self.name} fetch_ticker({canonical}) answered no ticker")
        last = _positive(raw.get("last")) or _positive(raw.get("close"))
        if last is None:
            raise ProviderError(f"{self.name} has no last price for {canonical}")
        return Tick(
            symbol=canonical,
            time=from_millis(raw.get("timestamp")) or self._clock(),
            last=last,
            bid=_positive(raw.get("bid")) or last,
            ask=_positive(raw.get("ask")) or last,
        )

    # --- markets ----------------------------------------------------------------------------

    async def _markets(self) -> dict[str, dict[str, Any]]:
        """Spot markets by canonical symbol (active or not: history outlives a listing)."""
        markets = await self._call("load_markets", None, self._exchange.load_markets)
        if markets is not self._indexed:
            index: dict[str, dict[str, Any]] = {}
            for market in (markets or {}).values():
                if not isinstance(market, dict) or market.get("spot") is not True:
                    continue
                symbol = _canonical_or_none(market)
                if symbol is not None:
                    index[symbol] = market
            self._index, self._indexed = index, markets
        return self._index

    async def _market(self, symbol: str) -> dict[str, Any]:
        index = await self._markets()
        found = resolve(symbol, index.keys())
        if found is None:
            raise UnknownSymbol(self._unknown(symbol, index))
        return index[found]

    def _unknown(self, symbol: str, index: Mapping[str, dict[str, Any]]) -> str:
        message = f"{self.name} has no spot market {symbol!r}"
        try:
            base = normalize(symbol).split("-")[0]
        except ValueError:
            return message
        others = sorted(canonical for canonical in index if canonical.split("-")[0] == base)
        if others:
            shown = ", ".join(others[:8]) + (", ..." if len(others) > 8 else "")
            message += f" (markets of {base} there: {shown})"
        return message

    def _spec(self, symbol: str, market: Mapping[str, Any], mode: int) -> InstrumentSpec | None:
        precision = market.get("precision")
        precision = precision if isinstance(precision, dict) else {}
        tick = _increment(precision.get("price"), mode, self._ccxt)
        step = _increment(precision.get("amount"), mode, self._ccxt)
        if tick is None or step is None:
            return None
        return InstrumentSpec(
            symbol=symbol,
            name=f"{market['symbol']} on {self._exchange.name}"[:_MAX_NAME],
            asset_class=AssetClass.CRYPTO,
            base=str(market["base"]),
            quote=str(market["quote"]),
            tick_size=tick,
            quantity_step=step,
        )

    # --- calls ------------------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        symbol: str | None,
        function: Callable[..., Awaitable[Any]],
        *args: Any,
    ) -> Any:
        """`await function(*args)` with ccxt's errors as TradeOS's, retryable ones retried."""
        errors = self._ccxt
        attempt = 0
        while True:
            try:
                return await function(*args)
            except errors.bad_symbol as exc:
                raise UnknownSymbol(
                    f"{self.name} does not know {symbol or 'the symbol'}: {_detail(exc)}"
                ) from exc
            except errors.authentication_error as exc:
                raise ProviderError(
                    f"{self.name} refused the request as unauthenticated ({_detail(exc)}): check "
                    "the API key, secret and their permissions in the provider config (public "
                    "market data needs no key)"
                ) from exc
            except errors.operation_failed as exc:
                if attempt >= self.max_retries:
                    raise ProviderError(
                        f"{self.name} {operation} failed after {attempt + 1} attempts: "
                        f"{type(exc).__name__}: {_detail(exc)}"
                    ) from exc
                delay = self._jitter(min(self.backoff_max, self.backoff_base * 2**attempt))
                logger.warning(
                    "ccxt_retry",
                    provider=self.name,
                    operation=operation,
                    error=type(exc).__name__,
                    attempt=attempt + 1,
                    delay=round(delay, 3),
                )
                attempt += 1
                await self._sleep(delay)
            except errors.base_error as exc:
                raise ProviderError(
                    f"{self.name} {operation} failed: {type(exc).__name__}: {_detail(exc)}"
                ) from exc


# --- mapping ------------------------------------------------------------------------------


def _increment(value: object, mode: int, ccxt: _Ccxt) -> Decimal | None:
    """A market precision as an increment: in TICK_SIZE mode it is one, in DECIMAL_PLACES
    mode it counts digits (2 -> 0.01). None if missing, not positive, or significant digits."""
    number = to_decimal(value)
    if number is None:
        return None
    if mode == ccxt.tick_size:
        return number if number > 0 else None
    if mode == ccxt.decimal_places:
        if number != number.to_integral_value():
            return None
        return Decimal(1).scaleb(-int(number))
    return None  # significant digits: no fixed increment


def _exchange_page_limit(exchange: Any) -> int:
    """The exchange's candles-per-request cap as ccxt's `features` state it, else 500."""
    features = getattr(exchange, "features", None)
    spot = features.get("spot") if isinstance(features, dict) else None
    ohlcv = spot.get("fetchOHLCV") if isinstance(spot, dict) else None
    limit = ohlcv.get("limit") if isinstance(ohlcv, dict) else None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit
    return DEFAULT_PAGE_LIMIT


def _canonical_or_none(market: Mapping[str, Any]) -> str | None:
    """`BASE-QUOTE` for a spot market, or None when its codes make no canonical symbol."""
    base, quote = market.get("base"), market.get("quote")
    if not isinstance(base, str) or not isinstance(quote, str) or "-" in base + quote:
        return None
    candidate = f"{base}-{quote}"
    try:
        return candidate if normalize(candidate) == candidate else None
    except ValueError:
        return None


def _canonical(market: Mapping[str, Any]) -> str:
    return f"{market['base']}-{market['quote']}"


def _millis(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC)")


def _open_millis(row: object) -> int | None:
    if not isinstance(row, list | tuple) or len(row) < 5:
        return None
    opened = row[0]
    if isinstance(opened, bool) or not isinstance(opened, int | float):
        return None
    return int(opened)


def _bar(row: Sequence[Any]) -> Bar | None:
    """A ccxt OHLCV row [ms, open, high, low, close, volume] as a Bar; None if a price is
    missing. A missing volume is 0."""
    open_time = from_millis(row[0])
    open_, high, low, close = (to_decimal(value) for value in row[1:5])
    if open_time is None or open_ is None or high is None or low is None or close is None:
        return None
    volume = to_decimal(row[5]) if len(row) > 5 else None
    return Bar(open_time, open_, high, low, close, volume if volume is not None else Decimal(0))


def _positive(value: object) -> Decimal | None:
    number = to_decimal(value)
    return number if number is not None and number > 0 else None


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
