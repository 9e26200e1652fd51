"""Statistics of a comparison: several seeds per rule, paired against backprop.

A claim rests on several seeds and a paired test, never on one run:

``mean_sd``
    mean and sample standard deviation (``ddof = 1``) of per-seed values;
``paired_t``
    the two-sided paired t-test of two rules over the seeds they share
    (``t = mean(d) / (sd(d)/√n)`` on the per-seed differences ``d``, ``n - 1``
    degrees of freedom);
``mcnemar``
    McNemar's exact test on per-example predictions of the same test images:
    of the examples where exactly one rule is right (``b``: only the first,
    ``c``: only the second), ``b`` is Binomial(b + c, ½) if both rules are
    equally good; the two-sided p is ``min(1, 2 P(X ≤ min(b, c)))``. Over
    several seeds the tables are pooled (the predictions of seed s of one
    rule against seed s of the other, concatenated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["MeanSD", "mean_sd", "paired_t", "McNemar", "mcnemar"]


@dataclass(frozen=True)
class MeanSD:
    """``n`` finite values: their mean and sample standard deviation (NaN for n < 2)."""

    n: int
    mean: float
    sd: float

    def format(self, digits: int = 2) -> str:
        """``12.34 ± 0.56`` (``12.34`` for one value, ``–`` for none)."""
        if self.n == 0:
            return "–"
        if self.n == 1 or not math.isfinite(self.sd):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def mean_sd(values: Sequence[float | None]) -> MeanSD:
    """Mean and sample sd (ddof = 1) of the finite values (None and NaN left out)."""
    xs = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if xs.size == 0:
        return MeanSD(0, math.nan, math.nan)
    sd = float(xs.std(ddof=1)) if xs.size > 1 else math.nan
    return MeanSD(int(xs.size), float(xs.mean()), sd)


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, int]:
    """``(t, p, n)``: the two-sided paired t-test of ``a`` against ``b``.

    Pairs where either value is missing or not finite are left out; with
    fewer than two pairs, or no spread in the differences, ``t`` and ``p``
    are NaN (a constant non-zero difference gives ``p = 0``).
    """
    from scipy import stats

    pairs = [(float(x), float(y)) for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    n = len(pairs)
    if n < 2:
        return math.nan, math.nan, n
    d = np.array([x - y for x, y in pairs])
    sd = d.std(ddof=1)
    if sd == 0:
        return (math.nan, math.nan, n) if d.mean() == 0 else (math.copysign(math.inf, d.mean()), 0.0, n)
    t = float(d.mean() / (sd / math.sqrt(n)))
    p = float(2 * stats.t.sf(abs(t), df=n - 1))
    return t, p, n


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test: ``b`` examples right only by the first rule, ``c`` only by
    the second, out of ``n`` paired examples; ``p`` two-sided."""

    b: int
    c: int
    n: int
    p: float


def mcnemar(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> McNemar:
    """McNemar's exact test on paired per-example correctness (the same examples, in order)."""
    from scipy import stats

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: {a.shape[0] if a.ndim else 0} and {b.shape[0] if b.ndim else 0} "
                         "predictions: the two rules must be scored on the same examples")
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    k = only_a + only_b
    p = 1.0 if k == 0 else min(1.0, 2.0 * float(stats.binom.cdf(min(only_a, only_b), k, 0.5)))
    return McNemar(only_a, only_b, int(a.size), p)
