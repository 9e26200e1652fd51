"""The circuit, declared once: frozen, validated dataclasses.

A :class:`CircuitSpec` says everything circuit mode needs to build a network
of explicit neuron populations (``circuits.brian`` builds it in Brian2):

- ``layers``: population sizes ``[n_0, n_1, ..., n_L]``; layer ``l`` has a
  forward population ``y_l`` and a feedback population ``δ_l``, and weight
  layer ``l`` (``1..L``) has forward synapses ``W_l`` (``y_{l-1} → y_l``) and
  feedback synapses ``B_l`` (``δ_l → δ_{l-1}``), stored in W's layout as in
  :mod:`circuits.rules`;
- ``neuron``: :class:`NeuronModel` (rate neurons with a time constant, or a
  Poisson spiking variant whose synapses and Hebbian terms read
  exponentially filtered spike trains);
- ``noise``: :class:`Noise` (amplitude σ and correlation time of each
  layer's own noise source in mirror mode);
- ``phases``: :class:`Phases` (engaged, mirror or alternating, durations);
- ``rule``: a rule object of :mod:`circuits.rules` (``WeightMirror``,
  ``KolenPollack`` or ``FeedbackAlignment``) and its parameters; what
  circuit mode needs to know about each rule is its :class:`CircuitRule` in
  :data:`CIRCUIT_RULE_REGISTRY` (see :func:`register_circuit_rule`);
- ``dt``, ``plasticity_dt``, ``device``, ``threads``, ``seed``.

All times are plain floats in **seconds** (the Brian2 build attaches units),
so the declaration imports neither Brian2 nor an array module.

Mapping of the rate-mode rule parameters to simulated time
-----------------------------------------------------------
The rate-mode weight mirror takes mirror batches of ``m =
rule.mirror_batch_size`` noise samples and does ``B ← (1-λ_B) B + η_B H``
per batch. In the circuit a noise sample lasts one noise correlation time
``τ_ξ`` (each layer's noise is redrawn every ``τ_ξ``), so

- number of noise samples = simulated plastic time / ``τ_ξ``;
- one mirror batch = ``T_b = m · τ_ξ`` of simulated time;
- Hebbian rate per second ``η_B' = η_B / T_b`` (so ``η_B' · T_b`` is the
  rate-mode ``lr`` per mirror batch; the build divides it further by the
  zero-lag correlation gain of the neuron filters, see ``circuits.brian``),
  decay per second ``λ_B' = -ln(1-λ_B) / T_b``.

In engaged mode every input is shown for ``phases.presentation`` seconds;
the first half settles, the second half learns, with rate per second
``engaged_lr / (presentation/2)``: one presentation is one online SGD step of
size ``engaged_lr``. Kolen-Pollack's ``decay`` is per presentation.
"""
from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checks import choice, from_table, integer, number, string
from ..errors import InputError

from .rules import (
    FeedbackAlignment,
    KolenPollack,
    LearningRule,
    RuleError,
    WeightMirror,
    make_rule,
)

__all__ = [
    "SpecError",
    "DEVICES",
    "NEURON_KINDS",
    "ACTIVATIONS",
    "SCHEDULES",
    "NOISE_DISTRIBUTIONS",
    "CIRCUIT_RULES",
    "CIRCUIT_RULE_REGISTRY",
    "CircuitRule",
    "Mirror",
    "ModeMapping",
    "register_circuit_rule",
    "circuit_rule",
    "circuit_rule_of",
    "NeuronModel",
    "Noise",
    "Phases",
    "CircuitSpec",
    "parse_duration",
    "parse_voltage",
    "SPIKING_KINDS",
    "MIRROR_PLASTICITY",
]


class SpecError(InputError):
    """A circuit declaration is invalid; the message names the field."""


#: --device values: runtime (NumPy target), cython (runtime, Cython target),
#: cpp (cpp_standalone), cuda (cuda_standalone through brian2cuda).
DEVICES = ("runtime", "cython", "cpp", "cuda")
NEURON_KINDS = ("rate", "spiking", "lif")
#: neuron kinds that fire spikes (their synapses and Hebbian terms read filtered spike trains)
SPIKING_KINDS = ("spiking", "lif")
SPIKE_MODELS = ("poisson",)
ACTIVATIONS = ("relu", "linear")
SCHEDULES = ("mirror", "engaged", "alternate")
#: how the mirror's feedback synapses learn: ``sample`` (one Hebbian product of the decoded activities per
#: noise sample, at the end of its hold) or ``stdp`` (spike-timing: a pair-based trace rule, spiking units)
MIRROR_PLASTICITY = ("sample", "stdp")
#: where the mirror's noise samples come from: Brian2's generator, or NumPy arrays played in (shared with rate mode)
NOISE_SOURCES = ("brian", "arrays")
#: noise distributions of the mirror-mode sources (zero mean, variance σ²).
NOISE_DISTRIBUTIONS = ("gaussian", "uniform")

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}


