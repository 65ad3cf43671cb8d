"""Black-76: prices, implied volatility round trips and Greeks against finite differences."""

from __future__ import annotations

import math

import pytest

from engine.market import black76

F, K, T, R, SIGMA = 24060.0, 24000.0, 5 / 365, 0.065, 0.14


def test_at_the_money_price_matches_the_closed_form() -> None:
    # F = K, r = 0: price = F (2 N(σ√t / 2) − 1)
    expected = 100.0 * math.erf(0.2 * math.sqrt(0.25) / 2 / math.sqrt(2))
    assert black76.price("c", 100.0, 100.0, 0.25, 0.0, 0.2) == pytest.approx(expected)
    assert black76.price("p", 100.0, 100.0, 0.25, 0.0, 0.2) == pytest.approx(expected)


def test_put_call_parity() -> None:
    call, put = (black76.price(f, F, K, T, R, SIGMA) for f in ("c", "p"))
    assert call - put == pytest.approx(math.exp(-R * T) * (F - K))


@pytest.mark.parametrize("flag", ["c", "p"])
@pytest.mark.parametrize("sigma", [0.05, 0.14, 0.8])
def test_implied_volatility_round_trips(flag: str, sigma: float) -> None:
    value = black76.price(flag, F, K, T, R, sigma)
    assert black76.implied_volatility(value, F, K, T, R, flag) == pytest.approx(sigma, abs=1e-7)


def test_no_volatility_gives_a_price_below_intrinsic_or_above_the_forward() -> None:
    with pytest.raises(ValueError, match="intrinsic"):
        black76.implied_volatility(50.0, F, K, T, R, "c")  # intrinsic is 60
    with pytest.raises(ValueError, match="at or above"):
        black76.implied_volatility(F, F, K, T, R, "c")


@pytest.mark.parametrize("flag", ["c", "p"])
def test_greeks_are_the_price_derivatives_in_trader_units(flag: str) -> None:
    g = black76.greeks(flag, F, K, T, R, SIGMA)

    def p(f: float = F, t: float = T, r: float = R, s: float = SIGMA) -> float:
        return black76.price(flag, f, K, t, r, s)

    assert g.delta == pytest.approx((p(f=F + 0.01) - p(f=F - 0.01)) / 0.02, rel=1e-5)
    assert g.gamma == pytest.approx(p(f=F + 1) - 2 * p() + p(f=F - 1), rel=1e-3)
    assert g.vega == pytest.approx((p(s=SIGMA + 1e-4) - p(s=SIGMA - 1e-4)) / 2e-4 / 100,
                                   rel=1e-5)
    day = 1 / 365
    assert g.theta == pytest.approx(-(p(t=T + 1e-6) - p(t=T - 1e-6)) / 2e-6 * day, rel=1e-4)
    assert g.rho == pytest.approx((p(r=R + 1e-5) - p(r=R - 1e-5)) / 2e-5 / 100, rel=1e-5)
