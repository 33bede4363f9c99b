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
    return _side(mean - half, mean + half, 0.0)


def _side(low: float, high: float, point: float) -> int:
    """Where the interval [low, high] lies against ``point``: -1 below, +1 above, 0 containing it."""
    return -1 if high < point else 1 if low > point else 0


def _read_side(side: int, point: str, below: str, above: str, neither: str) -> str:
    """The verdict of an interval on ``side`` (`_side()`) of ``point``, with the reason."""
    if side < 0:
        return f"{below} (the interval lies below {point})"
    if side > 0:
        return f"{above} (the interval lies above {point})"
    return f"{neither} (the interval contains {point})"


def interval_verdict(differences: Sequence[float], below: str, above: str,
                     neither: str = "indistinguishable") -> str:
    """What the 95% interval of the mean of paired ``differences`` says: ``below`` when it
    lies below 0, ``above`` when it lies above 0, ``neither`` when it contains 0, each with
    the reason; one value says nothing ("cannot be told")."""
    sign = interval_sign(differences)
    if sign is None:
        return f"cannot be told from {len(differences)} seed"
    return _read_side(sign, "0", below, above, neither)


# ---------------------------------------------------------------------- spread of paired samples
def std_ratio_ci95(values: Sequence[float], reference: Sequence[float]) -> tuple[float, float, float]:
    """(ratio, low, high): the standard deviation of ``values`` over that of ``reference``,
    two samples paired item by item (a seed's two arms), and its 95% confidence interval by
    inverting the Pitman-Morgan test (normal pairs; H0 ratio² = λ holds exactly when
    x/√λ + y and x/√λ - y are uncorrelated). With F = s_x²/s_y², r = corr(x, y), n pairs and
    K = 1 + 2 t²_{0.975, n-2} (1 - r²)/(n - 2), the variance ratio's interval is
    F (K ∓ √(K² - 1)); the standard deviations' is its square root.
    NaN throughout for fewer than three pairs or a sample without spread."""
    if len(values) != len(reference):
        raise ValueError(f"paired samples need equal lengths, got {len(values)} and {len(reference)}")
    n = len(values)
    if n < 3:
        return math.nan, math.nan, math.nan
    mean_x, mean_y = sum(values) / n, sum(reference) / n
    sxx = sum((x - mean_x) ** 2 for x in values)
    syy = sum((y - mean_y) ** 2 for y in reference)
    if sxx == 0.0 or syy == 0.0:
        return math.nan, math.nan, math.nan
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(values, reference, strict=True))
    f, r2 = sxx / syy, min(1.0, sxy * sxy / (sxx * syy))
    k = 1.0 + 2.0 * t975(n - 2) ** 2 * (1.0 - r2) / (n - 2)
    root = math.sqrt(k * k - 1.0)
    return math.sqrt(f), math.sqrt(f * (k - root)), math.sqrt(f * (k + root))


def spread_verdict(values: Sequence[float], reference: Sequence[float], below: str = "smaller",
                   above: str = "larger", neither: str = "indistinguishable") -> str:
    """What the 95% interval of the paired standard-deviation ratio (`std_ratio_ci95()`)
    says: ``below`` when it lies below 1, ``above`` when above 1, ``neither`` when it contains 1."""
    ratio, low, high = std_ratio_ci95(values, reference)
    if math.isnan(ratio):
        reason = "fewer than 3 paired seeds" if len(values) < 3 else "a sample without spread"
        return f"cannot be told ({reason})"
    return _read_side(_side(low, high, 1.0), "1", below, above, neither)
