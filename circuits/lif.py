"""The leaky integrate-and-fire neuron in closed form, and how circuit mode makes it carry a signed signal.

The membrane (Brian2 build: ``circuits.brian.network``) is

    τ_m dV/dt = (V_rest + μ_in - V) + σ_V √(2 τ_m) ξ(t),      spike when V > θ,
    then V ← V_reset and V is held there for τ_ref (refractory period);

``μ_in`` is the neuron's input drive (volts: a current times the membrane
resistance) and ``ξ`` white noise of unit intensity: without a threshold V
would fluctuate around ``μ = V_rest + μ_in`` with standard deviation ``σ_V``
(the background activity a neuron in cortex receives, which makes its firing
irregular and its f–I curve smooth).

Firing rate (Siegert 1951; Brunel & Hakim 1999, eq. 21; Brunel 2000)::

    1/ν(μ, σ_V) = τ_ref + τ_m √π ∫_{(V_reset - μ)/s}^{(θ - μ)/s} e^{u²} (1 + erf u) du,   s = √2 σ_V

and, without noise (σ_V → 0, μ > θ), the deterministic
``1/ν = τ_ref + τ_m ln((μ - V_reset)/(μ - θ))`` (0 for μ ≤ θ).

**A signed signal as a rate around a baseline.** A value ``x`` (an activity
``y`` or an error ``δ`` of the rate-mode network) is carried by the rate
``ν ≈ ν₀ + G x``: the neuron's drive is ``μ_in = μ₀ + k x`` with ``μ₀`` the
drive at which ``ν(μ₀) = ν₀`` (the baseline, e.g. 20 Hz: cortical) and
``k = G / ν'(μ₀)`` (volts per unit of ``x``; ``ν'`` the slope of the f–I
curve at the baseline). A reader decodes ``x̂ = (a - ν₀)/G`` from the
neuron's exponentially filtered spike train ``a``. The code is linear to
first order; it rectifies where ν would fall below 0 (``x < -ν₀/G``) and
bends where the f–I curve does (checked by ``calibrate``'s ``linear_range``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["lif_rate", "lif_rate_deterministic", "LIFCode", "calibrate"]


def _siegert_integral(lower: float, upper: float) -> float:
    """``√π ∫_lower^upper e^{u²}(1 + erf u) du`` (``e^{u²}(1 + erf u) = erfcx(-u)``, no overflow)."""
    from scipy import integrate, special

    if upper <= lower:
        return 0.0
    value, _ = integrate.quad(lambda u: special.erfcx(-u), lower, upper, limit=200, epsabs=0.0, epsrel=1e-10)
    return math.sqrt(math.pi) * value


def lif_rate(mu: float, sigma: float, tau_m: float, tau_ref: float, threshold: float, reset: float) -> float:
    """Stationary firing rate (Hz) of the noisy LIF neuron (the Siegert formula above).

    Parameters
    ----------
    mu : mean free membrane potential ``V_rest + μ_in`` (V).
    sigma : its standard deviation without a threshold, ``σ_V`` (V); 0 gives
        the deterministic rate.
    tau_m, tau_ref : membrane time constant and refractory period (s).
    threshold, reset : θ and ``V_reset`` (V), ``reset < threshold``.
    """
    if sigma <= 0:
        return lif_rate_deterministic(mu, tau_m, tau_ref, threshold, reset)
    # Brunel's σ multiplies √τ_m ξ (τ_m dV/dt = μ - V + σ √τ_m ξ): the free membrane's standard deviation
    # is σ/√2, so his σ is √2 σ_V
    s = math.sqrt(2.0) * sigma
    upper = (threshold - mu) / s
    if upper > 12.0:  # e^{-144}: no spike within the age of the universe
        return 0.0
    return 1.0 / (tau_ref + tau_m * _siegert_integral((reset - mu) / s, upper))


def lif_rate_deterministic(mu: float, tau_m: float, tau_ref: float, threshold: float, reset: float) -> float:
    """``1/(τ_ref + τ_m ln((μ - V_reset)/(μ - θ)))`` for μ > θ, else 0 (Hz)."""
    if mu <= threshold:
        return 0.0
    return 1.0 / (tau_ref + tau_m * math.log((mu - reset) / (mu - threshold)))


@dataclass(frozen=True)
class LIFCode:
    """How a LIF population carries ``x``: drive ``μ_in = mu0 + k x`` (V), rate ``ν ≈ ν₀ + G x``.

    Attributes
    ----------
    mu0 : the drive above ``V_rest`` that gives the baseline rate (V).
    k : volts of drive per unit of ``x`` (``G / ν'(V_rest + mu0)``).
    baseline_rate, gain : ν₀ (Hz) and G (Hz per unit).
    slope : ν'(μ) at the baseline (Hz per V).
    linear_range : the ``x`` in [-1, 1] (one σ of the mirror's noise) at
        which ``ν(μ₀ + k x)`` departs most from ``ν₀ + G x``, as a fraction of
        ``G`` (0 for a perfectly linear code).
    """

    mu0: float
    k: float
    baseline_rate: float
    gain: float
    slope: float
    linear_range: float


def calibrate(baseline_rate: float, gain: float, sigma: float, tau_m: float, tau_ref: float, v_rest: float,
              threshold: float, reset: float) -> LIFCode:
    """The drive offset and scale that make a LIF neuron fire ``ν₀ + G x`` to first order.

    Solves ``ν(V_rest + μ₀) = ν₀`` (bisection on the monotone f–I curve) and
    sets ``k = G / ν'(V_rest + μ₀)`` with a central difference of the
    Siegert rate.

    Raises
    ------
    ValueError
        ``ν₀`` is not below the largest rate ``1/τ_ref`` (nothing can be solved).
    """
    from scipy import optimize

    if not 0 < baseline_rate < 1.0 / tau_ref:
        raise ValueError(f"baseline rate {baseline_rate:g} Hz must be in (0, 1/τ_ref = {1 / tau_ref:g} Hz)")

    def rate(drive: float) -> float:
        return lif_rate(v_rest + drive, sigma, tau_m, tau_ref, threshold, reset)

    lo, hi = reset - v_rest - 10 * sigma - 0.05, threshold - v_rest
    while rate(hi) < baseline_rate:
        hi += max(threshold - reset, 0.01)
    mu0 = optimize.brentq(lambda d: rate(d) - baseline_rate, lo, hi, xtol=1e-12, rtol=1e-12)
    h = 1e-6
    slope = (rate(mu0 + h) - rate(mu0 - h)) / (2 * h)
    if not slope > 0:
        raise ValueError("the f–I curve is flat at the baseline rate: raise the membrane noise σ_V")
    k = gain / slope
    xs = np.linspace(-1.0, 1.0, 21)
    departure = max(abs(rate(mu0 + k * x) - (baseline_rate + gain * x)) for x in xs) / gain
    return LIFCode(mu0=float(mu0), k=float(k), baseline_rate=float(baseline_rate), gain=float(gain),
                   slope=float(slope), linear_range=float(departure))
