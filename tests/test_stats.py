"""95% intervals: Student's t quantiles and the interval of a mean."""

from __future__ import annotations

import math

import pytest

from leap.util.stats import format_ci, mean_ci95, spread_verdict, std_ratio_ci95, t975


@pytest.mark.parametrize("df,quantile", [(1, 12.706), (2, 4.303), (9, 2.262), (30, 2.042), (60, 2.000),
                                         (120, 1.980), (10_000, 1.960)])
def test_t_quantiles_match_the_tables(df, quantile):
    assert t975(df) == pytest.approx(quantile, abs=2e-3)


def test_the_interval_of_a_mean_is_t_times_the_standard_error_and_undefined_for_one_value():
    mean, half = mean_ci95([30.0, 40.0])
    assert mean == 35.0 and half == pytest.approx(12.706 * math.sqrt(50) / math.sqrt(2))
    assert math.isnan(mean_ci95([3.0])[1])
    assert format_ci([30.0, 40.0]) == "35.0 ± 63.5 (n=2)" and format_ci([3.0]) == "3.0 (n=1)"


def _pitman_morgan_t(x: list[float], y: list[float]) -> float:
    """The Pitman-Morgan statistic of H0 sd(x) = sd(y) for pairs: the t of corr(x + y, x - y)."""
    u, v = [a + b for a, b in zip(x, y)], [a - b for a, b in zip(x, y)]
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    suv = sum((a - mu) * (b - mv) for a, b in zip(u, v))
    r = suv / math.sqrt(sum((a - mu) ** 2 for a in u) * sum((b - mv) ** 2 for b in v))
    return r * math.sqrt(len(x) - 2) / math.sqrt(1 - r * r)


def test_the_paired_spread_interval_ends_where_the_pitman_morgan_test_starts_to_reject():
    x = [1.0, 3.0, 2.0, 5.0, 4.0, 7.0, 6.0, 9.0, 8.0, 10.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0, 10.0, 8.0, 9.0]
    y = [3.0 * v for v in y]
    ratio, low, high = std_ratio_ci95(x, y)
    sd = [math.sqrt(sum((a - sum(s) / len(s)) ** 2 for a in s) / (len(s) - 1)) for s in (x, y)]
    assert ratio == pytest.approx(sd[0] / sd[1]) and low < ratio < high
    # at either end, x scaled to the end's spread against y is exactly at the test's 95% threshold
    for end in (low, high):
        assert abs(_pitman_morgan_t([a / end for a in x], y)) == pytest.approx(t975(len(x) - 2), rel=1e-9)


def test_pairing_narrows_the_spread_interval_when_the_arms_move_together():
    x = [float(v) for v in range(12)]
    together = [2.0 * v + (0.5 if i % 2 else -0.5) for i, v in enumerate(x)]  # r close to 1
    apart = [2.0 * v for v in (0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11)]          # the same values, r about 0.5
    _, low_t, high_t = std_ratio_ci95(x, together)
    _, low_a, high_a = std_ratio_ci95(x, apart)
    assert high_t - low_t < high_a - low_a


def test_spread_verdicts_read_the_interval_against_1():
    narrow = [float(i % 10) for i in range(100)]
    wide = [10.0 * v + (i % 3) for i, v in enumerate(narrow)]
    assert spread_verdict(narrow, wide) == "smaller (the interval lies below 1)"
    assert spread_verdict(wide, narrow) == "larger (the interval lies above 1)"
    assert spread_verdict(narrow[:5], narrow[5:10]) == "indistinguishable (the interval contains 1)"
    assert spread_verdict([1.0, 2.0], [3.0, 5.0]) == "cannot be told (fewer than 3 paired seeds)"
    assert spread_verdict([1.0, 2.0, 4.0], [3.0, 3.0, 3.0]) == "cannot be told (a sample without spread)"
    with pytest.raises(ValueError, match="equal lengths"):
        std_ratio_ci95([1.0, 2.0, 3.0], [1.0, 2.0])