def _parse_quantity(value: Any, what: str, units: dict[str, float], kind: str, examples: str) -> float:
    """A plain number, or a string with one of ``units`` (scaled to the base unit)."""
    if isinstance(value, bool):
        raise SpecError(f"{what}: expected a {kind}, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        for unit in sorted(units, key=len, reverse=True):
            if text.endswith(unit):
                try:
                    return float(text[: -len(unit)].strip()) * units[unit]
                except ValueError:
                    break
        else:
            try:
                return float(text)
            except ValueError:
                pass
    raise SpecError(f"{what}: cannot read {value!r} as a {kind} (examples: {examples})")


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds from ``2``, ``2.5``, ``"2s"``, ``"500ms"``, ``"1min"``."""
    return _parse_quantity(value, what, _UNITS, "duration", "2s, 500ms, 0.25")


#: per neuron kind that fires spikes: (baseline rate ν₀ in Hz, gain G in Hz per unit, largest rate in Hz)
#: when the declaration leaves them out. Poisson units keep 0.2.0's values; LIF neurons fire
#: around 20 Hz (cortical pyramidal cells fire at a few to a few tens of Hz) and their largest
#: rate is set by the refractory period.
_RATE_DEFAULTS = {"rate": (200.0, 100.0, 1000.0), "spiking": (200.0, 100.0, 1000.0), "lif": (20.0, 10.0, None)}


_VOLT_UNITS = {"v": 1.0, "mv": 1e-3, "uv": 1e-6}


def parse_voltage(value: Any, what: str = "voltage") -> float:
    """Volts from ``-0.07``, ``"-70mV"``, ``"5 mV"``, ``"0.005V"``."""
    return _parse_quantity(value, what, _VOLT_UNITS, "voltage", "-70mV, 5mV, -0.07")


@dataclass(frozen=True)
class NeuronModel:
    """How every population's units behave.

    ``kind = "rate"``: ``τ dv/dt = -v + I``, output ``y = φ(v)`` (φ = ReLU or
    identity in hidden layers during engaged mode; identity in mirror mode
    and for the input and output populations).

    ``kind = "spiking"`` (``spike_model = "poisson"``): the same ``v``, and
    the unit fires Poisson spikes at ``ν = clip(ν₀ + g·y, 0, ν_max)``; its
    synapses and Hebbian terms read the exponentially filtered spike train
    ``a`` (``τ_a da/dt = -a``, ``a += 1/τ_a`` per spike) decoded as
    ``(a - ν₀)/g``.

    ``kind = "lif"``: leaky integrate-and-fire neurons (``circuits.lif``)::

        τ_m dV/dt = V_rest + μ₀ + k·y - V + σ_V √(2τ_m) ξ(t),   V > θ: spike, V ← V_reset,
                    held for τ_ref

    with ``y`` as above (``v`` for feedback units) and ``μ₀``, ``k`` solved
    from the neuron's f–I curve (the Siegert formula) so that it fires
    ``ν ≈ ν₀ + g·y`` (``circuits.lif.calibrate``); ``σ_V`` is the membrane's
    background fluctuation, which makes firing irregular and the f–I curve
    smooth. Its spikes reach the next population through **current-based
    exponential synapses**: each spike of presynaptic neuron ``i`` adds
    ``w_ij/(g τ_syn)`` to the postsynaptic current ``I`` (``τ_syn dI/dt = -I``),
    so ``I`` averages ``Σ_i w_ij ν_i / g``; the part carried by the baseline,
    ``Σ_i w_ij ν₀/g``, is taken away by a matched bias (as balancing
    inhibition holds a cortical cell at its operating point), leaving
    ``Σ_i w_ij y_i`` on average. ``I`` drives the unit's ``v``; Hebbian terms
    and the one-to-one links between a unit's forward and feedback partners
    read the decoded filtered spike train, as for Poisson units.

    Parameters
    ----------
    kind : ``"rate"``, ``"spiking"`` (Poisson) or ``"lif"``.
    tau : time constant τ of ``v`` in seconds (the rate unit; the dendritic
        integration of a spiking unit).
    activation : hidden-layer nonlinearity in engaged mode (``relu``/``linear``).
    spike_model : ``"poisson"``.
    baseline_rate : ν₀ in Hz (spiking; default 200 for Poisson, 20 for LIF).
    gain : g in Hz per unit of activity (default 100 for Poisson, 10 for LIF).
    max_rate : ν_max in Hz (Poisson, default 1000); for LIF ``1/τ_ref``,
        which it must equal if given.
    tau_trace : τ_a of the spike-train filter in seconds (spiking).
    tau_m : LIF membrane time constant (s; 20 ms).
    v_rest, v_threshold, v_reset : LIF resting potential, threshold, reset
        (V; −70, −50, −60 mV).
    refractory : LIF absolute refractory period τ_ref (s; 2 ms).
    v_noise : LIF membrane fluctuation σ_V (V; 5 mV).
    tau_syn : LIF synaptic current time constant (s; 5 ms, as AMPA/GABA_A
        currents decay).
    delay_forward, delay_feedback : LIF axonal + synaptic delay of the
        forward synapses W and of the feedback synapses B (s; 0, a whole
        multiple of dt). A spike of the presynaptic neuron reaches the
        postsynaptic current this long after it was fired; the one-to-one
        links between a unit's forward and feedback partners have none. The
        mirror's gain κ counts the forward delay, and engaged mode needs a
        presentation whose settling half outlasts the delays of a whole
        round trip (checked).
    """

    kind: str = "rate"
    tau: float = 1e-3
    activation: str = "relu"
    spike_model: str = "poisson"
    baseline_rate: float | None = None
    gain: float | None = None
    max_rate: float | None = None
    tau_trace: float = 10e-3
    tau_m: float = 20e-3
    v_rest: float = -70e-3
    v_threshold: float = -50e-3
    v_reset: float = -60e-3
    refractory: float = 2e-3
    v_noise: float = 5e-3
    tau_syn: float = 5e-3
    delay_forward: float = 0.0
    delay_feedback: float = 0.0

    def __post_init__(self):
        choice(self.kind, NEURON_KINDS, "neuron.kind", SpecError)
        number(self.tau, "neuron.tau (time constant, s)", SpecError, low=0, low_open=True)
        choice(self.activation, ACTIVATIONS, "neuron.activation", SpecError)
        choice(self.spike_model, SPIKE_MODELS, "neuron.spike_model", SpecError)
        nu0, g, numax = _RATE_DEFAULTS[self.kind]
        for name, default in (("baseline_rate", nu0), ("gain", g)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        for name, unit in (("baseline_rate", "Hz"), ("gain", "Hz per unit"), ("tau_trace", "s"), ("tau_m", "s"),
                           ("refractory", "s"), ("tau_syn", "s")):
            number(getattr(self, name), f"neuron.{name} ({unit})", SpecError, low=0, low_open=True)
        for name in ("v_rest", "v_threshold", "v_reset"):
            number(getattr(self, name), f"neuron.{name} (V)", SpecError, low=-1.0, high=1.0)
        number(self.v_noise, "neuron.v_noise (V)", SpecError, low=0, high=1.0)
        for name in ("delay_forward", "delay_feedback"):
            number(getattr(self, name), f"neuron.{name} (s)", SpecError, low=0, high=1.0)
            if getattr(self, name) > 0 and self.kind != "lif":
                raise SpecError(f"neuron.{name}: delays need spike-driven synapses (neuron.kind = 'lif'); "
                                f"{self.kind} units' synapses read a continuous signal")
        if self.kind == "lif":
            largest = 1.0 / self.refractory
            if self.max_rate is not None and not math.isclose(float(self.max_rate), largest, rel_tol=1e-9):
                raise SpecError(f"neuron.max_rate ({self.max_rate:g} Hz): a LIF neuron's largest rate is "
                                f"1/refractory ({largest:g} Hz); leave max_rate out or set neuron.refractory")
            object.__setattr__(self, "max_rate", largest)
            if not self.baseline_rate < largest:
                raise SpecError(f"neuron.baseline_rate ({self.baseline_rate:g} Hz) must be below 1/refractory "
                                f"({largest:g} Hz), the LIF neuron's largest rate")
            if not self.v_reset < self.v_threshold:
                raise SpecError(f"neuron.v_reset ({self.v_reset * 1e3:g} mV) must be below neuron.v_threshold "
                                f"({self.v_threshold * 1e3:g} mV)")
            if self.v_noise == 0:
                raise SpecError("neuron.v_noise must be > 0 for LIF neurons: without membrane fluctuations "
                                "the f–I curve has no slope below threshold and small signals are lost")
        elif self.max_rate is None:
            object.__setattr__(self, "max_rate", numax)
        number(self.max_rate, "neuron.max_rate (Hz)", SpecError, low=0, low_open=True)
        if self.max_rate <= self.baseline_rate:
            raise SpecError(f"neuron.max_rate ({self.max_rate:g} Hz) must be above neuron.baseline_rate "
                            f"({self.baseline_rate:g} Hz): the rate is clipped to [0, max_rate] around the baseline")

    @property
    def spikes(self) -> bool:
        """Do the units fire spikes (Poisson or LIF)?"""
        return self.kind in SPIKING_KINDS

    def lif_code(self, sigma_signal: float = 1.0):
        """The LIF drive that carries ``y`` as ``ν₀ + g y`` (:class:`circuits.lif.LIFCode`)."""
        from .lif import calibrate

        try:
            return calibrate(self.baseline_rate, self.gain, self.v_noise, self.tau_m, self.refractory, self.v_rest,
                             self.v_threshold, self.v_reset)
        except ValueError as exc:
            raise SpecError(f"neuron: {exc}") from None


@dataclass(frozen=True)
class Noise:
    """Each layer's own noise source in mirror mode.

    The source holds a Gaussian sample ``ξ ~ N(0, s²)`` per unit for
    ``correlation_time`` seconds, then draws a new one (independently per
    unit and per layer); ``s`` is set by the build so that the driven
    activity has variance ``sigma²``.

    ``sigma = None`` takes the weight mirror's ``sigma`` (or 1.0 for the
    other rules); a value that differs from the weight mirror's is an error
    (one noise amplitude, declared once).

    ``source``: ``"brian"`` (Brian2's generator draws each sample) or
    ``"arrays"`` (every sample of every layer drawn beforehand with NumPy
    from the run's seed and played into the circuit from a ``TimedArray``;
    the circuit keeps them, ``BrianCircuit.noise_samples``, so that rate mode
    can consume the very same noise: ``sims.circuit.rate_mirror_on_samples``).
    """

    sigma: float | None = None
    correlation_time: float = 5e-3
    source: str = "brian"

    def __post_init__(self):
        if self.sigma is not None:
            number(self.sigma, "noise.sigma", SpecError, low=0, low_open=True)
        number(self.correlation_time, "noise.correlation_time (s)", SpecError, low=0, low_open=True)
        choice(self.source, NOISE_SOURCES, "noise.source", SpecError)


@dataclass(frozen=True)
class Phases:
    """The phase schedule.

    schedule : ``mirror`` (noise, B learns; WM only), ``engaged`` (data,
        W learns; KP's B too) or ``alternate`` (mirror blocks of
        ``mirror_duration`` and engaged blocks of ``engaged_duration``,
        starting with mirror, until ``duration``).
    duration : total simulated time (s). A declaration read by the CLI, the
        Python API or a config file that gives none gets the time its schedule
        needs (``sims.circuit.auto_duration``: a mirror-only run until the
        initial B's share is 2 %, an engaged run ``epochs`` passes over the
        training set, an alternating run enough blocks for them).
    epochs : engaged and alternating runs without a duration: presentations of
        the whole training set (default 3, chosen on validation with
        ``engaged_lr`` = 0.02: ``bench/circuit_defaults.py``).
    presentation : time each input is shown in engaged mode (s; 40 ms: with a
        20 ms learning window of 20 neuron time constants the circuit learns
        what the rate-mode engine does, ``bench/circuit_vs_rate.py``). Its first
        half must let the chain y_0 → … → y_L → δ_L → … → δ_1 settle (2L
        neuron time constants plus one step per synaptic hop, several times
        over), or W learns from the previous input's error: with τ = 1 ms and
        two weight layers, 20 ms works and 10 ms does not.
    parity_period : in mirror mode the even- and odd-numbered layers take
        turns as noise sources (a source's forward input is silenced, so that
        every B sees exactly one layer's white noise and that layer's linear
        response); they switch every ``parity_period`` seconds.
    record_interval : simulated seconds per metrics row.
    record_activity : the last this many simulated seconds record the
        populations' activity (spike trains of a few neurons per population,
        population rates; rate units' outputs); 30 s by default, so that a
        run of hours keeps megabytes, not gigabytes, of activity (metrics rows
        before the window carry no rates). Weights are recorded throughout.
    """

    schedule: str = "mirror"
    duration: float = 2.0
    mirror_duration: float = 1.0
    engaged_duration: float = 20.0
    presentation: float = 40e-3
    parity_period: float = 50e-3
    record_interval: float = 0.1
    record_activity: float = 30.0
    epochs: float = 3.0

    def __post_init__(self):
        choice(self.schedule, SCHEDULES, "phases.schedule", SpecError)
        for name in ("duration", "mirror_duration", "engaged_duration", "presentation",
                     "parity_period", "record_interval", "record_activity", "epochs"):
            number(getattr(self, name), f"phases.{name} (s)", SpecError, low=0, low_open=True)

    def segments(self) -> list[tuple[str, float, float]]:
        """``(phase, start, stop)`` blocks covering ``[0, duration]``."""
        if self.schedule != "alternate":
            return [(self.schedule, 0.0, self.duration)]
        out, t, phase = [], 0.0, "mirror"
        while t < self.duration - 1e-12:
            length = self.mirror_duration if phase == "mirror" else self.engaged_duration
            stop = min(self.duration, t + length)
            out.append((phase, t, stop))
            t = stop
            phase = "engaged" if phase == "mirror" else "mirror"
        return out


# ---------------------------------------------------------------------------
# the rules circuit mode builds: one registration per rule
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Mirror:
    """A rule's mirror phase in rate-mode units.

    ``B ← (1-λ_B) B + η_B H`` per mirror batch of ``batch_size`` noise
    samples (``lr`` = η_B, ``decay`` = λ_B); each layer's noise has amplitude
    ``sigma`` and distribution ``noise`` (one of :data:`NOISE_DISTRIBUTIONS`).
    """

    lr: float
    decay: float
    batch_size: int
    sigma: float
    noise: str = "gaussian"

    def __post_init__(self):
        choice(self.noise, NOISE_DISTRIBUTIONS, "mirror noise", SpecError)

    def step(self, samples: int) -> tuple[float, float]:
        """``(η, λ)`` of one mirror update on ``samples`` noise samples: ``η_B k/m`` and
        ``1 - (1-λ_B)^{k/m}`` (``k = samples``), so that any split of a batch into parts
        adds up to the batch's rate and decay. Rate mode's partial batches, the circuit's
        per-event plasticity (``k = 1``) and the rate-mode predictions all take it."""
        frac = samples / self.batch_size
        return self.lr * frac, 1.0 - (1.0 - self.decay) ** frac

    def per_sample(self, gain: float) -> tuple[float, float]:
        """``(hebbian, keep)`` of one plasticity event per noise sample.

        ``ΔB = lr/(m κ) · δ_l δ_{l-1}`` and ``B ← (1-λ_B)^{1/m} B`` per event
        (:meth:`step` of one sample), with ``m = batch_size`` and ``κ = gain``,
        the settled correlation gain of the neuron filters
        (``circuits.brian.network.mirror_gain``).
        """
        lr, decay = self.step(1)
        return lr / gain, 1.0 - decay


@dataclass(frozen=True)
class ModeMapping:
    """The one translation of a circuit's rule parameters between rate mode and simulated time.

    Both modes read it: the Brian2 build takes its rates per simulated second
    (:meth:`mirror_rates`, :meth:`engaged_rates`), the rate-mode engine that
    runs the same declaration (``sims.circuit.rate_reference``) and the
    rate-mode predictions take its steps (:meth:`mirror_samples`,
    :meth:`Mirror.step`, :meth:`engaged_step`).

    **Mirror.** Each layer's noise is redrawn every ``τ_ξ``
    (``noise_time``): ``n = plastic time / τ_ξ`` samples, a rate-mode batch of
    ``m`` samples is ``T_b = m τ_ξ`` of simulated time, and
    ``B ← (1-λ_B) B + η_B H`` per batch is ``η_B' = η_B / T_b`` and
    ``λ_B' = -ln(1-λ_B) / T_b`` per second. A layer learns only while it is
    the noise source (the parity), so a mirror block of ``T`` seconds gives
    each layer about ``T/2`` of plastic time.

    **Engaged.** A presentation of ``T_p`` seconds settles for its first half
    and learns in its second (``learn_window = T_p/2``) at
    ``η_W' = engaged_lr / learn_window`` and ``λ' = -ln(1-λ_c) / learn_window``
    per second (``λ_c``: the rule's decay per presentation, KP's ``decay``):
    one presentation is one online step of size ``engaged_lr``, taken by the
    circuit as ``K = learn_window / plasticity_dt`` small steps while its
    error follows W (:attr:`steps_per_presentation`, :meth:`engaged_step`).
    """

    noise_time: float
    mirror: "Mirror | None"
    presentation: float
    plasticity_dt: float
    engaged_lr: float
    engaged_decay: float

    # -- mirror --------------------------------------------------------------
    @property
    def mirror_batch_time(self) -> float:
        """``T_b = m · τ_ξ`` (``m = 1`` for a rule without a mirror)."""
        m = self.mirror.batch_size if self.mirror is not None else 1
        return m * self.noise_time

    def mirror_samples(self, plastic_time: float) -> int:
        """Noise samples a layer sees in ``plastic_time`` seconds of mirror plasticity: ``round(t / τ_ξ)``."""
        return int(round(plastic_time / self.noise_time))

    def mirror_rates(self) -> tuple[float, float]:
        """``(η_B', λ_B')`` per simulated second (before the neuron filters' gain); ``(0, 0)`` without a mirror."""
        if self.mirror is None:
            return 0.0, 0.0
        tb = self.mirror_batch_time
        return self.mirror.lr / tb, -math.log1p(-self.mirror.decay) / tb

    # -- engaged ---------------------------------------------------------------
    @property
    def learn_window(self) -> float:
        """The learning half of a presentation, ``T_p / 2``."""
        return self.presentation / 2

    @property
    def steps_per_presentation(self) -> int:
        """``K = learn_window / plasticity_dt``: the circuit's plasticity steps in one presentation."""
        return max(1, int(round(self.learn_window / self.plasticity_dt)))

    def engaged_rates(self) -> tuple[float, float]:
        """``(η_W', λ')`` per learning second."""
        return self.engaged_lr / self.learn_window, -math.log1p(-self.engaged_decay) / self.learn_window

    def engaged_step(self, steps: int) -> tuple[float, float]:
        """``(η, λ)`` of one of ``steps`` equal online steps that make up a presentation:
        ``engaged_lr / steps`` and ``1 - (1-λ_c)^{1/steps}``."""
        if int(steps) < 1:
            raise SpecError(f"steps per presentation must be >= 1, got {steps}")
        return self.engaged_lr / steps, 1.0 - (1.0 - self.engaged_decay) ** (1.0 / steps)


def _no_engaged_decay(rule: LearningRule) -> float:
    return 0.0


def _no_checks(spec: CircuitSpec) -> None:
    return None


@dataclass(frozen=True)
class CircuitRule:
    """What circuit mode needs to know about one learning rule.

    The declaration reads it from :data:`CIRCUIT_RULE_REGISTRY` by the rule's
    config name; the Brian2 build has one registered builder per rule for
    the plasticity of the feedback synapses B
    (``circuits.brian.plasticity``). Adding a rule to circuit mode is one
    :func:`register_circuit_rule` here and one registered builder there.

    Parameters
    ----------
    key : the rule's config/CLI name (``rule.key``: ``wm``, ``kp``, ``fa``).
    rule_class : the class of :mod:`circuits.rules` that the name builds.
    defaults : rule parameters circuit mode uses unless a config sets them.
    mirror : ``rule -> Mirror`` for a rule with a mirror phase (B learns
        from each layer's own noise; the rule object must then also offer
        rate mode's ``mirror_update``, used for the rate-mode prediction), or
        None for a rule without one.
    engaged_decay : ``rule -> λ``: the decay per presentation that the rule
        adds to the engaged plasticity (of W, and of B where B learns there).
    check : ``spec -> None``: the rule's own checks of a declaration (raises
        :class:`SpecError`).
    alternate : whether ``phases.schedule = 'alternate'`` is allowed.
    """

    key: str
    rule_class: type
    defaults: Mapping[str, Any] = field(default_factory=dict)
    mirror: Callable[[Any], Mirror] | None = None
    engaged_decay: Callable[[Any], float] = _no_engaged_decay
    check: Callable[[CircuitSpec], None] = _no_checks
    alternate: bool = False

    def __post_init__(self):
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))

    @property
    def has_mirror(self) -> bool:
        """Does the rule have a mirror phase?"""
        return self.mirror is not None

    def mirror_of(self, rule: LearningRule) -> Mirror | None:
        """The mirror phase of ``rule`` (None for a rule without one)."""
        return None if self.mirror is None else self.mirror(rule)


