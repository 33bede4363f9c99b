"""Intervals over seeds (and tasks): the mean with the half-width of its 95% confidence
interval from Student's t distribution, the form every report table uses."""

from __future__ import annotations

import math
from collections.abc import Sequence

# t_{0.975, df} for df = 1..30; beyond, a Cornish-Fisher expansion around the normal's 1.96.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% confidence interval of the mean); the half-width is
    NaN for fewer than two values (one seed says nothing about the spread)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t975(n - 1) * sd / math.sqrt(n)


def format_ci(values: Sequence[float], digits: int = 1) -> str:
    """``mean ± half-width (n=k)``, or ``mean (n=1)``."""
    mean, half = mean_ci95(values)
    if math.isnan(half):
        return f"{mean:.{digits}f} (n={len(values)})"
    return f"{mean:.{digits}f} ± {half:.{digits}f} (n={len(values)})"


def interval_sign(differences: Sequence[float]) -> int | None:
    """Where the 95% interval of the mean of paired ``differences`` lies: -1 below 0, +1
    above 0, 0 when it contains 0; None for one value (no interval)."""
    mean, half = mean_ci95(differences)
    if math.isnan(half):
        return None
    return -1 if mean + half < 0 else 1 if mean - half > 0 else 0


def interval_verdict(differences: Sequence[float], below: str, above: str,
                     neither: str = "indistinguishable") -> str:
    """What the 95% interval of the mean of paired ``differences`` says: ``below`` when it
    lies below 0, ``above`` when it lies above 0, ``neither`` when it contains 0, each with
    the reason; one value says nothing ("cannot be told")."""
    sign = interval_sign(differences)
    if sign is None:
        return f"cannot be told from {len(differences)} seed"
    if sign < 0:
        return f"{below} (the interval lies below 0)"
    if sign > 0:
        return f"{above} (the interval lies above 0)"
    return f"{neither} (the interval contains 0)"


# ---------------------------------------------------------------------- spread of two samples
def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, by its continued fraction
    (Lentz's method), evaluated on the side of x where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges slowly here: use I_x(a, b) = 1 - I_{1-x}(b, a)
        return 1.0 - _regularized_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * fraction / a


def f_quantile(p: float, df1: int, df2: int) -> float:
    """The ``p`` quantile of Fisher's F distribution with (``df1``, ``df2``) degrees of
    freedom (0 < p < 1), by bisection on its CDF I_{d1 x / (d1 x + d2)}(d1/2, d2/2)."""
    if not 0.0 < p < 1.0 or df1 < 1 or df2 < 1:
        raise ValueError(f"need 0 < p < 1 and degrees of freedom >= 1, got p={p}, df=({df1}, {df2})")
    low, high = 0.0, 1.0
    while _regularized_beta(df1 * high / (df1 * high + df2), df1 / 2, df2 / 2) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2
        if _regularized_beta(df1 * mid / (df1 * mid + df2), df1 / 2, df2 / 2) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def std_ratio_ci95(values: Sequence[float], reference: Sequence[float]) -> tuple[float, float, float]:
    """(ratio, low, high): the sample standard deviation of ``values`` over that of
    ``reference`` and its 95% confidence interval from the F distribution (two independent
    samples from normal distributions: s1²/s2² / F_{q}(n1-1, n2-1) for q = 0.975, 0.025).
    NaN throughout when a sample has fewer than two values or ``reference`` has no spread."""
    n1, n2 = len(values), len(reference)
    if n1 < 2 or n2 < 2:
        return math.nan, math.nan, math.nan

    def variance(xs: Sequence[float]) -> float:
        mean = sum(xs) / len(xs)
        return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)

    v1, v2 = variance(values), variance(reference)
    if v2 == 0.0:
        return math.nan, math.nan, math.nan
    f = v1 / v2
    return (math.sqrt(f), math.sqrt(f / f_quantile(0.975, n1 - 1, n2 - 1)),
            math.sqrt(f / f_quantile(0.025, n1 - 1, n2 - 1)))


def spread_verdict(values: Sequence[float], reference: Sequence[float], below: str = "smaller",
                   above: str = "larger", neither: str = "indistinguishable") -> str:
    """What the 95% interval of the standard-deviation ratio (`std_ratio_ci95()`) says:
    ``below`` when it lies below 1, ``above`` when above 1, ``neither`` when it contains 1."""
    ratio, low, high = std_ratio_ci95(values, reference)
    if math.isnan(ratio):
        return f"cannot be told from {min(len(values), len(reference))} seed(s)"
    if high < 1.0:
        return f"{below} (the interval lies below 1)"
    if low > 1.0:
        return f"{above} (the interval lies above 1)"
    return f"{neither} (the interval contains 1)"
