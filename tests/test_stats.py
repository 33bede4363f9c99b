"""95% intervals: Student's t quantiles and the interval of a mean."""

from __future__ import annotations

import math

import pytest

from leap.util.stats import f_quantile, format_ci, mean_ci95, spread_verdict, std_ratio_ci95, t975


@pytest.mark.parametrize("df,quantile", [(1, 12.706), (2, 4.303), (9, 2.262), (30, 2.042), (60, 2.000),
                                         (120, 1.980), (10_000, 1.960)])
def test_t_quantiles_match_the_tables(df, quantile):
    assert t975(df) == pytest.approx(quantile, abs=2e-3)


def test_the_interval_of_a_mean_is_t_times_the_standard_error_and_undefined_for_one_value():
    mean, half = mean_ci95([30.0, 40.0])
    assert mean == 35.0 and half == pytest.approx(12.706 * math.sqrt(50) / math.sqrt(2))
    assert math.isnan(mean_ci95([3.0])[1])
    assert format_ci([30.0, 40.0]) == "35.0 ± 63.5 (n=2)" and format_ci([3.0]) == "3.0 (n=1)"


@pytest.mark.parametrize("p,df1,df2,quantile", [(0.975, 9, 9, 4.026), (0.025, 9, 9, 0.2484), (0.975, 1, 1, 647.79),
                                                (0.975, 4, 7, 5.523), (0.975, 30, 2, 39.46), (0.5, 9, 9, 1.0)])
def test_f_quantiles_match_the_tables(p, df1, df2, quantile):
    assert f_quantile(p, df1, df2) == pytest.approx(quantile, rel=1e-3)


def test_f_quantiles_match_scipy_across_degrees_of_freedom():
    stats = pytest.importorskip("scipy.stats", reason="scipy (the dev extra) gives the reference quantiles")
    for df1, df2 in [(1, 1), (2, 30), (9, 9), (50, 3), (200, 200)]:
        for p in (0.025, 0.5, 0.975):
            assert f_quantile(p, df1, df2) == pytest.approx(stats.f.ppf(p, df1, df2), rel=1e-9)


def test_the_spread_ratio_is_the_ratio_of_standard_deviations_with_its_f_interval():
    wide, narrow = [0.0, 2.0, 4.0, 6.0, 8.0], [0.0, 1.0, 2.0, 3.0, 4.0]
    ratio, low, high = std_ratio_ci95(narrow, wide)
    f_high, f_low = f_quantile(0.975, 4, 4), f_quantile(0.025, 4, 4)
    assert ratio == pytest.approx(0.5)
    assert (low, high) == pytest.approx((0.5 / math.sqrt(f_high), 0.5 / math.sqrt(f_low)))
    assert spread_verdict(narrow, wide) == "indistinguishable (the interval contains 1)"  # 5 seeds: too few
    many_narrow = [float(i % 10) for i in range(100)]
    many_wide = [10.0 * v for v in many_narrow]
    assert spread_verdict(many_narrow, many_wide) == "smaller (the interval lies below 1)"
    assert spread_verdict(many_wide, many_narrow) == "larger (the interval lies above 1)"
    assert spread_verdict([1.0], wide).startswith("cannot be told") and math.isnan(std_ratio_ci95(wide, [3.0, 3.0])[0])