#: config/CLI name -> :class:`CircuitRule`, in the order the names are listed.
CIRCUIT_RULE_REGISTRY: dict[str, CircuitRule] = {}


def register_circuit_rule(entry: CircuitRule) -> CircuitRule:
    """Add ``entry`` to :data:`CIRCUIT_RULE_REGISTRY` (a name is registered once)."""
    if entry.key in CIRCUIT_RULE_REGISTRY:
        raise ValueError(f"circuit rule {entry.key!r} is already registered")
    CIRCUIT_RULE_REGISTRY[entry.key] = entry
    return entry


def _unregistered(what: str, name: Any) -> SpecError:
    allowed = ", ".join(CIRCUIT_RULE_REGISTRY)
    return SpecError(f"{what} must be one of {allowed} in circuit mode, got {name!r}")


def circuit_rule(name: Any, what: str = "rule.name") -> CircuitRule:
    """The registry entry of the rule named ``name``.

    Raises :class:`SpecError` that names ``what`` and lists the registered rules.
    """
    entry = CIRCUIT_RULE_REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise _unregistered(what, name)
    return entry


def circuit_rule_of(rule: Any) -> CircuitRule:
    """The registry entry of a rule object (by ``rule.key``; its class must match)."""
    key = getattr(rule, "key", None)
    name = key if isinstance(key, str) else type(rule).__name__
    entry = CIRCUIT_RULE_REGISTRY.get(name)
    if entry is None or not isinstance(rule, entry.rule_class):
        raise _unregistered("rule", name)
    return entry


