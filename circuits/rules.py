"""The learning rules, written once for every backend.

Each rule says three things about the feedback weights ``B`` of a weight layer:
how they are initialised, what the feedback path multiplies errors by, and how
they change. The math takes the array module ``xp`` (NumPy or CuPy) as an
argument and never imports a backend, so the rate-mode engine (``models/``)
and the circuit declaration (``circuits/spec.py``, built in Brian2 by
``circuits/brian/``) share it.

Notation (Akrout et al. 2019, "Deep Learning without Weight Transport",
NeurIPS, arXiv:1904.05391). A weight layer computes ``v = W y + b`` from its
input ``y``; the error at its output is ``δ = ∂L/∂v``; the feedback path sends
``B δ`` down to the layer below, where backprop would send ``Wᵀ δ``.

**Storage convention.** ``B`` is stored in the layout of ``W`` (for a Linear
layer ``(out, in)``, for a convolution the kernel ``(out, in, kh, kw)``), that
is, the array ``layer.B`` holds the paper's ``Bᵀ``. Backprop is then
``layer.B == layer.W`` and the paper's angle(B, Wᵀ) is the angle between the
flattened arrays ``layer.B`` and ``layer.W``. One convention serves matrices
and convolution kernels, so every rule below is written once.

A weight layer handed to a rule provides (see ``models.layers.WeightLayer``):

``W``, ``B``
    arrays of one shape (float32);
``mirror_input_shape``
    the shape of one input sample (``(in,)`` or ``(C, H, W)``);
``linear_response(x)``
    ``W x`` for a batch ``x`` (no bias), i.e. the layer's forward synaptic
    drive;
``activation_response(v)``
    the layer's own output nonlinearity ``φ(v)`` (identity where none);
``hebbian(pre, post)``
    the summed outer product ``Σ_n post_n pre_nᵀ`` in W's layout, which is
    also the layer's weight-gradient operation (for a convolution, the
    correlation of input and output images).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import checks
from ..errors import InputError

__all__ = [
    "RuleError",
    "LearningRule",
    "Backprop",
    "FeedbackAlignment",
    "SignSymmetry",
    "WeightMirror",
    "KolenPollack",
    "RULES",
    "RULE_NAMES",
    "make_rule",
    "rule_label",
    "rule_display_name",
    "angle_degrees",
]


class RuleError(InputError):
    """A learning-rule parameter is out of range or unknown."""


def angle_degrees(a, b, xp=None) -> float:
    """Angle in degrees between two arrays, flattened.

    ``θ = arccos( <a, b> / (‖a‖ ‖b‖) )``, computed in float64. Returns NaN
    (``float("nan")``, ``null`` in JSON) when there is no angle to give:
    either array is all zero (no direction to compare: Kolen-Pollack's
    silent initial feedback, a layer that receives no error) or has a
    non-finite entry (a diverged run). Never 0 or 90 for those.
    """
    if xp is None:
        import numpy as xp  # noqa: N813 - the array-module convention
    a64 = a.reshape(-1).astype(xp.float64)
    b64 = b.reshape(-1).astype(xp.float64)
    na = float(xp.linalg.norm(a64))
    nb = float(xp.linalg.norm(b64))
    # a NaN or an infinity anywhere makes the norm non-finite
    if not (math.isfinite(na) and math.isfinite(nb)) or na == 0.0 or nb == 0.0:
        return math.nan
    cosine = float(xp.dot(a64, b64)) / na / nb
    if not math.isfinite(cosine):  # <a, b> beyond float64 (entries near 1e154): no angle either
        return math.nan
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _rms(xp, a) -> float:
    return float(xp.sqrt(xp.mean(a.astype(xp.float32) ** 2)))


@dataclass(frozen=True)
class LearningRule:
    """Interface shared by the rules; also backprop's defaults.

    Subclasses are frozen dataclasses: their fields are the rule's
    parameters, validated in ``__post_init__``. Methods that change arrays do
    so in place on ``layer.W`` / ``layer.B`` so that the stored weights (not a
    rebound local name) are what changes.
    """

    name: ClassVar[str] = ""
    #: a snake_case identifier (written to summary.json as ``rule_long_name``)
    long_name: ClassVar[str] = ""
    #: how people name the rule: short, for legends and tables (``WM``) ...
    label: ClassVar[str] = ""
    #: ... and in words, for titles (``weight mirror``)
    display_name: ClassVar[str] = ""
    #: does the feedback path read a stored B (else it is derived from W)?
    stores_feedback: ClassVar[bool] = True

    # -- initialisation ---------------------------------------------------
    def init_feedback(self, W, xp, rng):
        """Initial B (W's layout): independent of W, same RMS as W.

        ``B₀ ~ N(0, s²)`` with ``s = RMS(W₀)``, drawn from ``rng``.
        """
        scale = _rms(xp, W)
        return (rng.standard_normal(W.shape, dtype=xp.float32) * scale).astype(xp.float32)

    def prepare_layer(self, layer, xp) -> None:
        """Give a weight layer the state the rule keeps in it (in ``layer.buffers``,
        so that checkpoints hold it); called once when the network is built."""

    # -- feedback path ----------------------------------------------------
    def feedback(self, layer, xp, rng=None):
        """The array the feedback path multiplies errors by (W's layout).

        A derived feedback (sign symmetry) lives in a per-layer buffer that the
        next call overwrites: use it at once or copy it.
        """
        return layer.B

    # -- plasticity -------------------------------------------------------
    def after_weight_update(self, layer, step, shrink: float, xp, lr: float = 0.0,
                            progress: "Progress | None" = None) -> None:
        """Called by the optimiser after ``W ← shrink·W + step`` at learning rate ``lr``
        (``progress``: where training stands, when the trainer says).

        ``step`` is the increment that the local product ``-η δ yᵀ`` (through
        the momentum trace) gave W, ``shrink`` the decay. Kolen-Pollack gives B
        the same update; the weight mirror measures how fast W moves.
        """

    def weight_decay_factor(self, lr: float, progress: "Progress | None" = None) -> float:
        """An extra factor the optimiser folds into W's update, ``W ← k (shrink·W + step)``
        (the rule's own decay, see :func:`own_decay_factor`; 1 for most rules)."""
        return 1.0

    def after_step(self, weight_layers, xp, rng, progress: "Progress | None" = None) -> None:
        """Called once after every training step (weight mirror: mirror mode)."""

    def initial_phase(self, weight_layers, xp, rng) -> None:
        """Called once before training (weight mirror: initial mirror phase)."""

    # -- config -----------------------------------------------------------
    @property
    def key(self) -> str:
        """The config/CLI value that names this rule (``bp``, ``usf``, ``wm`` ...)."""
        return self.name

    def params(self) -> dict[str, Any]:
        """The rule's parameters, as written to ``config.toml``."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Progress:
    """Where training stands, for the plasticity that follows it.

    Attributes
    ----------
    step : optimiser steps done before the current one.
    lr_done : ``Σ η_t`` over those steps (the learning-rate mass spent).
    lr_total : ``Σ η_t`` over the whole run, from the learning-rate schedule.
    samples_per_step : training examples per step on this process (0: not said),
        for plasticity whose cost is sized against the step's.
    """

    step: int
    lr_done: float
    lr_total: float
    samples_per_step: int = 0

    @property
    def fraction(self) -> float:
        """The fraction of the run's learning done, ``lr_done / lr_total`` (by learning-rate mass)."""
        return self.lr_done / self.lr_total if self.lr_total > 0 else 1.0


def own_decay_factor(lr: float, progress: Progress | None, total: float, fraction: float) -> float:
    """``e^{-η_t λ}``: one step of a decay scheduled by the amount of learning.

    The decay acts while the learning-rate mass spent is below ``fraction``
    of the run's, at the rate per unit learning rate that makes it total
    ``Σ_t η_t λ = total`` there:

    ``λ = total / (fraction · Σ_t η_t)``,  so  ``Π_t e^{-η_t λ} = e^{-total}``

    exactly (the step that crosses the end of the window decays only by what
    is left), whatever the run's length, schedule or learning rate: 240 steps
    of digits as 14,000 steps of Fashion-MNIST. Without a ``progress`` (a
    hand-written loop that does not say where it stands) there is no decay.
    """
    if total <= 0 or progress is None or progress.lr_total <= 0:
        return 1.0
    window = fraction * progress.lr_total
    if progress.lr_done >= window:
        return 1.0
    return math.exp(-(total / window) * min(lr, window - progress.lr_done))


@dataclass(frozen=True)
class Backprop(LearningRule):
    """Backpropagation: the reference, which needs weight transport.

    ``B = Wᵀ`` at every step (read from the current W, never copied once):
    ``δ_l = φ'(v_l) ⊙ (W_{l+1}ᵀ δ_{l+1})``.
    """

    name: ClassVar[str] = "bp"
    long_name: ClassVar[str] = "backprop"
    label: ClassVar[str] = "BP"
    display_name: ClassVar[str] = "backprop"
    stores_feedback: ClassVar[bool] = False
    #: a control for Kolen-Pollack: the same own decay of W (``decay_total``
    #: over ``decay_fraction`` of the learning, see :func:`own_decay_factor`),
    #: with exact feedback; 0 (the default) is plain backprop
    decay_total: float = 0.0
    decay_fraction: float = 0.25

    def __post_init__(self):
        checks.number(self.decay_total, "rule bp: decay_total", RuleError, low=0)
        checks.number(self.decay_fraction, "rule bp: decay_fraction", RuleError, low=0, high=1, low_open=True)

    def weight_decay_factor(self, lr: float, progress: Progress | None = None) -> float:
        return own_decay_factor(lr, progress, self.decay_total, self.decay_fraction)

    def init_feedback(self, W, xp, rng):
        return None

    def feedback(self, layer, xp, rng=None):
        return layer.W


@dataclass(frozen=True)
class FeedbackAlignment(LearningRule):
    """Feedback alignment (Lillicrap et al. 2016, Nat. Commun. 7:13276).

    ``B`` is drawn once at random, ``B₀ ~ N(0, RMS(W₀)²)``, and never changes:
    ``δ_l = φ'(v_l) ⊙ (B_{l+1} δ_{l+1})``, ``ΔB = 0``.
    """

    name: ClassVar[str] = "fa"
    long_name: ClassVar[str] = "feedback_alignment"
    label: ClassVar[str] = "FA"
    display_name: ClassVar[str] = "feedback alignment"


@dataclass(frozen=True)
class SignSymmetry(LearningRule):
    """Sign-concordant feedback (Liao, Leibo & Poggio 2016; Xiao et al. 2018).

    The feedback carries W's signs and a magnitude of its own,
    ``B = sign(W)ᵀ ⊙ M``, with

    - ``uniform`` (uSF): ``M = s`` everywhere;
    - ``batch_random`` (brSF): ``M ~ U(0, 2s)`` redrawn for every batch (as a
      random cyclic shift of a fixed pool of i.i.d. draws, which moves a fresh
      draw onto every synapse without a random number per synapse);
    - ``fixed_random`` (frSF): ``M = |R|`` drawn once;

    where ``s = RMS(W₀)``, so that ``E[M] = s`` in every variant and the
    feedback has the scale of the initial forward weights. The stored ``B``
    holds ``M`` (for brSF, the pool of magnitudes); only the signs travel.
    """

    name: ClassVar[str] = "ss"
    long_name: ClassVar[str] = "sign_symmetry"
    magnitude: str = "uniform"

    MAGNITUDES: ClassVar[tuple[str, ...]] = ("uniform", "batch_random", "fixed_random")

    def __post_init__(self):
        checks.choice(self.magnitude, self.MAGNITUDES, f"rule {self.name}: magnitude", RuleError)

    @property
    def key(self) -> str:
        return {"uniform": "usf", "batch_random": "brsf", "fixed_random": "frsf"}[self.magnitude]

    @property
    def label(self) -> str:  # type: ignore[override]
        return {"uniform": "uSF", "batch_random": "brSF", "fixed_random": "frSF"}[self.magnitude]

    @property
    def display_name(self) -> str:  # type: ignore[override]
        return "sign symmetry, " + {"uniform": "uniform magnitude", "batch_random": "batch-random magnitude",
                                    "fixed_random": "fixed-random magnitude"}[self.magnitude]

    def init_feedback(self, W, xp, rng):
        scale = _rms(xp, W)
        if self.magnitude == "fixed_random":
            r = rng.standard_normal(W.shape, dtype=xp.float32)
            return (xp.abs(r) * (scale * math.sqrt(math.pi / 2))).astype(xp.float32)
        if self.magnitude == "batch_random":  # the pool of magnitudes, U(0, 2s)
            return (rng.random(W.shape, dtype=xp.float32) * xp.float32(2.0 * scale)).astype(xp.float32)
        return xp.full(W.shape, scale, dtype=xp.float32)

    def feedback(self, layer, xp, rng=None):
        # |M| with the sign of W in one pass (copysign), into a buffer the
        # layer keeps, so no full-size array is allocated per step.
        out = _feedback_buffer(layer, xp)
        if self.magnitude == "batch_random":
            if rng is None:
                raise RuleError("rule brsf: the feedback path needs a random generator")
            # A fresh magnitude for every synapse at every batch, without a
            # random number per synapse: the stored B is a pool of n i.i.d.
            # U(0, 2s) draws, and each batch takes a random cyclic shift of it.
            n = layer.W.size
            shift = int(rng.integers(0, n))
            pool, w, o = layer.B.reshape(-1), layer.W.reshape(-1), out.reshape(-1)
            xp.copysign(pool[shift:], w[:n - shift], out=o[:n - shift])
            xp.copysign(pool[:shift], w[n - shift:], out=o[n - shift:])
            return out
        return xp.copysign(layer.B, layer.W, out=out)


def _feedback_buffer(layer, xp):
    """A per-layer array of W's shape for a derived feedback matrix."""
    buf = getattr(layer, "_feedback_buffer", None)
    if buf is None or buf.shape != layer.W.shape or buf.dtype != layer.W.dtype:
        buf = xp.empty_like(layer.W)
        layer._feedback_buffer = buf
    return buf


@dataclass(frozen=True)
class WeightMirror(LearningRule):
    """Weight mirror (Akrout et al. 2019, §4): B learns Wᵀ from noise.

    In **mirror mode** each layer's input neurons fire noise of their own,
    ``ξ ~ N(0, σ² I)`` (a batch of ``m`` samples, drawn independently for
    every layer), the layer responds ``r = φ_m(W ξ)``, and every feedback
    synapse, which sees its presynaptic ``δ_{l+1} ← r`` and postsynaptic
    ``δ_l ← ξ`` through the one-to-one links, changes by their Hebbian
    product with decay:

    ``ΔB = η_B · H  -  λ_B B``,   ``H = (1/m) Σ_n ξ_n r_nᵀ``.

    Since ``E[ξ ξᵀ] = σ² I``, for ``φ_m`` the identity ``E[H] = σ² Wᵀ`` and B
    relaxes toward ``(η_B σ² / λ_B) Wᵀ``; the rule keeps ``η_B = λ_B / σ²``
    so the fixed point is ``B = Wᵀ`` (for a nonlinear ``φ_m``, Stein's lemma
    gives ``Wᵀ`` times the mean slope of each unit).

    **How far B is from Wᵀ** (the closed form the adaptive mirror uses). For
    a layer of fan-in ``F`` (``F = C_in k_h k_w`` for a convolution, whose
    every output position is one more sample), an exponential average with
    decay ``λ`` per step of estimates from ``m`` samples per step has a
    relative error ``‖B - Wᵀ‖/‖W‖`` of

    ``ε² = F λ / (2 m)  +  (d / λ)²``

    where the first term is the sampling noise of the Hebbian estimate
    (``E‖W (Ĉ - I)‖² = ‖W‖² F/m`` for the sample covariance ``Ĉ`` of ``m``
    white samples, averaged over ``2/λ`` steps) and the second the lag behind
    a W that moves by a fraction ``d = ‖ΔW‖/‖W‖`` per step; the angle is
    ``atan ε``. For a given ``m`` the best decay is ``λ* = (4 d² m / F)^{1/3}``,
    and the error stays at ``tan θ*`` with the fewest samples when

    ``m = (3/4)^{3/2} · 2 d F / tan³ θ*  ≈ 1.3 d F / tan³ θ*``.

    **Adaptive mirror** (``adaptive = true``, the default): each layer keeps
    a running measure of how fast its forward weights move, ``d̄`` (an
    exponential average of ``‖ΔW‖/‖W‖`` per step, half-life
    ``drift_halflife`` steps), and every ``plan_every`` steps sets its own
    mirror from it: ``m`` noise samples per step from the formula above
    (between ``min_samples`` and ``max_samples``), ``λ = λ*(m)`` and
    ``η_B = λ/σ²``. B then stays within about ``target_angle`` of Wᵀ when W
    learns fast and the mirror costs little when W is still. Of that angle
    at most ``lag_angle`` may be lag (``λ ≥ d / tan θ_lag``, the samples
    raised to keep the total at θ*): a B that lags a moving W destabilises
    the training of deep networks where a B with as much sampling noise does
    not (measured on a 6-hidden-layer MLP: BENCHMARKS.md §1). A layer whose W
    moves faster than ``max_samples`` can follow is held at the best angle
    that many samples allow. Biologically: the feedback synapses of each
    layer learn and forget at a rate set by one broadcast signal of how fast
    that layer's forward synapses are changing (a plasticity-related
    neuromodulator), and the mirror mode lasts longer when learning is
    fast; each synapse still changes by its own pre- and postsynaptic
    activity. Fewer than ``min_batch`` samples per step are pooled into one
    mirror batch every few steps (the same decay per step on average).

    **Initial phase** (before training): each layer's noise is drawn until
    the running mean of the Hebbian estimate has the relative error
    ``tan initial_angle``, i.e. ``N₀ = F / tan² θ₀`` samples (B then starts
    ``θ₀`` from W₀ᵀ whatever B₀ was), in batches of
    ``initial_mirror_batch_size``, or drawn at once from the sum's moments
    (below) where that costs less: one product per layer.

    **Drawing the Hebbian sum from its moments** (``estimator``). For the
    linear response, the average of ``m`` Hebbian products is exactly
    ``H = (1/m) Σ_n W ξ_n ξ_nᵀ = σ² W Ĉ`` with ``Ĉ`` the sample covariance of
    the noise (over a convolution's patches: the ``F × F`` covariance of the
    taps), so B's statistics depend on the noise only through ``Ĉ = I + E``:
    ``E`` is symmetric with ``E[E] = 0``, ``Var E_ij = 1/m`` off the diagonal
    and ``(κ - 1)/m`` on it (``κ = E[ξ⁴]/σ⁴``: 3 Gaussian, 9/5 uniform), and
    ``E‖W E‖² = ‖W‖² (F - 1 + κ - 1)/m ≈ ‖W‖² F / m`` is the sampling noise
    of the closed form above. The mirror can therefore draw ``E`` with those
    moments (independent entries, the sum of ``m`` products by the central
    limit theorem: ``(W E)_oj`` is a sum of ``F`` independent terms) and form
    ``σ² W (I + E)`` with one product, ``F² C`` multiply-adds and ``F²``
    random numbers whatever ``m``, where ``m`` explicit samples cost
    ``m (2 F C + F)``: the same statistics (mean and covariance of every
    update, the closed form's ``ε``) for far less work once ``m`` exceeds
    about ``F/2``, and for a convolution independent of the image size.
    ``"auto"`` (the default) draws each update the cheaper way; ``"samples"``
    always fires explicit noise; ``"moments"`` always draws ``E``. A nonlinear
    response (``response = "layer"``) and the fixed mirror (circuit mode's
    reference, fed the circuit's own noise) always use samples.

    Because a moment draw costs the same for any ``m``, the adaptive mirror
    pools ``k`` steps' samples into one draw (decay ``1 - (1 - λ)^k``, ``k m``
    samples) with ``k = ⌊1/λ⌋`` (at most ``max_pool_steps``). The pooled update
    uses the current W; averaged over the ``k`` steps B's lag would still be
    9–17 % longer than with a draw every step, so the pooled draws take the
    slightly faster decay ``λ'`` whose mean lag is the plan's
    (:meth:`pooled_decay`), with ``m λ'/λ`` samples per step (the same noise
    term). Between draws the lag swings by ``± d (k - 1)/2``, which adds
    ``(k² - 1) d²/12`` to ``ε²``: at ``λ k ≤ 1`` at most a twelfth of the
    lag term ``(d/λ)²``.

    **Fixed mirror** (``adaptive = false``): ``mirror_batches`` batches of
    ``mirror_batch_size`` samples after every step (a fractional part is one
    more batch at that fraction of the steps, at random) with ``η_B = lr``,
    ``λ_B = decay``; ``initial_mirror_steps`` batches of
    ``initial_mirror_batch_size`` at ``initial_decay`` before training.
    Circuit mode uses these (its time constants are fixed by the circuit).

    Parameters
    ----------
    sigma : noise standard deviation σ.
    noise : ``"gaussian"`` or ``"uniform"`` (on ``[-√3σ, √3σ]``); both have
        zero mean and variance σ², so the linear-response expectation is the
        same; Stein's lemma for a nonlinear response needs the Gaussian.
    response : ``"linear"`` (``r = W ξ``) or ``"layer"`` (``r = φ(W ξ + b)``).
    normalize : ``"none"`` or ``"match_w"`` (rescale B to W's Frobenius norm
        after each mirror batch).
    adaptive : the adaptive mirror above (else the fixed one).
    mirror_input_layer : also mirror the first layer, whose B carries no error
        (no layer below it learns); off: its B keeps its initial value and
        costs nothing (rate mode; the circuit mirrors every layer).
    target_angle : θ*, degrees: the angle the adaptive mirror keeps B within.
    lag_angle : θ_lag, degrees: the most of it that may be lag behind W
        (``d/λ ≤ tan θ_lag``); the rest is sampling noise. At or above
        ``target_angle``: no separate bound (the cheapest plan).
    initial_angle : θ₀, degrees: the initial phase's accuracy.
    min_samples, max_samples : noise samples per layer per step, adaptive.
    max_cost : the adaptive mirror's work per step, at most this multiple of
        a training step's (its products and random numbers counted in
        multiply-adds); beyond it every layer's samples are scaled down alike
        (the trainer says the batch size through ``Progress``); 0 (the
        default): no bound but ``max_samples``. A bound trades the angle for
        time: on the digits MLP (lr 0.05, the fastest-moving W of the grid),
        0.5 left B 16–26° from Wᵀ at the end, 4 held 8° at the end but 18–21°
        through the first five epochs, no bound 9° at most after the first
        epoch (for 2.2× the time of 0.5: 12 s against 5.5 s).
    min_batch : the smallest mirror batch (fewer samples per step are pooled).
    estimator : ``"auto"``, ``"samples"`` or ``"moments"``: how the adaptive
        mirror forms its Hebbian sums (above); the fixed mirror always samples.
    max_pool_steps : the most steps one moment draw pools (``⌊1/λ⌋`` below it).
    drift_halflife : steps over which the drift ``d̄`` is averaged.
    plan_every : steps between two updates of the plan (on a GPU, the only
        time the mirror reads a number back from the device).
    lr, decay, mirror_batch_size, mirror_batches, initial_mirror_steps,
    initial_mirror_batch_size, initial_decay : the fixed mirror (and the
        initial phase's batch size for both).
    """

    name: ClassVar[str] = "wm"
    long_name: ClassVar[str] = "weight_mirror"
    label: ClassVar[str] = "WM"
    display_name: ClassVar[str] = "weight mirror"
    sigma: float = 1.0
    noise: str = "gaussian"
    response: str = "linear"
    normalize: str = "none"
    adaptive: bool = True
    mirror_input_layer: bool = False
    target_angle: float = 8.0
    lag_angle: float = 1.0
    initial_angle: float = 3.0
    min_samples: int = 1
    max_samples: int = 8192
    max_cost: float = 0.0
    min_batch: int = 32
    estimator: str = "auto"
    max_pool_steps: int = 100
    drift_halflife: float = 20.0
    plan_every: int = 10
    lr: float = 0.002
    decay: float = 0.002
    mirror_batch_size: int = 64
    mirror_batches: float = 0.25
    initial_mirror_steps: int = 300
    initial_mirror_batch_size: int = 256
    initial_decay: float = 0.01

    NOISES: ClassVar[tuple[str, ...]] = ("gaussian", "uniform")
    NORMALIZE: ClassVar[tuple[str, ...]] = ("none", "match_w")
    RESPONSES: ClassVar[tuple[str, ...]] = ("linear", "layer")
    ESTIMATORS: ClassVar[tuple[str, ...]] = ("auto", "samples", "moments")
    #: ``κ - 1 = E[ξ⁴]/σ⁴ - 1`` per noise: the variance of a diagonal entry of ``m Ĉ`` over m
    KURTOSIS_EXCESS: ClassVar[dict[str, float]] = {"gaussian": 2.0, "uniform": 0.8}
    #: the largest decay per step the adaptive mirror uses
    MAX_DECAY: ClassVar[float] = 0.5
    #: multiply-adds one random number costs (NumPy's uniform draw and its scaling
    #: against OpenBLAS's sgemm, one thread: 131 measured)
    RANDOM_WORK: ClassVar[float] = 128.0

    def __post_init__(self):
        def what(key):
            return f"rule {self.name}: {key}"

        number, integer, choice = checks.number, checks.integer, checks.choice
        number(self.sigma, what("sigma"), RuleError, low=0, low_open=True)
        choice(self.noise, self.NOISES, what("noise"), RuleError)
        choice(self.response, self.RESPONSES, what("response"), RuleError)
        choice(self.normalize, self.NORMALIZE, what("normalize"), RuleError)
        checks.boolean(self.adaptive, what("adaptive"), RuleError)
        number(self.target_angle, what("target_angle"), RuleError, low=0, high=45, low_open=True)
        number(self.lag_angle, what("lag_angle"), RuleError, low=0, high=45, low_open=True)
        number(self.initial_angle, what("initial_angle"), RuleError, low=0, high=45, low_open=True)
        integer(self.min_samples, what("min_samples"), RuleError, low=0)
        integer(self.max_samples, what("max_samples"), RuleError, low=max(1, self.min_samples))
        number(self.max_cost, what("max_cost"), RuleError, low=0)
        integer(self.min_batch, what("min_batch"), RuleError, low=1)
        choice(self.estimator, self.ESTIMATORS, what("estimator"), RuleError)
        integer(self.max_pool_steps, what("max_pool_steps"), RuleError, low=1)
        if self.estimator == "moments" and self.response != "linear":
            raise RuleError(f"rule {self.name}: estimator = 'moments' needs response = 'linear' "
                            f"(a nonlinear response has no closed-form moments); use 'samples' or 'auto'")
        number(self.drift_halflife, what("drift_halflife"), RuleError, low=0, low_open=True)
        integer(self.plan_every, what("plan_every"), RuleError, low=1)
        number(self.lr, what("lr"), RuleError, low=0)
        number(self.decay, what("decay"), RuleError, low=0, high=1, high_open=True)
        number(self.initial_decay, what("initial_decay"), RuleError, low=0, high=1, high_open=True)
        integer(self.mirror_batch_size, what("mirror_batch_size"), RuleError, low=1)
        number(self.mirror_batches, what("mirror_batches"), RuleError, low=0)
        integer(self.initial_mirror_batch_size, what("initial_mirror_batch_size"), RuleError, low=1)
        integer(self.initial_mirror_steps, what("initial_mirror_steps"), RuleError, low=0)
        if not self.adaptive and not (self.decay > 0 or self.normalize != "none" or self.lr == 0):
            raise RuleError(f"rule {self.name}: with normalize = 'none' a decay > 0 is needed to keep B bounded")

    # -- the Hebbian estimate ------------------------------------------------
    def sample_noise(self, xp, rng, shape):
        """Zero-mean noise of variance σ², independent from unit to unit."""
        if self.noise == "gaussian":
            xi = rng.standard_normal(shape, dtype=xp.float32)
            if self.sigma != 1.0:
                xi *= xp.float32(self.sigma)
            return xi
        # uniform on [-√3 σ, √3 σ]: variance σ², cheaper to draw
        xi = rng.random(shape, dtype=xp.float32)
        xi -= xp.float32(0.5)
        xi *= xp.float32(2.0 * math.sqrt(3.0) * self.sigma)
        return xi

    def hebbian_estimate(self, layer, xp, rng, batch_size: int, scale: float = 1.0):
        """One mirror batch: ``scale · (1/m) Σ_n r_n ξ_nᵀ`` in W's layout.

        Its expectation is ``scale · σ² W`` for the linear response.
        """
        xi = self.sample_noise(xp, rng, (batch_size, *layer.mirror_input_shape))
        v = layer.linear_response(xi)
        if self.response == "layer":
            v = layer.activation_response(v, with_bias=True)
        # scale the (small) response rather than the (large) product
        v *= xp.float32(scale / batch_size)
        H = layer.hebbian(pre=xi, post=v)
        counts = getattr(layer, "mirror_counts", None)
        if counts is not None:
            # A convolution sums each kernel tap's product over the output
            # positions where the tap falls inside the image: average instead,
            # so that E[H] = scale·σ²·W as for a Linear layer.
            H /= counts()
        return H

    def moments_estimate(self, layer, xp, rng, samples: float, scale: float = 1.0):
        """The Hebbian average of ``samples`` noise samples drawn from its moments:
        ``scale · σ² W (I + E)`` in W's layout.

        ``E`` is symmetric, ``F × F`` (``F`` the fan-in), zero-mean, with
        variance ``1/m`` off the diagonal and ``(κ - 1)/m`` on it, exactly the
        first two moments of ``Ĉ - I`` for ``m`` white samples (class
        docstring). Its entries are uniform: ``(W E)`` sums ``F`` of them, so
        it is Gaussian as the sum of ``m`` products is.

        ``E = a (G + Gᵀ + c)`` with ``G`` uniform and ``c`` the shift that
        centres it: on the CPU one random byte per entry (``G`` on the 256
        integers -128…127, ``c = 1``, variance ``(256² - 1)/12``; a quarter of
        the work of a float draw), on a GPU ``U(0, 1)`` floats (``c = -1``,
        variance ``1/12``). The shift is applied after the product, as
        ``c W 1 1ᵀ`` (a row sum), so ``E`` is built in one pass.
        """
        W = layer.W
        out_dim = W.shape[0]
        fan_in = W.size // out_dim
        if xp.__name__ == "numpy":
            G = xp.frombuffer(rng.bytes(fan_in * fan_in), dtype=xp.int8).reshape(fan_in, fan_in)
            shift, variance = 1.0, (256.0 ** 2 - 1.0) / 12.0
        else:
            G = rng.random((fan_in, fan_in), dtype=xp.float32)
            shift, variance = -1.0, 1.0 / 12.0
        E = xp.add(G, G.T, dtype=xp.float32)  # off-diagonal variance 2v, diagonal 4v, before the shift
        del G
        a = math.sqrt(1.0 / (2.0 * variance * samples))  # a² · 2v = 1/m off the diagonal (2/m on it)
        excess = self.KURTOSIS_EXCESS[self.noise]
        if excess != 2.0:  # the diagonal's centred value scaled to variance (κ - 1)/m
            diagonal = E.reshape(-1)[:: fan_in + 1]  # a view
            diagonal += xp.float32(shift)
            diagonal *= xp.float32(math.sqrt(excess / 2.0))
            diagonal -= xp.float32(shift)
        W2 = W.reshape(out_dim, fan_in)
        H = W2 @ E
        del E
        H += xp.float32(shift) * W2.sum(axis=1, keepdims=True)  # W (c 1 1ᵀ): the shift
        H *= xp.float32(a)
        H += W2  # W I
        H *= xp.float32(scale * self.sigma ** 2)
        return H.reshape(W.shape)

    def mirror_update(self, layer, xp, rng, lr: float, decay: float, batch_size: int,
                      moments: float = 0.0) -> None:
        """``B ← (1-λ_B) B + η_B H`` (then norm control), in place on layer.B.

        ``H`` averages ``batch_size`` noise inputs (:meth:`hebbian_estimate`), or,
        with ``moments > 0``, is drawn as the average of that many samples
        (:meth:`moments_estimate`; ``batch_size`` is then unused).
        """
        if moments > 0:
            H = self.moments_estimate(layer, xp, rng, moments, scale=lr)
        else:
            H = self.hebbian_estimate(layer, xp, rng, batch_size, scale=lr)
        B = layer.B
        if decay:
            B *= xp.float32(1.0 - decay)
        B += H
        if self.normalize == "match_w":
            nb = float(xp.linalg.norm(B))
            if nb > 0:
                B *= xp.float32(float(xp.linalg.norm(layer.W)) / nb)

    def mirrored(self, weight_layers) -> list:
        """The layers whose B the mirror learns: all but one whose B carries no
        error (``needs_input_grad`` False: the input layer), unless ``mirror_input_layer``."""
        return [l for l in weight_layers if self.mirror_input_layer or getattr(l, "needs_input_grad", True)]

    def mirror_phase(self, weight_layers, xp, rng, batches: int, lr: float, decay: float,
                     batch_size: int | None = None) -> None:
        """``batches`` mirror batches of the fixed mirror; each layer draws its own noise."""
        m = batch_size or self.mirror_batch_size
        layers = self.mirrored(weight_layers)
        for _ in range(batches):
            for layer in layers:
                self.mirror_update(layer, xp, rng, lr, decay, m)

    # -- the closed form -------------------------------------------------------
    @staticmethod
    def predicted_error(fan_in: int, decay: float, samples: float, drift: float = 0.0,
                        pool_steps: int = 1) -> float:
        """``ε = sqrt(F λ / (2 m) + (d / λ)² + (k² - 1) d² / 12)``: relative error of B (angle
        ``atan ε``), for updates pooled over ``k = pool_steps`` steps (``k = 1``: every step)."""
        noise = fan_in * decay / (2.0 * samples) if samples > 0 else math.inf
        lag = (drift / decay) ** 2 if decay > 0 else (0.0 if drift == 0 else math.inf)
        swing = (pool_steps ** 2 - 1) * drift ** 2 / 12.0
        return math.sqrt(noise + lag + swing)

    def pool_steps(self, decay: float) -> int:
        """``k = ⌊1/λ⌋`` within ``[1, max_pool_steps]``: the steps one moment draw pools.

        At ``λ k ≤ 1`` the swing of B's lag between draws adds at most a twelfth
        of the lag term to ``ε²`` (:meth:`predicted_error`).
        """
        if decay <= 0:
            return self.max_pool_steps
        return int(max(1, min(self.max_pool_steps, math.floor(1.0 / decay))))

    def plan(self, fan_in: int, drift: float, max_samples: float | None = None) -> tuple[float, float]:
        """``(λ, m)``: the decay per step and the noise samples per step for a drift ``d``.

        The cheapest plan for ``θ*``: ``m₀ = 1.3 d F / tan³θ*``, ``λ*(m) = (4 d² m / F)^{1/3}``.
        The lag is then held below ``lag_angle``: ``λ ≥ λ_lag = d / tan θ_lag``,
        with the samples that keep the noise term within what is left of the
        target, ``m ≥ F λ / (2 (tan²θ* - tan²θ_lag))``. So

        ``m = clip(max(m₀, F λ_lag / (2 (tan²θ* - tan²θ_lag))), min_samples, max_samples)``,
        ``λ = min(max(λ*(m), λ_lag), MAX_DECAY)``

        (when the samples are capped, the lag bound is kept and the noise
        grows: B's sampling noise slows learning little, its lag destabilises
        it; BENCHMARKS.md §1).
        """
        tau = math.tan(math.radians(self.target_angle))
        m = (0.75 ** 1.5) * 2.0 * drift * fan_in / tau ** 3
        lag_tan = math.tan(math.radians(self.lag_angle)) if self.lag_angle < self.target_angle else math.inf
        lag_decay = min(drift / lag_tan, self.MAX_DECAY)
        if lag_tan < math.inf:
            m = max(m, fan_in * lag_decay / (2.0 * (tau ** 2 - lag_tan ** 2)))
        cap = self.max_samples if max_samples is None else max_samples
        m = float(min(max(m, self.min_samples), cap))
        if m <= 0 or drift <= 0:
            return 0.0, m
        decay = min(max((4.0 * drift * drift * m / fan_in) ** (1.0 / 3.0), lag_decay), self.MAX_DECAY)
        return decay, m

    # -- per-layer state of the adaptive mirror ------------------------------------
    #: ``layer.buffers["mirror"]``: drift average d̄, plans made, Σ‖ΔW‖² and
    #: steps since the last plan, planned λ and samples per step, pooled
    #: samples not yet drawn (checkpointed with the network)
    _D, _PLANS, _SQ, _N, _DECAY, _SAMPLES, _CREDIT = range(7)

    def _state(self, layer, xp):
        buffers = getattr(layer, "buffers", None)
        if buffers is None:
            buffers = layer.buffers = {}
        st = buffers.get("mirror")
        if st is None:
            st = buffers["mirror"] = xp.zeros(7, dtype=xp.float64)
        return st

    @staticmethod
    def _fan_in(layer) -> int:
        return int(math.prod(layer.W.shape[1:]))

    @staticmethod
    def _samples_per_input(layer) -> int:
        """Hebbian samples per noise input: 1, or a convolution's output positions."""
        per = getattr(layer, "mirror_samples_per_input", None)
        return int(per()) if per is not None else 1

    def prepare_layer(self, layer, xp) -> None:
        if self.adaptive:
            self._state(layer, xp)

    def after_weight_update(self, layer, step, shrink: float, xp, lr: float = 0.0,
                            progress: Progress | None = None) -> None:
        if not self.adaptive or not (self.mirror_input_layer or getattr(layer, "needs_input_grad", True)):
            return
        st = self._state(layer, xp)
        st[self._SQ] += xp.vdot(step.reshape(-1), step.reshape(-1))  # stays on the device
        st[self._N] += 1

    def _drift(self, layer, xp) -> float:
        """Fold the steps since the last plan into the layer's drift average ``d̄``; return it."""
        st = self._state(layer, xp)
        values = [float(v) for v in (st.get() if hasattr(st, "get") else st)]  # one read-back
        n, d = values[self._N], values[self._D]
        if n > 0:
            w_norm = float(xp.linalg.norm(layer.W))
            d_now = math.sqrt(values[self._SQ] / n) / w_norm if w_norm > 0 else 0.0
            beta = 1.0 - 0.5 ** (n / self.drift_halflife)
            d = d_now if values[self._PLANS] == 0 else (1 - beta) * d + beta * d_now
            st[self._D] = d
        st[self._SQ] = 0.0
        st[self._N] = 0
        return d

    @staticmethod
    def _work(layer) -> tuple[float, float]:
        """Multiply-adds of ``(one noise sample, one training example)`` for a layer.

        A noise input costs its response and the Hebbian product (two of the
        layer's products) and its random numbers (each about as much work as
        :data:`RANDOM_WORK` multiply-adds); a training example costs three
        products (forward, backward, weight gradient). A convolution's noise
        image gives ``positions`` samples.
        """
        positions = WeightMirror._samples_per_input(layer)
        products = positions * math.prod(layer.W.shape)
        per_input = 2 * products + WeightMirror.RANDOM_WORK * math.prod(layer.mirror_input_shape)
        return per_input / positions, 3.0 * products

    @staticmethod
    def moment_work(layer) -> float:
        """Multiply-adds of one moment draw (:meth:`moments_estimate`), whatever its samples:
        the product ``W (I + E)`` (``F² C``) and ``F²`` random numbers."""
        fan_in = WeightMirror._fan_in(layer)
        return float(fan_in) * fan_in * (layer.W.shape[0] + WeightMirror.RANDOM_WORK)

    @property
    def _may_draw_moments(self) -> bool:
        """Moment draws are allowed: not ``estimator = "samples"``, and the linear response."""
        return self.estimator != "samples" and self.response == "linear"

    def _uses_moments(self, layer, samples: float) -> bool:
        """Whether one update of ``samples`` samples is drawn from its moments (``estimator``)."""
        if not self._may_draw_moments:
            return False
        return self.estimator == "moments" or self.moment_work(layer) < samples * self._work(layer)[0]

    def _schedule(self, layer, drift: float, max_samples: float | None = None,
                  pool: int | None = None) -> tuple[float, float, int, bool]:
        """``(λ, m, k, moments)`` for one layer: the plan per step, the steps one update
        pools, and whether updates are moment draws (the cheaper way per step, under ``auto``;
        ``pool``: draws pooled over that many steps, whatever they cost)."""
        decay, m = self.plan(self._fan_in(layer), drift, max_samples)
        if not self._may_draw_moments:
            return decay, m, 1, False
        k = self.pool_steps(decay) if pool is None else pool
        if pool is None and self.estimator == "auto" and self.moment_work(layer) / k >= m * self._work(layer)[0]:
            return decay, m, 1, False
        pooled = self.pooled_decay(decay, k)
        # the faster decay with proportionally more samples: the same noise term F λ/(2m)
        return pooled, m * pooled / decay if decay > 0 else m, k, True

    @staticmethod
    def pooled_lag(decay: float, pool_steps: int) -> float:
        """B's lag behind a W that moves by ``d`` per step, in units of ``d``, averaged over the
        ``k`` steps between draws pooled at decay ``λ`` per step (each draw ``1 - (1-λ)^k``, from the
        current W): ``L + (k - 1)/2`` with ``L = k (1 - λ_k)/λ_k``; ``(1 - λ)/λ`` at ``k = 1``."""
        k = pool_steps
        lam_k = 1.0 - (1.0 - decay) ** k
        return k * (1.0 - lam_k) / lam_k + (k - 1) / 2.0

    @classmethod
    def pooled_decay(cls, decay: float, pool_steps: int) -> float:
        """``λ'`` per step for draws pooled over ``k`` steps whose mean lag is the plan's,
        ``pooled_lag(λ', k) = (1 - λ)/λ`` (bisection; the pooled lag falls with ``λ'``). Without it,
        pooling at ``k = ⌊1/λ⌋`` lags 9–17 % more than drawing every step."""
        if pool_steps <= 1 or decay <= 0:
            return decay
        target = (1.0 - decay) / decay
        low, high = decay, 1.0 - 1e-12
        if cls.pooled_lag(high, pool_steps) >= target:  # cannot be met (k too long): the fastest
            return high
        for _ in range(60):
            mid = 0.5 * (low + high)
            if cls.pooled_lag(mid, pool_steps) > target:
                low = mid
            else:
                high = mid
        return high

    def _step_work(self, layer, schedule) -> float:
        """The mirror's multiply-adds per training step for a layer's schedule."""
        _, m, k, moments = schedule
        return self.moment_work(layer) / k if moments else m * self._work(layer)[0]

    def _replan(self, weight_layers, mirrored, xp, progress: Progress | None) -> None:
        """A new plan ``(λ, m)`` for every mirrored layer from its drift, within the cost budget."""
        drifts = [self._drift(layer, xp) for layer in mirrored]
        schedules = [self._schedule(layer, d) for layer, d in zip(mirrored, drifts)]
        batch = progress.samples_per_step if progress is not None else 0
        if batch and self.max_cost > 0:
            budget = self.max_cost * batch * sum(self._work(l)[1] for l in weight_layers)
            spent = sum(self._step_work(l, s) for l, s in zip(mirrored, schedules))
            if spent > budget:
                # every layer's work scaled down alike: a sampled layer's samples (each at its
                # best decay), a drawn layer's draws (pooled over more steps)
                scale = budget / spent
                schedules = [self._schedule(l, d, pool=math.ceil(s[2] / scale)) if s[3]
                             else (*self.plan(self._fan_in(l), d, s[1] * scale), 1, False)
                             for l, d, s in zip(mirrored, drifts, schedules)]
        for layer, (decay, samples, pool, moments) in zip(mirrored, schedules):
            st = self._state(layer, xp)
            st[self._DECAY], st[self._SAMPLES] = decay, samples
            st[self._PLANS] += 1
            layer._mirror_draw = (pool, moments)

    def after_step(self, weight_layers, xp, rng, progress: Progress | None = None) -> None:
        if not self.adaptive:
            batches = int(self.mirror_batches)
            frac = self.mirror_batches - batches
            if frac and float(rng.random()) < frac:
                batches += 1
            if batches:
                self.mirror_phase(weight_layers, xp, rng, batches, self.lr, self.decay)
            return
        mirrored = self.mirrored(weight_layers)
        if not mirrored:
            return
        first = mirrored[0]
        count = getattr(first, "_mirror_steps", 0) if progress is None else progress.step
        first._mirror_steps = count + 1
        if count % self.plan_every == 0:
            self._replan(weight_layers, mirrored, xp, progress)
        for layer in mirrored:
            st = self._state(layer, xp)
            plan = getattr(layer, "_mirror_plan", None)
            if plan is None or count % self.plan_every == 0:
                values = st.get() if hasattr(st, "get") else st
                plan = layer._mirror_plan = (float(values[self._DECAY]), float(values[self._SAMPLES]),
                                             float(values[self._CREDIT]))
                if getattr(layer, "_mirror_draw", None) is None:
                    # resumed from a checkpoint between two plans: the choice the plan made
                    # from the saved drift (without a cost budget, which only binds at a plan)
                    layer._mirror_draw = self._schedule(layer, float(values[self._D]))[2:]
            decay, samples, credit = plan
            if decay <= 0 or samples <= 0:
                continue
            pool, moments = layer._mirror_draw
            credit += samples
            per_input = self._samples_per_input(layer)
            # a moment draw pools its k steps; explicit noise pools until a batch of
            # min_batch (or one noise image) is due; both at the decay of those steps
            due = credit >= pool * samples * (1.0 - 1e-9) if moments else credit >= max(self.min_batch, per_input)
            if not due:
                layer._mirror_plan = (decay, samples, credit)
                st[self._CREDIT] = credit
                continue
            steps = credit / samples
            lam = 1.0 - (1.0 - decay) ** steps
            if moments:
                self.mirror_update(layer, xp, rng, lam / self.sigma ** 2, lam, 0, moments=credit)
                credit = 0.0
            else:
                inputs = max(1, int(credit // per_input))
                self.mirror_update(layer, xp, rng, lam / self.sigma ** 2, lam, inputs)
                credit = max(credit - inputs * per_input, 0.0)
            layer._mirror_plan = (decay, samples, credit)
            st[self._CREDIT] = credit

    def initial_phase(self, weight_layers, xp, rng) -> None:
        if not self.adaptive:
            if self.initial_mirror_steps == 0:
                return
            # Same fixed point as the running phase (η_B/λ_B kept), faster relaxation.
            ratio = self.lr / self.decay if self.decay > 0 else self.lr / max(self.initial_decay, 1e-12)
            self.mirror_phase(weight_layers, xp, rng, self.initial_mirror_steps,
                              ratio * self.initial_decay, self.initial_decay, self.initial_mirror_batch_size)
            return
        tan0 = math.tan(math.radians(self.initial_angle))
        for layer in self.mirrored(weight_layers):
            # the running mean of the estimate over N₀ = F / tan²θ₀ samples
            samples = self._fan_in(layer) / tan0 ** 2
            if self._uses_moments(layer, samples):
                # B ← W (I + E): the mean of N₀ samples, drawn at once
                self.mirror_update(layer, xp, rng, 1.0 / self.sigma ** 2, 1.0, 0, moments=samples)
                self._state(layer, xp)
                continue
            per_input = self._samples_per_input(layer)
            needed = math.ceil(samples / per_input)
            done = 0
            while done < needed:
                b = min(self.initial_mirror_batch_size, needed - done)
                w = b / (done + b)
                self.mirror_update(layer, xp, rng, w / self.sigma ** 2, w, b)
                done += b
            self._state(layer, xp)


@dataclass(frozen=True)
class KolenPollack(LearningRule):
    """Kolen-Pollack, as modified by Akrout et al. (2019, §5).

    W and B change by the same local product, transposed, and the same decay:

    ``ΔW = -η δ yᵀ - λ W``,   ``ΔB = -η y δᵀ - λ B``.

    So ``W - Bᵀ`` shrinks by ``(1 - λ)`` every step, whatever the data, and B
    converges to Wᵀ with no transport: each feedback synapse sees only its own
    input and the teaching signal of its cell. Here the local product reaches
    B through the same momentum trace as W (a synapse's trace of its own
    product is the same number). The decay applied to W and B alike is the
    optimiser's (decoupled) weight decay ``λ_wd``, this rule's own decay
    ``λ_kp`` and an optional constant ``decay`` λ_c per step (circuit mode's
    per-presentation decay):

    ``W - Bᵀ ← (1 - η_t λ_wd)(1 - η_t λ_kp,t)(1 - λ_c) (W - Bᵀ)``.

    **The own decay is scheduled by the amount of learning**: it acts during
    the first ``decay_fraction`` of the run's learning-rate mass ``Σ_t η_t``,
    at the rate per unit learning rate that totals ``Σ_t η_t λ_kp,t =
    decay_total`` (:func:`own_decay_factor`). So ``W - Bᵀ`` is cut to
    ``e^{-decay_total}`` of its start in every run, whether it has 240 steps
    (digits) or 14,000 (Fashion-MNIST), and whatever the learning rate; the
    decay that aligns B also shrinks W, and confined to the start of training
    it wipes out the random initial difference while W is still mostly
    random, leaving W free to grow with learning afterwards. Biologically: a
    developmental period of synaptic decay of the whole pathway, whose
    length is set by how much learning has happened (one broadcast signal).

    Parameters
    ----------
    decay_total : ``Σ_t η_t λ_kp,t`` over the decay period (dimensionless;
        ``W - Bᵀ`` shrinks to ``e^{-decay_total}``, times the optimiser's decay).
    decay_fraction : the fraction of the run's learning-rate mass over which
        the own decay acts.
    decay : λ_c, a decay per step that does not follow the learning rate
        (circuit mode).
    feedback_init : ``"zero"`` (the feedback synapses start silent: no error
        reaches the hidden layers until B has grown from the shared local
        products, and ``W - Bᵀ = W₀``) or ``"random"`` (B₀ drawn like FA's).
    """

    name: ClassVar[str] = "kp"
    long_name: ClassVar[str] = "kolen_pollack"
    label: ClassVar[str] = "KP"
    display_name: ClassVar[str] = "Kolen-Pollack"
    decay_total: float = 4.0
    decay_fraction: float = 0.25
    decay: float = 0.0
    feedback_init: str = "random"
    initial_angle: float = 3.0

    FEEDBACK_INITS: ClassVar[tuple[str, ...]] = ("random", "zero", "mirror")

    def __post_init__(self):
        what = f"rule {self.name}: "
        checks.choice(self.feedback_init, self.FEEDBACK_INITS, what + "feedback_init", RuleError)
        checks.number(self.decay_total, what + "decay_total", RuleError, low=0)
        checks.number(self.decay_fraction, what + "decay_fraction", RuleError, low=0, high=1, low_open=True)
        checks.number(self.decay, what + "decay", RuleError, low=0, high=1, high_open=True)
        checks.number(self.initial_angle, what + "initial_angle", RuleError, low=0, high=45, low_open=True)

    def init_feedback(self, W, xp, rng):
        """Silent feedback synapses (``zero``; ``mirror`` starts silent too, then
        :meth:`initial_phase` calibrates them), or random like FA's (``random``)."""
        if self.feedback_init in ("zero", "mirror"):
            return xp.zeros_like(W)
        return super().init_feedback(W, xp, rng)

    def initial_phase(self, weight_layers, xp, rng) -> None:
        """``feedback_init = "mirror"``: before learning, the feedback synapses are
        calibrated by a mirror phase (the weight mirror's initial phase, to
        ``initial_angle``: spontaneous developmental activity, before any
        task); Kolen-Pollack then keeps ``W - Bᵀ`` at that small start."""
        if self.feedback_init == "mirror":
            WeightMirror(noise="uniform", initial_angle=self.initial_angle).initial_phase(weight_layers, xp, rng)

    def weight_decay_factor(self, lr: float, progress: Progress | None = None) -> float:
        """``(1 - η_t λ_kp,t)(1 - λ_c)``: the rule's own shrink of W and B this step.

        The optimiser folds it into W's update (no extra pass over W) and
        hands B the same ``shrink`` and ``step``.
        """
        return own_decay_factor(lr, progress, self.decay_total, self.decay_fraction) * (1.0 - self.decay)

    def after_weight_update(self, layer, step, shrink: float, xp, lr: float = 0.0,
                            progress: Progress | None = None) -> None:
        # ``shrink`` and ``step`` already include weight_decay_factor: B gets
        # exactly W's update, so W - Bᵀ ← shrink · (W - Bᵀ).
        B = layer.B
        if shrink != 1.0:
            B *= xp.float32(shrink)
        B += step


#: config/CLI value -> (class, fixed parameters). The sign-symmetry variants
#: are one class with a magnitude parameter.
RULES: dict[str, tuple[type[LearningRule], dict[str, Any]]] = {
    "bp": (Backprop, {}),
    "fa": (FeedbackAlignment, {}),
    "ss": (SignSymmetry, {}),
    "usf": (SignSymmetry, {"magnitude": "uniform"}),
    "brsf": (SignSymmetry, {"magnitude": "batch_random"}),
    "frsf": (SignSymmetry, {"magnitude": "fixed_random"}),
    "wm": (WeightMirror, {}),
    "kp": (KolenPollack, {}),
}
RULE_NAMES: tuple[str, ...] = tuple(RULES)


def rule_parameter_names(name: str) -> tuple[str, ...]:
    """The parameters a config may set for rule ``name``."""
    cls, fixed = RULES[name]
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in fixed)


def make_rule(name: str, **params) -> LearningRule:
    """Build a rule from its config/CLI name and parameters, on top of the **class defaults**.

    The class defaults are not all the defaults of a training run: ``weightmirror train``
    (and ``weightmirror.train``) add ``sims.config.RULE_TRAINING_DEFAULTS`` (today WM's uniform
    noise; KP's mirror-calibrated start without its own decay, ``feedback_init = "mirror"``,
    ``decay_total = 0``), and circuit mode its own (``circuits.spec.CIRCUIT_RULE_REGISTRY``). For the
    rule a training config would use, build it with ``TrainConfig.make_rule()``
    (``weightmirror.sims.config.resolve({"rule": "kp"}).make_rule()``).

    Raises ``RuleError`` naming the allowed rules or parameters.
    """
    if name not in RULES:
        raise RuleError(f"unknown rule {name!r}; allowed: {', '.join(RULE_NAMES)}")
    cls, fixed = RULES[name]
    allowed = rule_parameter_names(name)
    for key in params:
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else "none"
            raise RuleError(f"rule {name}: unknown parameter {key!r}; allowed: {listed}")
    try:
        return cls(**fixed, **params)
    except TypeError as exc:  # wrong type that dataclass could not take
        raise RuleError(f"rule {name}: {exc}") from None


def rule_label(name: str) -> str:
    """The short label of rule ``name`` (a config/CLI value) for legends and tables: ``WM``, ``uSF`` ...

    Raises ``RuleError`` for an unknown rule.
    """
    return make_rule(name).label


def rule_display_name(name: str) -> str:
    """Rule ``name`` in words, for titles: ``weight mirror``, ``Kolen-Pollack`` ...

    Raises ``RuleError`` for an unknown rule.
    """
    return make_rule(name).display_name
