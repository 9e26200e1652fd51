"""The comparison statistics against values computed by hand."""
import math

import numpy as np
import pytest

from weightmirror.sims.stats import mcnemar, mean_sd, paired_t


def test_mean_and_sample_sd():
    s = mean_sd([10.0, 12.0, 14.0])
    assert (s.n, s.mean, s.sd) == (3, 12.0, 2.0)  # sd = sqrt(((-2)² + 0 + 2²) / 2) = 2
    assert s.format() == "12.00 ± 2.00"
    missing = mean_sd([1.0, None, float("nan"), 3.0])  # a diverged seed (None) is left out
    assert (missing.n, missing.mean) == (2, 2.0) and missing.sd == pytest.approx(math.sqrt(2))
    assert mean_sd([5.0]).format() == "5.00" and math.isnan(mean_sd([5.0]).sd)
    assert mean_sd([]).n == 0 and mean_sd([]).format() == "–"


def test_paired_t_by_hand():
    a = [10.0, 11.0, 12.5, 10.5]
    b = [9.5, 10.0, 12.0, 10.5]
    # d = 0.5, 1.0, 0.5, 0.0: mean 0.5, sd = sqrt((0 + 0.25 + 0 + 0.25)/3) = sqrt(1/6)
    t, p, n = paired_t(a, b)
    assert n == 4
    assert t == pytest.approx(0.5 / (math.sqrt(1 / 6) / 2))
    # two-sided p of t = 2.449 with 3 degrees of freedom: 0.0917 (t table)
    assert p == pytest.approx(0.0917, abs=5e-4)
    t, p, n = paired_t([1.0, 2.0, None], [1.5, 2.5, 3.0])  # the unpaired seed is left out
    assert n == 2 and t == -math.inf and p == 0.0
    assert math.isnan(paired_t([1.0], [2.0])[1])


def test_mcnemar_exact_on_a_known_table():
    # 10 examples: only A right on 1, only B right on 6, both right on 2, neither on 1
    correct_a = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)
    correct_b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    r = mcnemar(correct_a, correct_b)
    assert (r.b, r.c, r.n) == (1, 6, 10)
    # P(X <= 1), X ~ Binomial(7, 1/2) = (1 + 7) / 128; two-sided: 16/128 = 0.125
    assert r.p == pytest.approx(0.125)
    assert mcnemar([True, False], [True, False]).p == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="same examples"):
        mcnemar([True, False], [True])