def _wm_mirror(rule: WeightMirror) -> Mirror:
    return Mirror(lr=rule.lr, decay=rule.decay, batch_size=rule.mirror_batch_size, sigma=rule.sigma,
                  noise=rule.noise)


def _wm_check(spec: CircuitSpec) -> None:
    rule = spec.rule
    if rule.response != "linear":
        raise SpecError("rule.response: circuit mode mirrors linear responses; use response = 'linear'")
    if rule.normalize != "none":
        raise SpecError("rule.normalize: circuit mode keeps B bounded by decay; use normalize = 'none'")
    if rule.decay <= 0:
        raise SpecError("rule.decay must be > 0 in circuit mode (it sets the relaxation rate)")
    if spec.noise.sigma is not None and abs(spec.noise.sigma - rule.sigma) > 1e-12:
        raise SpecError(
            f"noise.sigma ({spec.noise.sigma}) differs from the weight mirror's sigma "
            f"({rule.sigma}); declare it once")


def _kp_engaged_decay(rule: KolenPollack) -> float:
    return rule.decay


# Circuit defaults: circuit mode runs the fixed mirror (its time constants are
# the circuit's; the adaptive mirror is rate mode's); a mirror phase of a few
# simulated seconds is like rate mode's fast initial phase (rate mode's running defaults, lr = decay = 0.001
# per batch of 32, would need minutes of simulated time), and KP's decay is
# per presentation.
register_circuit_rule(CircuitRule(
    "wm", WeightMirror, defaults={"adaptive": False, "lr": 0.05, "decay": 0.05, "mirror_batch_size": 8},
    mirror=_wm_mirror, check=_wm_check, alternate=True))
