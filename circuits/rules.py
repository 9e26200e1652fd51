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

    # -- feedback path ----------------------------------------------------
    def feedback(self, layer, xp, rng=None):
        """The array the feedback path multiplies errors by (W's layout).

        A derived feedback (sign symmetry) lives in a per-layer buffer that the
        next call overwrites: use it at once or copy it.
        """
        return layer.B

    # -- plasticity -------------------------------------------------------
    def after_weight_update(self, layer, step, shrink: float, xp, lr: float = 0.0,
                            progress: float | None = None) -> None:
        """Called by the optimiser after ``W ← shrink·W + step`` at learning rate ``lr``
        (``progress``: the fraction of training done, when the trainer says).

        ``step`` is the increment that the local product ``-η δ yᵀ`` (through
        the momentum trace) gave W, ``shrink = 1 - η λ_wd`` the decay. Only
        Kolen-Pollack uses it.
        """

    def weight_decay_factor(self, lr: float, progress: float | None = None) -> float:
        """An extra factor the optimiser folds into W's update, ``W ← k (shrink·W + step)``
        (Kolen-Pollack's own decay; 1 for the other rules)."""
        return 1.0

    def after_step(self, weight_layers, xp, rng) -> None:
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
    ``ξ ~ N(0, σ² I)`` (a batch of ``mirror_batch_size`` samples, drawn
    independently for every layer), the layer responds ``r = φ_m(W ξ)``, and
    every feedback synapse, which sees its presynaptic ``δ_{l+1} ← r`` and
    postsynaptic ``δ_l ← ξ`` through the one-to-one links, changes by their
    Hebbian product with decay:

    ``ΔB = η_B · (1/m) Σ_n ξ_n r_nᵀ  -  λ_B B``

    Since ``E[ξ ξᵀ] = σ² I``, for ``φ_m`` the identity ``E[ΔB] = η_B σ² Wᵀ -
    λ_B B`` and B relaxes toward ``(η_B σ² / λ_B) Wᵀ`` (for a nonlinear
    ``φ_m``, Stein's lemma gives ``Wᵀ`` times the mean slope of each unit).

    Parameters
    ----------
    sigma : noise standard deviation σ.
    lr : Hebbian rate η_B.
    decay : λ_B, the decay per mirror batch; ``lr = decay / sigma²`` makes the
        fixed point ``B = Wᵀ`` (an exponential average of the Hebbian estimate).
    normalize : ``"none"`` or ``"match_w"``; ``match_w`` rescales B after each
        mirror batch to the Frobenius norm of W (norm control, no decay needed).
    mirror_batch_size : noise samples per mirror batch.
    mirror_batches : mirror batches after every training step, on average: the
        whole part every step, plus one more with probability equal to the
        fractional part (0.25: one mirror batch at a random quarter of the
        steps). Fewer, larger mirror batches cost less than many small ones
        with the same number of noise samples: each batch rewrites B once.
    initial_mirror_steps : mirror batches before training starts.
    initial_mirror_batch_size : noise samples per batch in the initial phase.
    initial_decay : λ_B (and ``η_B = λ_B/σ²·lr/decay``) during the initial
        phase: faster, so that B starts aligned.
    response : ``"linear"`` (``r = W ξ``) or ``"layer"`` (``r = φ(W ξ + b)``
        with the layer's own nonlinearity).
    noise : ``"gaussian"`` or ``"uniform"`` (on ``[-√3σ, √3σ]``); both have
        zero mean and variance σ², so the linear-response expectation is the
        same; Stein's lemma for a nonlinear response needs the Gaussian.
    """

    name: ClassVar[str] = "wm"
    long_name: ClassVar[str] = "weight_mirror"
    label: ClassVar[str] = "WM"
    display_name: ClassVar[str] = "weight mirror"
    sigma: float = 1.0
    lr: float = 0.001
    decay: float = 0.001
    normalize: str = "none"
    mirror_batch_size: int = 32
    mirror_batches: float = 1.0
    initial_mirror_steps: int = 300
    initial_mirror_batch_size: int = 256
    initial_decay: float = 0.01
    response: str = "linear"
    noise: str = "gaussian"

    NOISES: ClassVar[tuple[str, ...]] = ("gaussian", "uniform")
    NORMALIZE: ClassVar[tuple[str, ...]] = ("none", "match_w")
    RESPONSES: ClassVar[tuple[str, ...]] = ("linear", "layer")

    def __post_init__(self):
        def what(key):
            return f"rule {self.name}: {key}"

        number, integer, choice = checks.number, checks.integer, checks.choice
        number(self.sigma, what("sigma"), RuleError, low=0, low_open=True)
        number(self.lr, what("lr"), RuleError, low=0)
        number(self.decay, what("decay"), RuleError, low=0, high=1, high_open=True)
        number(self.initial_decay, what("initial_decay"), RuleError, low=0, high=1, high_open=True)
        choice(self.normalize, self.NORMALIZE, what("normalize"), RuleError)
        choice(self.response, self.RESPONSES, what("response"), RuleError)
        choice(self.noise, self.NOISES, what("noise"), RuleError)
        integer(self.mirror_batch_size, what("mirror_batch_size"), RuleError, low=1)
        number(self.mirror_batches, what("mirror_batches"), RuleError, low=0)
        integer(self.initial_mirror_batch_size, what("initial_mirror_batch_size"), RuleError, low=1)
        integer(self.initial_mirror_steps, what("initial_mirror_steps"), RuleError, low=0)
        if not (self.decay > 0 or self.normalize != "none" or self.lr == 0):
            raise RuleError(f"rule {self.name}: with normalize = 'none' a decay > 0 is needed to keep B bounded")

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

    def mirror_update(self, layer, xp, rng, lr: float, decay: float, batch_size: int) -> None:
        """``B ← (1-λ_B) B + η_B H`` (then norm control), in place on layer.B."""
        H = self.hebbian_estimate(layer, xp, rng, batch_size, scale=lr)
        B = layer.B
        if decay:
            B *= xp.float32(1.0 - decay)
        B += H
        if self.normalize == "match_w":
            nb = float(xp.linalg.norm(B))
            if nb > 0:
                B *= xp.float32(float(xp.linalg.norm(layer.W)) / nb)

    def mirror_phase(self, weight_layers, xp, rng, batches: int, lr: float, decay: float,
                     batch_size: int | None = None) -> None:
        """``batches`` mirror batches; each layer draws its own noise."""
        m = batch_size or self.mirror_batch_size
        for _ in range(batches):
            for layer in weight_layers:
                self.mirror_update(layer, xp, rng, lr, decay, m)

    def after_step(self, weight_layers, xp, rng) -> None:
        batches = int(self.mirror_batches)
        frac = self.mirror_batches - batches
        if frac and float(rng.random()) < frac:
            batches += 1
        if batches:
            self.mirror_phase(weight_layers, xp, rng, batches, self.lr, self.decay)

    def initial_phase(self, weight_layers, xp, rng) -> None:
        if self.initial_mirror_steps == 0:
            return
        # Same fixed point as the running phase (η_B/λ_B kept), faster relaxation.
        ratio = self.lr / self.decay if self.decay > 0 else self.lr / max(self.initial_decay, 1e-12)
        self.mirror_phase(weight_layers, xp, rng, self.initial_mirror_steps,
                          ratio * self.initial_decay, self.initial_decay, self.initial_mirror_batch_size)


@dataclass(frozen=True)
class KolenPollack(LearningRule):
    """Kolen-Pollack, as modified by Akrout et al. (2019, §5).

    W and B change by the same local product, transposed, and the same decay:

    ``ΔW = -η δ yᵀ - λ W``,   ``ΔB = -η y δᵀ - λ B``.

    So ``W - Bᵀ`` shrinks by ``(1 - λ)`` every step, whatever the data, and B
    converges to Wᵀ with no transport: each feedback synapse sees only its own
    input and the teaching signal of its cell. Here the local product reaches
    B through the same momentum trace as W (a synapse's trace of its own
    product is the same number). The decay is a weight decay that follows the
    learning rate ``η_t``: the optimiser's (decoupled) ``λ_wd`` and this
    rule's own ``weight_decay`` ``λ_kp``, applied to W and B alike, and an
    optional constant ``decay`` λ_c per step (circuit mode's per-presentation
    decay), so per step

    ``W - Bᵀ ← (1 - η_t λ_wd)(1 - η_t λ_kp)(1 - λ_c) (W - Bᵀ)``.

    Parameters
    ----------
    weight_decay : λ_kp, the rule's own decay coefficient (per unit learning
        rate), on top of the optimiser's weight decay. Alignment needs
        ``Σ_t η_t (λ_wd + λ_kp)`` of a few units over the run.
    decay : λ_c, a decay per step that does not follow the learning rate.
    feedback_init : ``"random"`` (B₀ drawn like FA's) or ``"zero"`` (the
        feedback synapses start silent: no error reaches the hidden layers
        until B has grown from the shared local products; on Fashion-MNIST
        this trains better than a random start, whose FA-like early signals
        the decay must then erase).
    decay_until : fraction of training after which the rule's own decay
        (λ_kp and λ_c) stops. The decay that aligns B also shrinks W; confined
        to the start of training it wipes out the random initial difference
        ``W₀ - B₀ᵀ`` while W is still mostly random, and leaves W free to grow
        with learning afterwards.
    """

    name: ClassVar[str] = "kp"
    long_name: ClassVar[str] = "kolen_pollack"
    label: ClassVar[str] = "KP"
    display_name: ClassVar[str] = "Kolen-Pollack"
    weight_decay: float = 0.0
    decay: float = 0.0
    decay_until: float = 1.0
    feedback_init: str = "random"

    FEEDBACK_INITS: ClassVar[tuple[str, ...]] = ("random", "zero")

    def __post_init__(self):
        what = f"rule {self.name}: "
        checks.choice(self.feedback_init, self.FEEDBACK_INITS, what + "feedback_init", RuleError)
        checks.number(self.weight_decay, what + "weight_decay", RuleError, low=0)
        checks.number(self.decay, what + "decay", RuleError, low=0, high=1, high_open=True)
        checks.number(self.decay_until, what + "decay_until", RuleError, low=0, high=1, low_open=True)

    def init_feedback(self, W, xp, rng):
        """Random like FA's (``random``), or silent feedback synapses (``zero``)."""
        if self.feedback_init == "zero":
            return xp.zeros_like(W)
        return super().init_feedback(W, xp, rng)

    def weight_decay_factor(self, lr: float, progress: float | None = None) -> float:
        """``(1 - η_t λ_kp)(1 - λ_c)``: the rule's own shrink of W and B this step.

        ``progress`` is the fraction of training done; past ``decay_until``
        the rule's own decay stops (W - Bᵀ then stays where the decay took it,
        while W is free to grow back with learning). The optimiser folds it
        into W's update (no extra pass over W) and hands B the same ``shrink``
        and ``step``.
        """
        if progress is not None and progress >= self.decay_until:
            return 1.0
        return (1.0 - lr * self.weight_decay) * (1.0 - self.decay)

    def after_weight_update(self, layer, step, shrink: float, xp, lr: float = 0.0,
                            progress: float | None = None) -> None:
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
    """Build a rule from its config/CLI name and parameters.

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
