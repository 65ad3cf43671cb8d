"""Black-76: the price, implied volatility and Greeks of a European option on a forward.

Owns the option model OpenAlgo's ``optiongreeks`` uses (services/option_greeks_service.py, via
the opengreeks library). Units are the trader's, as opengreeks and py_vollib give them: ``sigma``
and ``r`` are decimals a year, ``t`` is in years, theta is per calendar day, vega per one
volatility point (1 %), rho per one percentage point of rate. The normal distribution comes
from ``math.erf``.

>>> round(price("c", 100.0, 100.0, 0.25, 0.0, 0.2), 4)
3.9878
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_SIGMA_LOW, _SIGMA_HIGH = 1e-6, 10.0  # 0.0001 % to 1000 % a year: the IV search bracket


def _cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / _SQRT2PI


def _d1_d2(forward: float, strike: float, t: float, sigma: float) -> tuple[float, float]:
    spread = sigma * math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * spread * spread) / spread
    return d1, d1 - spread


def _check(flag: str, forward: float, strike: float, t: float) -> None:
    if flag not in ("c", "p"):
        raise ValueError(f"flag must be 'c' or 'p', got {flag!r}")
    if not (forward > 0 and strike > 0 and t > 0):
        raise ValueError("forward, strike and time to expiry must be positive")


def price(flag: str, forward: float, strike: float, t: float, r: float, sigma: float) -> float:
    """The discounted Black-76 price of a call (``"c"``) or put (``"p"``)."""
    _check(flag, forward, strike, t)
    d1, d2 = _d1_d2(forward, strike, t, sigma)
    discount = math.exp(-r * t)
    if flag == "c":
        return discount * (forward * _cdf(d1) - strike * _cdf(d2))
    return discount * (strike * _cdf(-d2) - forward * _cdf(-d1))


def implied_volatility(option_price: float, forward: float, strike: float, t: float, r: float,
                       flag: str) -> float:
    """The ``sigma`` at which ``price`` equals ``option_price`` (bisection, to 1e-10).

    Raises ``ValueError`` when no volatility gives that price: at or below the (discounted)
    intrinsic value, or at or above the value at 1000 % volatility.
    """
    _check(flag, forward, strike, t)
    low, high = price(flag, forward, strike, t, r, _SIGMA_LOW), \
        price(flag, forward, strike, t, r, _SIGMA_HIGH)
    if option_price <= low:
        raise ValueError(f"price {option_price} is at or below the intrinsic value {low:.4f}")
    if option_price >= high:
        raise ValueError(f"price {option_price} is at or above {high:.4f}, the value at "
                         f"{_SIGMA_HIGH:.0%} volatility")
    lo, hi = _SIGMA_LOW, _SIGMA_HIGH
    for _ in range(200):  # the price is increasing in sigma
        mid = 0.5 * (lo + hi)
        if price(flag, forward, strike, t, r, mid) < option_price:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True, slots=True)
class Greeks:
    delta: float
    gamma: float
    theta: float  # per calendar day
    vega: float  # per volatility point
    rho: float  # per percentage point of rate


def greeks(flag: str, forward: float, strike: float, t: float, r: float,
           sigma: float) -> Greeks:
    """The Black-76 Greeks at volatility ``sigma`` (units in the module docstring)."""
    _check(flag, forward, strike, t)
    d1, d2 = _d1_d2(forward, strike, t, sigma)
    discount = math.exp(-r * t)
    sqrt_t = math.sqrt(t)
    decay = forward * discount * _pdf(d1) * sigma / (2.0 * sqrt_t)
    if flag == "c":
        delta = discount * _cdf(d1)
        theta = -decay + r * forward * discount * _cdf(d1) - r * strike * discount * _cdf(d2)
    else:
        delta = -discount * _cdf(-d1)
        theta = -decay - r * forward * discount * _cdf(-d1) + r * strike * discount * _cdf(-d2)
    return Greeks(
        delta=delta,
        gamma=discount * _pdf(d1) / (forward * sigma * sqrt_t),
        theta=theta / 365.0,
        vega=forward * discount * _pdf(d1) * sqrt_t * 0.01,
        rho=-t * price(flag, forward, strike, t, r, sigma) * 0.01,
    )