register_circuit_rule(CircuitRule("kp", KolenPollack, defaults={"decay": 0.001, "decay_total": 0.0},
                                  engaged_decay=_kp_engaged_decay))
register_circuit_rule(CircuitRule("fa", FeedbackAlignment))

#: rules that circuit mode builds, by config/CLI value (the registry's names).
CIRCUIT_RULES: tuple[str, ...] = tuple(CIRCUIT_RULE_REGISTRY)


@dataclass(frozen=True)
class CircuitSpec:
    """A whole circuit: layers, neurons, noise, phases, rule, clocks, device.

    See the module docstring for how the rule's per-batch parameters map to
    rates per simulated second.

    ``dale = true`` (Dale's law): every forward and feedback unit is
    excitatory, and each signed weight matrix is carried by two pathways whose
    synapses keep their sign: an excitatory projection ``W⁺ ≥ 0`` from the
    presynaptic units and an inhibitory one, ``W⁻ ≥ 0`` subtracted, from a
    population of inhibitory interneurons that relay the presynaptic units
    one to one (their own unit dynamics: the inhibitory path is one synaptic
    hop and one time constant slower). The effective matrix ``W = W⁺ - W⁻``
    is what angles, checkpoints and ``get_weights`` report; the signed rule's
    change enters both parts with opposite signs, each clipped at 0
    (``circuits.brian.plasticity.signed_update``).

    ``mirror_plasticity``: ``"sample"`` or ``"stdp"`` (spiking units;
    ``circuits.brian.plasticity.stdp_mirror_code``).

    ``mirror_centring`` (spiking units, sample rule, no Dale; default true):
    the mirror's Hebbian product multiplies each feedback unit's decoded
    train less its own running mean in the present parity regime (the
    covariance rule), so that spike trains whose mean is not exactly the
    baseline (a LIF neuron off its Siegert rate, a unit rectified at 0 Hz
    by its inputs' spike noise) add nothing outside W's direction
    (``circuits.brian.network.CENTRING_EVENTS``). False multiplies the
    decoded trains as they are.

    ``mirror_pilot`` (seconds, default 0: none; a mirror-only run of a rule
    with a mirror): before the run, a pilot of this
    length on independent noise measures each layer's mirror moments in the
    circuit itself (``sims.circuit.pilot_mirror_moments``); every metrics
    row then carries ``pilot_angles_deg``, the prediction from those moments,
    beside the closed form's ``noise_aware_angles_deg``.
    """

    layers: tuple[int, ...]
    rule: LearningRule = field(default_factory=WeightMirror)
    neuron: NeuronModel = field(default_factory=NeuronModel)
    noise: Noise = field(default_factory=Noise)
    phases: Phases = field(default_factory=Phases)
    dt: float = 0.5e-3
    plasticity_dt: float = 1e-3
    engaged_lr: float = 0.02
    device: str = "runtime"
    threads: int = 1
    seed: int = 0
    data: str = "digits"
    downsample: int = 1
    init: str = "he"
    label: str = ""
    mirror_plasticity: str = "sample"
    dale: bool = False
    mirror_centring: bool = True
    mirror_pilot: float = 0.0

    def __post_init__(self):
        layers = self.layers
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise SpecError(f"layers must be a list of population sizes, got {layers!r}")
        layers = tuple(layers)
        if len(layers) < 2:
            raise SpecError(f"layers needs at least two sizes (input and output), got {list(layers)}")
        for i, n in enumerate(layers):
            integer(n, f"layers[{i}] (population size)", SpecError, low=1)
        object.__setattr__(self, "layers", layers)
        entry = circuit_rule_of(self.rule)
        entry.check(self)
        if self.phases.schedule == "alternate" and not entry.alternate:
            allowed = " or ".join(k for k, e in CIRCUIT_RULE_REGISTRY.items() if e.alternate)
            raise SpecError(f"phases.schedule = 'alternate' needs rule {allowed}, got {self.rule.key!r}")
        for name in ("dt", "plasticity_dt"):
            number(getattr(self, name), f"{name} (s)", SpecError, low=0, low_open=True)
        number(self.engaged_lr, "engaged_lr", SpecError, low=0, low_open=True)
        choice(self.device, DEVICES, "device", SpecError)
        choice(self.init, ("he", "lecun"), "init", SpecError)
        string(self.label, "label", SpecError)
        choice(self.mirror_plasticity, MIRROR_PLASTICITY, "mirror_plasticity", SpecError)
        if not isinstance(self.dale, bool):
            raise SpecError(f"dale: expected true or false, got {self.dale!r}")
        if not isinstance(self.mirror_centring, bool):
            raise SpecError(f"mirror_centring: expected true or false, got {self.mirror_centring!r}")
        number(self.mirror_pilot, "mirror_pilot (s)", SpecError, low=0)
        if self.mirror_pilot > 0 and (self.mirror is None or self.phases.schedule != "mirror"):
            raise SpecError("mirror_pilot needs a mirror-only run (phases.schedule = 'mirror', rule wm); got "
                            f"rule {self.rule.key!r}, schedule {self.phases.schedule!r}")
        if self.dale and self.mirror_plasticity == "stdp":
            raise SpecError("dale = true with mirror_plasticity = 'stdp' is not built yet; use 'sample'")
        if self.mirror_plasticity == "stdp" and not self.neuron.spikes:
            raise SpecError("mirror_plasticity = 'stdp' needs spiking neurons (neuron.kind = 'spiking' or 'lif')")
        integer(self.threads, "threads", SpecError, low=0)
        integer(self.downsample, "downsample", SpecError, low=1)
        if self.dt > self.neuron.tau:
            raise SpecError(f"dt ({self.dt} s) must not exceed neuron.tau ({self.neuron.tau} s)")
        if self.neuron.kind == "lif":
            for name in ("refractory", "tau_syn", "tau_m"):
                if getattr(self.neuron, name) < self.dt - 1e-12:
                    raise SpecError(f"neuron.{name} ({getattr(self.neuron, name)} s) must not be below dt ({self.dt} s)")
            self.neuron.lif_code()  # a baseline that no drive reaches is an error here, not in the build
            for name in ("delay_forward", "delay_feedback"):
                r = getattr(self.neuron, name) / self.dt
                if abs(r - round(r)) > 1e-6:
                    raise SpecError(f"neuron.{name} ({getattr(self.neuron, name)} s) must be a whole multiple of "
                                    f"dt ({self.dt} s)")
            trip = self.n_weight_layers * (self.neuron.delay_forward + self.neuron.delay_feedback)
            if self.phases.schedule != "mirror" and trip >= self.phases.presentation / 2:
                raise SpecError(f"phases.presentation ({self.phases.presentation} s): its settling half must "
                                f"outlast the delays of a round trip through the {self.n_weight_layers} weight "
                                f"layers ({trip:g} s); lengthen it or shorten the delays")
        if self.neuron.kind == "spiking" and self.neuron.max_rate * self.dt > 1 + 1e-9:
            # a Poisson unit fires at most once per step: a higher rate would be capped silently
            raise SpecError(f"neuron.max_rate ({self.neuron.max_rate:g} Hz) must not exceed 1/dt "
                            f"({1 / self.dt:g} Hz): a spiking unit fires at most once per step; lower it or dt")
        ratio = self.plasticity_dt / self.dt
        if abs(ratio - round(ratio)) > 1e-6:
            raise SpecError(f"plasticity_dt ({self.plasticity_dt} s) must be a whole multiple of dt ({self.dt} s)")
        for name, value in (("noise.correlation_time", self.noise.correlation_time),
                            ("phases.presentation", self.phases.presentation / 2),
                            ("phases.parity_period", self.phases.parity_period),
                            ("phases.record_interval", self.phases.record_interval)):
            r = value / self.dt
            if r < 1 - 1e-9 or abs(r - round(r)) > 1e-6:
                what = "half of phases.presentation" if name == "phases.presentation" else name
                raise SpecError(f"{what} ({value} s) must be a whole multiple of dt ({self.dt} s)")
        if self.mirror is not None and self.phases.schedule != "engaged":
            # Mirror events fall at whole multiples of the noise hold and read the parity then: a parity
            # period that is not a whole number of holds lets samples straddle a switch of source, and one
            # of two holds (e.g. a 100 ms hold with a 50 ms period) gives every event to the same parity.
            r = self.phases.parity_period / self.noise.correlation_time
            if r < 1 - 1e-9 or abs(r - round(r)) > 1e-6:
                raise SpecError(f"phases.parity_period ({self.phases.parity_period} s) must be a whole multiple "
                                f"of noise.correlation_time ({self.noise.correlation_time} s), the noise hold: "
                                "the even and odd layers take turns by whole samples")

    # -- derived quantities ------------------------------------------------
    @property
    def n_weight_layers(self) -> int:
        return len(self.layers) - 1

    @property
    def circuit_rule(self) -> CircuitRule:
        """What circuit mode knows about the rule (its :data:`CIRCUIT_RULE_REGISTRY` entry)."""
        return circuit_rule_of(self.rule)

    @property
    def mirror(self) -> Mirror | None:
        """The rule's mirror phase (None for a rule without one)."""
        return self.circuit_rule.mirror_of(self.rule)

    @property
    def sigma(self) -> float:
        """The noise amplitude σ (the mirror phase's, or ``noise.sigma``, or 1)."""
        mirror = self.mirror
        if mirror is not None:
            return float(mirror.sigma)
        return float(self.noise.sigma) if self.noise.sigma is not None else 1.0

    @property
    def noise_distribution(self) -> str:
        """The distribution of each layer's noise samples (the mirror phase's, else Gaussian)."""
        mirror = self.mirror
        return mirror.noise if mirror is not None else "gaussian"

    @property
    def modes(self) -> ModeMapping:
        """How this declaration's rule parameters read in rate mode and in simulated time (:class:`ModeMapping`)."""
        return ModeMapping(noise_time=self.noise.correlation_time, mirror=self.mirror,
                           presentation=self.phases.presentation, plasticity_dt=self.plasticity_dt,
                           engaged_lr=self.engaged_lr, engaged_decay=self.circuit_rule.engaged_decay(self.rule))

    @property
    def mirror_batch_time(self) -> float:
        """``T_b = m · τ_ξ``: the simulated time of one rate-mode mirror batch."""
        return self.modes.mirror_batch_time

    def mirror_rates(self) -> tuple[float, float]:
        """``(η_B', λ_B')`` per simulated second (before the filter gain): :meth:`ModeMapping.mirror_rates`."""
        return self.modes.mirror_rates()

    @property
    def learn_window(self) -> float:
        return self.modes.learn_window

    def engaged_rates(self) -> tuple[float, float]:
        """``(η_W', λ')`` per learning second (:meth:`ModeMapping.engaged_rates`): η_W' = lr/window; the
        rule's decay per presentation (``CircuitRule.engaged_decay``: KP's ``decay``, 0 for the others)."""
        return self.modes.engaged_rates()

    # -- config ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A nested dict for ``config.toml`` (every parameter, resolved)."""
        rule = {"name": self.rule.key, **self.rule.params()}
        noise = {"sigma": self.sigma, "correlation_time": self.noise.correlation_time, "source": self.noise.source}
        return {
            "layers": list(self.layers),
            "dt": self.dt,
            "plasticity_dt": self.plasticity_dt,
            "engaged_lr": self.engaged_lr,
            "device": self.device,
            "threads": self.threads,
            "seed": self.seed,
            "data": self.data,
            "downsample": self.downsample,
            "init": self.init,
            "label": self.label,
            "mirror_plasticity": self.mirror_plasticity,
            "dale": self.dale,
            "mirror_centring": self.mirror_centring,
            "mirror_pilot": self.mirror_pilot,
            "rule": rule,
            "neuron": dataclasses.asdict(self.neuron),
            "noise": noise,
            "phases": dataclasses.asdict(self.phases),
        }

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "CircuitSpec":
        """Build and validate from a nested dict (a parsed TOML file).

        Unknown keys are errors that name the key and the allowed ones.
        """
        if not isinstance(config, dict):
            raise SpecError(f"circuit config must be a table, got {type(config).__name__}")
        config = dict(config)
        top_fields = {f.name for f in dataclasses.fields(cls)}
        sections = {"neuron": NeuronModel, "noise": Noise, "phases": Phases}
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            if key == "rule":
                continue
            if key in sections:
                kwargs[key] = _section(sections[key], key, value)
            elif key in top_fields:
                kwargs[key] = value
            else:
                allowed = sorted((top_fields - {"rule"}) | set(sections) | {"rule"})
                raise SpecError(f"unknown key {key!r}; allowed: {', '.join(allowed)}")
        if "layers" not in kwargs:
            raise SpecError("layers is required (e.g. layers = [784, 100, 10])")
        for key in ("dt", "plasticity_dt", "mirror_pilot"):
            if key in kwargs:
                kwargs[key] = parse_duration(kwargs[key], key)
        rule_cfg = config.get("rule", {"name": "wm"})
        if isinstance(rule_cfg, str):
            rule_cfg = {"name": rule_cfg}
        if not isinstance(rule_cfg, dict) or "name" not in rule_cfg:
            raise SpecError("[rule] must be a table with name = 'wm' | 'kp' | 'fa' and its parameters")
        params = dict(rule_cfg)
        name = params.pop("name")
        params = {**circuit_rule(name, "rule.name").defaults, **params}
        try:
            kwargs["rule"] = make_rule(name, **params)
        except RuleError as exc:
            raise SpecError(str(exc)) from None
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise SpecError(str(exc)) from None


#: per section, the keys read as durations (``2s``, ``500ms``, ``0.25``).
_DURATIONS = {
    "neuron": ("tau", "tau_trace", "tau_m", "refractory", "tau_syn", "delay_forward", "delay_feedback"),
    "noise": ("correlation_time",),
    "phases": ("duration", "mirror_duration", "engaged_duration", "presentation",
               "parity_period", "record_interval", "record_activity"),
}


#: per section, the keys read as voltages (``-70mV``, ``-0.07``).
_VOLTAGES = {"neuron": ("v_rest", "v_threshold", "v_reset", "v_noise")}


def _section(klass, name: str, values: Any) -> Any:
    """The ``[name]`` table as ``klass``: keys and value types checked, durations and voltages read with units."""
    convert = dict.fromkeys(_DURATIONS[name], parse_duration)
    convert.update(dict.fromkeys(_VOLTAGES.get(name, ()), parse_voltage))
    return from_table(klass, values, f"[{name}]", SpecError, convert=convert)
