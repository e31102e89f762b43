"""Indicators against TA-Lib (the `ta-lib` package, a test dependency) on a random-walk market,
and against textbook loops where TA-Lib has no such indicator."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import talib

from tradeos.strategies import indicators as ind

Series = npt.NDArray[np.float64]
BARS = 3000


def random_walk_candles(seed: int = 20261203, bars: int = BARS) -> dict[str, Series]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, bars)))
    open_ = np.concatenate(([100.0], close[:-1])) * (1 + rng.normal(0.0, 0.001, bars))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, 0.004, bars)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, 0.004, bars)))
    volume = rng.lognormal(10.0, 0.6, bars)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


C = random_walk_candles()
H, L, CL, V = C["high"], C["low"], C["close"], C["volume"]


def assert_matches(ours: Series, reference: Series, warm_up: int) -> None:
    """NaN during the warm-up, then equal to the reference within 1e-9 relative."""
    assert ours.shape == reference.shape
    assert np.isnan(ours[:warm_up]).all()
    assert np.isnan(reference[:warm_up]).all()
    assert not np.isnan(reference[warm_up:]).any()
    np.testing.assert_allclose(ours[warm_up:], reference[warm_up:], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("period", [2, 14, 50])
def test_moving_averages_match_ta_lib(period: int) -> None:
    assert_matches(ind.sma(CL, period), talib.SMA(CL, period), period - 1)
    assert_matches(ind.ema(CL, period), talib.EMA(CL, period), period - 1)
    assert_matches(ind.wma(CL, period), talib.WMA(CL, period), period - 1)


@pytest.mark.parametrize("period", [2, 14, 30])
def test_rsi_matches_ta_lib(period: int) -> None:
    assert_matches(ind.rsi(CL, period), talib.RSI(CL, period), period)


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5), (26, 12, 1)])
def test_macd_matches_ta_lib(fast: int, slow: int, signal: int) -> None:
    reference = talib.MACD(CL, fast, slow, signal)
    warm_up = max(fast, slow) + signal - 2
    for ours, theirs in zip(ind.macd(CL, fast, slow, signal), reference, strict=True):
        assert_matches(ours, theirs, warm_up)


@pytest.mark.parametrize(("period", "deviations"), [(20, 2.0), (10, 1.5), (5, 1.0)])
def test_bollinger_matches_ta_lib(period: int, deviations: float) -> None:
    reference = talib.BBANDS(CL, period, deviations, deviations, 0)
    for ours, theirs in zip(ind.bollinger(CL, period, deviations), reference, strict=True):
        assert_matches(ours, theirs, period - 1)


@pytest.mark.parametrize("period", [1, 14, 30])
def test_atr_matches_ta_lib(period: int) -> None:
    assert_matches(ind.atr(H, L, CL, period), talib.ATR(H, L, CL, period), period)


@pytest.mark.parametrize("period", [2, 14, 30])
def test_adx_matches_ta_lib(period: int) -> None:
    assert_matches(ind.adx(H, L, CL, period), talib.ADX(H, L, CL, period), 2 * period - 1)


@pytest.mark.parametrize(
    ("k_period", "k_smoothing", "d_period"), [(14, 3, 3), (5, 3, 3), (9, 1, 4)]
)
def test_stochastic_matches_ta_lib(k_period: int, k_smoothing: int, d_period: int) -> None:
    k, d = ind.stochastic(H, L, CL, k_period, k_smoothing, d_period)
    ref_k, ref_d = talib.STOCH(H, L, CL, k_period, k_smoothing, 0, d_period, 0)
    # TA-Lib starts %K as late as %D; TradeOS's %K starts as soon as it is defined.
    k_warm_up = k_period + k_smoothing - 2
    warm_up = k_warm_up + d_period - 1
    assert np.isnan(k[:k_warm_up]).all()
    assert not np.isnan(k[k_warm_up:]).any()
    assert_matches(np.where(np.arange(BARS) < warm_up, np.nan, k), ref_k, warm_up)
    assert_matches(d, ref_d, warm_up)
    # %K itself from its first bar: the SMA of the textbook fast %K.
    fast_k = np.full(BARS, np.nan)
    for i in range(k_period - 1, BARS):
        window = slice(i - k_period + 1, i + 1)
        fast_k[i] = 100 * (CL[i] - L[window].min()) / (H[window].max() - L[window].min())
    expected_k = np.full(BARS, np.nan)
    for i in range(k_warm_up, BARS):
        expected_k[i] = fast_k[i - k_smoothing + 1 : i + 1].mean()
    assert_matches(k, expected_k, k_warm_up)


@pytest.mark.parametrize("period", [2, 20, 100])
def test_cci_matches_ta_lib(period: int) -> None:
    assert_matches(ind.cci(H, L, CL, period), talib.CCI(H, L, CL, period), period - 1)


def test_obv_matches_ta_lib() -> None:
    assert_matches(ind.obv(CL, V), talib.OBV(CL, V), 0)


@pytest.mark.parametrize("period", [1, 10, 60])
def test_roc_matches_ta_lib(period: int) -> None:
    assert_matches(ind.roc(CL, period), talib.ROC(CL, period), period)


@pytest.mark.parametrize("period", [2, 5, 20, 33, 100, 500])
def test_stdev_is_the_population_deviation_of_ta_lib(period: int) -> None:
    ours = ind.stdev(CL, period)
    # Exact: a two-pass population standard deviation (ddof=0) of each window.
    exact = np.lib.stride_tricks.sliding_window_view(CL, period).std(axis=1)
    np.testing.assert_allclose(ours[period - 1 :], exact, rtol=1e-9)
    # TA-Lib 0.6+ itself strays up to ~2e-9 from the exact value on two-bar windows.
    tolerance = 1e-8 if period == 2 else 1e-9
    reference = talib.STDDEV(CL, period, 1.0)
    np.testing.assert_allclose(ours[period - 1 :], reference[period - 1 :], rtol=tolerance)
    assert np.isnan(ours[: period - 1]).all()


@pytest.mark.parametrize("period", [1, 2, 20, 250])
def test_highest_and_lowest_match_ta_lib(period: int) -> None:
    if period == 1:  # TA-Lib's MAX/MIN start at 2; a one-bar window is the series itself
        np.testing.assert_array_equal(ind.highest(CL, 1), CL)
        np.testing.assert_array_equal(ind.lowest(CL, 1), CL)
        return
    assert_matches(ind.highest(H, period), talib.MAX(H, period), period - 1)
    assert_matches(ind.lowest(L, period), talib.MIN(L, period), period - 1)


def test_highest_of_a_falling_series_is_the_oldest_bar_of_the_window() -> None:
    falling = np.arange(100.0, 0.0, -1.0)
    np.testing.assert_array_equal(ind.highest(falling, 10)[9:], falling[:-9])
    np.testing.assert_array_equal(ind.lowest(falling, 10)[9:], falling[9:])


def test_vwap_is_cumulative_typical_price_times_volume_over_volume() -> None:
    expected = np.empty(BARS)
    traded = 0.0
    total_volume = 0.0
    for i in range(BARS):
        traded += (H[i] + L[i] + CL[i]) / 3 * V[i]
        total_volume += V[i]
        expected[i] = traded / total_volume
    assert_matches(ind.vwap(H, L, CL, V), expected, 0)
    assert np.isnan(ind.vwap(H[:3], L[:3], CL[:3], np.zeros(3))).all()


def test_crossover_and_crossunder() -> None:
    a = np.array([1.0, 2.0, 3.0, 2.0, 2.0, 3.0, np.nan, 3.0, 1.0])
    b = np.full(9, 2.0)
    assert ind.crossover(a, b).tolist() == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
        False,
        False,
    ]
    assert ind.crossunder(a, b).tolist() == [
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
    ]


def test_shift_looks_back_and_never_ahead() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(ind.shift(values, 1), [np.nan, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ind.shift(values, 9), [np.nan] * 4)
    with pytest.raises(ValueError, match="whole number"):
        ind.shift(values, -1)


def test_an_indicator_of_an_indicator_skips_the_warm_up_like_ta_lib() -> None:
    inner = talib.RSI(CL, 14)
    assert_matches(ind.sma(ind.rsi(CL, 14), 5), talib.SMA(inner, 5), 14 + 4)
    assert_matches(ind.ema(ind.rsi(CL, 14), 9), talib.EMA(inner, 9), 14 + 8)


def test_a_gap_restarts_the_indicator_after_it() -> None:
    gapped = CL.copy()
    gapped[1000] = np.nan
    gapped[2000] = np.inf
    for compute in (lambda x: ind.sma(x, 20), lambda x: ind.ema(x, 20), lambda x: ind.rsi(x, 14)):
        result = compute(gapped)
        np.testing.assert_array_equal(result[:1000], compute(CL[:1000]))
        assert np.isnan(result[1000])
        np.testing.assert_allclose(result[1001:2000], compute(CL[1001:2000]), rtol=1e-12)
        assert np.isnan(result[2000])
        np.testing.assert_allclose(result[2001:], compute(CL[2001:]), rtol=1e-12)


def test_a_short_series_is_all_warm_up() -> None:
    assert np.isnan(ind.sma(CL[:5], 10)).all()
    assert np.isnan(ind.adx(H[:20], L[:20], CL[:20], 14)).all()
    assert np.isnan(ind.macd(CL[:30], 12, 26, 9)[1]).all()
    assert ind.sma(CL[:0], 10).shape == (0,)


def test_bad_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        ind.sma(CL, 1)
    with pytest.raises(ValueError, match="whole number"):
        ind.ema(CL, 2.5)  # type: ignore[arg-type]


def test_the_compiled_crossing_equals_its_numpy_definition() -> None:
    # Rounded values make ties; NaNs compare false. float32 inputs take the numpy path.
    rng = np.random.default_rng(5)
    a = np.round(rng.normal(0, 1, 2000), 1)
    b = np.round(rng.normal(0, 1, 2000), 1)
    a[rng.integers(0, 2000, 50)] = np.nan
    for cross in (ind.crossover, ind.crossunder):
        compiled = cross(a, b)
        plain = cross(a.astype(np.float32), b.astype(np.float32))
        assert compiled.any()
        np.testing.assert_array_equal(compiled, plain)


def test_gap_scans_remembered_within_an_evaluation_change_no_result() -> None:
    gapped = CL.copy()
    gapped[1500:1510] = np.nan
    fresh = [ind.sma(gapped, 20), ind.rsi(gapped, 14), ind.atr(H, L, gapped, 14)]
    with ind.gap_scans():
        remembered = [ind.sma(gapped, 20), ind.rsi(gapped, 14), ind.atr(H, L, gapped, 14)]
        again = ind.sma(gapped, 20)
    for ours, theirs in zip([*remembered, again], [*fresh, fresh[0]], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert np.isnan(fresh[0][1500:1529]).all() and not np.isnan(fresh[0][1529:]).any()


@pytest.mark.parametrize(("period", "other"), [(10, 30), (30, 10), (2, 2), (7, 3000), (20, 3001)])
def test_two_smas_in_one_pass_are_the_same_floats_as_two_calls(period: int, other: int) -> None:
    gapped = CL.copy()
    gapped[1500:1510] = np.nan
    for values in (CL, gapped, CL[:25]):
        short, long = ind.sma_pair(values, period, other)
        np.testing.assert_array_equal(short, ind.sma(values, period))
        np.testing.assert_array_equal(long, ind.sma(values, other))
    assert np.array_equal(ind.sma_pair(CL, 10, 30)[0], talib.SMA(CL, 10), equal_nan=True)


def test_crossings_in_one_pass_are_crossover_and_crossunder() -> None:
    rng = np.random.default_rng(6)
    a = np.round(rng.normal(0, 1, 2000), 1)
    b = np.round(rng.normal(0, 1, 2000), 1)
    a[rng.integers(0, 2000, 50)] = np.nan
    for x, y in ((a, b), (a.astype(np.float32), b), (a, 0.5)):
        up, down = ind.crossings(x, y)  # type: ignore[arg-type]
        assert up.any() and down.any()
        np.testing.assert_array_equal(up, ind.crossover(x, y))  # type: ignore[arg-type]
        np.testing.assert_array_equal(down, ind.crossunder(x, y))  # type: ignore[arg-type]
