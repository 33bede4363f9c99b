"""95% intervals: Student's t quantiles and the interval of a mean."""

from __future__ import annotations

import math

import pytest

from leap.util.stats import format_ci, mean_ci95, t975


@pytest.mark.parametrize("df,quantile", [(1, 12.706), (2, 4.303), (9, 2.262), (30, 2.042), (60, 2.000),
                                         (120, 1.980), (10_000, 1.960)])
def test_t_quantiles_match_the_tables(df, quantile):
    assert t975(df) == pytest.approx(quantile, abs=2e-3)


def test_the_interval_of_a_mean_is_t_times_the_standard_error_and_undefined_for_one_value():
    mean, half = mean_ci95([30.0, 40.0])
    assert mean == 35.0 and half == pytest.approx(12.706 * math.sqrt(50) / math.sqrt(2))
    assert math.isnan(mean_ci95([3.0])[1])
    assert format_ci([30.0, 40.0]) == "35.0 ± 63.5 (n=2)" and format_ci([3.0]) == "3.0 (n=1)"
