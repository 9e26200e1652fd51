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
  ``KolenPollack`` or ``FeedbackAlignment``) and its parameters;
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
from dataclasses import dataclass, field
from typing import Any

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
    "CIRCUIT_RULES",
    "CIRCUIT_RULE_DEFAULTS",
    "NeuronModel",
    "Noise",
    "Phases",
    "CircuitSpec",
    "parse_duration",
]


class SpecError(InputError):
    """A circuit declaration is invalid; the message names the field."""


#: --device values: runtime (NumPy target), cython (runtime, Cython target),
#: cpp (cpp_standalone), cuda (cuda_standalone through brian2cuda).
DEVICES = ("runtime", "cython", "cpp", "cuda")
NEURON_KINDS = ("rate", "spiking")
SPIKE_MODELS = ("poisson",)
ACTIVATIONS = ("relu", "linear")
SCHEDULES = ("mirror", "engaged", "alternate")
#: rules that circuit mode builds, by config/CLI value.
CIRCUIT_RULES = ("wm", "kp", "fa")

#: rule parameters that circuit mode uses unless a config sets them: a mirror
#: phase of a few simulated seconds is like rate mode's fast initial phase
#: (rate mode's running defaults, lr = decay = 0.001 per batch of 32, would
#: need minutes of simulated time), and KP's decay is per presentation.
CIRCUIT_RULE_DEFAULTS = {
    "wm": {"lr": 0.05, "decay": 0.05, "mirror_batch_size": 8},
    "kp": {"decay": 0.001},
    "fa": {},
}

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds from ``2``, ``2.5``, ``"2s"``, ``"500ms"``, ``"1min"``."""
    if isinstance(value, bool):
        raise SpecError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        for unit in sorted(_UNITS, key=len, reverse=True):
            if text.endswith(unit):
                number = text[: -len(unit)].strip()
                try:
                    return float(number) * _UNITS[unit]
                except ValueError:
                    break
        else:
            try:
                return float(text)
            except ValueError:
                pass
    raise SpecError(f"{what}: cannot read {value!r} as a duration (examples: 2s, 500ms, 0.25)")


def _positive(value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{what} must be a positive number, got {value!r}")


def _choice(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise SpecError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")


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

    Parameters
    ----------
    kind : ``"rate"`` or ``"spiking"``.
    tau : membrane (rate) time constant τ in seconds.
    activation : hidden-layer nonlinearity in engaged mode (``relu``/``linear``).
    spike_model : ``"poisson"``.
    baseline_rate : ν₀ in Hz (spiking).
    gain : g in Hz per unit of activity (spiking).
    max_rate : ν_max in Hz (spiking).
    tau_trace : τ_a of the spike-train filter in seconds (spiking).
    """

    kind: str = "rate"
    tau: float = 1e-3
    activation: str = "relu"
    spike_model: str = "poisson"
    baseline_rate: float = 200.0
    gain: float = 100.0
    max_rate: float = 1000.0
    tau_trace: float = 10e-3

    def __post_init__(self):
        _choice(self.kind, NEURON_KINDS, "neuron.kind")
        _positive(self.tau, "neuron.tau (time constant, s)")
        _choice(self.activation, ACTIVATIONS, "neuron.activation")
        _choice(self.spike_model, SPIKE_MODELS, "neuron.spike_model")
        _positive(self.baseline_rate, "neuron.baseline_rate (Hz)")
        _positive(self.gain, "neuron.gain (Hz per unit)")
        _positive(self.max_rate, "neuron.max_rate (Hz)")
        _positive(self.tau_trace, "neuron.tau_trace (s)")


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
    """

    sigma: float | None = None
    correlation_time: float = 5e-3

    def __post_init__(self):
        if self.sigma is not None:
            _positive(self.sigma, "noise.sigma")
        _positive(self.correlation_time, "noise.correlation_time (s)")


@dataclass(frozen=True)
class Phases:
    """The phase schedule.

    schedule : ``mirror`` (noise, B learns; WM only), ``engaged`` (data,
        W learns; KP's B too) or ``alternate`` (mirror blocks of
        ``mirror_duration`` and engaged blocks of ``engaged_duration``,
        starting with mirror, until ``duration``).
    duration : total simulated time (s).
    presentation : time each input is shown in engaged mode (s). Its first
        half must let the chain y_0 → … → y_L → δ_L → … → δ_1 settle (2L
        neuron time constants plus one step per synaptic hop, several times
        over), or W learns from the previous input's error: with τ = 1 ms and
        two weight layers, 20 ms works and 10 ms does not.
    parity_period : in mirror mode the even- and odd-numbered layers take
        turns as noise sources (a source's forward input is silenced, so that
        every B sees exactly one layer's white noise and that layer's linear
        response); they switch every ``parity_period`` seconds.
    record_interval : simulated seconds per metrics row.
    """

    schedule: str = "mirror"
    duration: float = 2.0
    mirror_duration: float = 0.5
    engaged_duration: float = 2.0
    presentation: float = 20e-3
    parity_period: float = 50e-3
    record_interval: float = 0.1

    def __post_init__(self):
        _choice(self.schedule, SCHEDULES, "phases.schedule")
        for name in ("duration", "mirror_duration", "engaged_duration", "presentation",
                     "parity_period", "record_interval"):
            _positive(getattr(self, name), f"phases.{name} (s)")

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


def _rule_key(rule: LearningRule) -> str:
    return rule.key


@dataclass(frozen=True)
class CircuitSpec:
    """A whole circuit: layers, neurons, noise, phases, rule, clocks, device.

    See the module docstring for how the rule's per-batch parameters map to
    rates per simulated second.
    """

    layers: tuple[int, ...]
    rule: LearningRule = field(default_factory=WeightMirror)
    neuron: NeuronModel = field(default_factory=NeuronModel)
    noise: Noise = field(default_factory=Noise)
    phases: Phases = field(default_factory=Phases)
    dt: float = 0.5e-3
    plasticity_dt: float = 1e-3
    engaged_lr: float = 0.005
    device: str = "runtime"
    threads: int = 1
    seed: int = 0
    data: str = "digits"
    downsample: int = 1
    init: str = "he"

    def __post_init__(self):
        layers = self.layers
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise SpecError(f"layers must be a list of population sizes, got {layers!r}")
        layers = tuple(layers)
        if len(layers) < 2:
            raise SpecError(f"layers needs at least two sizes (input and output), got {list(layers)}")
        for i, n in enumerate(layers):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise SpecError(f"layers[{i}] must be an integer >= 1, got {n!r}")
        object.__setattr__(self, "layers", layers)
        if not isinstance(self.rule, (WeightMirror, KolenPollack, FeedbackAlignment)):
            name = getattr(self.rule, "key", type(self.rule).__name__)
            raise SpecError(f"rule must be one of {', '.join(CIRCUIT_RULES)} in circuit mode, got {name!r}")
        if isinstance(self.rule, WeightMirror):
            if self.rule.response != "linear":
                raise SpecError("rule.response: circuit mode mirrors linear responses; use response = 'linear'")
            if self.rule.normalize != "none":
                raise SpecError("rule.normalize: circuit mode keeps B bounded by decay; use normalize = 'none'")
            if self.rule.decay <= 0:
                raise SpecError("rule.decay must be > 0 in circuit mode (it sets the relaxation rate)")
            if self.noise.sigma is not None and abs(self.noise.sigma - self.rule.sigma) > 1e-12:
                raise SpecError(
                    f"noise.sigma ({self.noise.sigma}) differs from the weight mirror's sigma "
                    f"({self.rule.sigma}); declare it once")
        if self.phases.schedule == "alternate" and not isinstance(self.rule, WeightMirror):
            raise SpecError(f"phases.schedule = 'alternate' needs rule wm, got {self.rule.key!r}")
        _positive(self.dt, "dt (s)")
        _positive(self.plasticity_dt, "plasticity_dt (s)")
        _positive(self.engaged_lr, "engaged_lr")
        _choice(self.device, DEVICES, "device")
        _choice(self.init, ("he", "lecun"), "init")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise SpecError(f"threads must be an integer >= 0, got {self.threads!r}")
        if isinstance(self.downsample, bool) or not isinstance(self.downsample, int) or self.downsample < 1:
            raise SpecError(f"downsample must be an integer >= 1, got {self.downsample!r}")
        if self.dt > self.neuron.tau:
            raise SpecError(f"dt ({self.dt} s) must not exceed neuron.tau ({self.neuron.tau} s)")
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

    # -- derived quantities ------------------------------------------------
    @property
    def n_weight_layers(self) -> int:
        return len(self.layers) - 1

    @property
    def sigma(self) -> float:
        """The noise amplitude σ (the weight mirror's, or ``noise.sigma``, or 1)."""
        if isinstance(self.rule, WeightMirror):
            return float(self.rule.sigma)
        return float(self.noise.sigma) if self.noise.sigma is not None else 1.0

    @property
    def mirror_batch_time(self) -> float:
        """``T_b = m · τ_ξ``: the simulated time of one rate-mode mirror batch."""
        m = self.rule.mirror_batch_size if isinstance(self.rule, WeightMirror) else 1
        return m * self.noise.correlation_time

    def mirror_rates(self) -> tuple[float, float]:
        """``(η_B', λ_B')`` per simulated second (before the filter gain)."""
        if not isinstance(self.rule, WeightMirror):
            return 0.0, 0.0
        tb = self.mirror_batch_time
        return self.rule.lr / tb, -math.log1p(-self.rule.decay) / tb

    @property
    def learn_window(self) -> float:
        return self.phases.presentation / 2

    def engaged_rates(self) -> tuple[float, float]:
        """``(η_W', λ')`` per learning second: η_W' = lr/window; KP's decay per presentation."""
        eta = self.engaged_lr / self.learn_window
        decay = self.rule.decay if isinstance(self.rule, KolenPollack) else 0.0
        return eta, -math.log1p(-decay) / self.learn_window

    # -- config ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A nested dict for ``config.toml`` (every parameter, resolved)."""
        rule = {"name": self.rule.key, **self.rule.params()}
        noise = {"sigma": self.sigma, "correlation_time": self.noise.correlation_time}
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
                if not isinstance(value, dict):
                    raise SpecError(f"[{key}] must be a table")
                kwargs[key] = _section(sections[key], key, value)
            elif key in top_fields:
                kwargs[key] = value
            else:
                allowed = sorted((top_fields - {"rule"}) | set(sections) | {"rule"})
                raise SpecError(f"unknown key {key!r}; allowed: {', '.join(allowed)}")
        if "layers" not in kwargs:
            raise SpecError("layers is required (e.g. layers = [784, 100, 10])")
        for key in ("dt", "plasticity_dt"):
            if key in kwargs:
                kwargs[key] = parse_duration(kwargs[key], key)
        rule_cfg = config.get("rule", {"name": "wm"})
        if isinstance(rule_cfg, str):
            rule_cfg = {"name": rule_cfg}
        if not isinstance(rule_cfg, dict) or "name" not in rule_cfg:
            raise SpecError("[rule] must be a table with name = 'wm' | 'kp' | 'fa' and its parameters")
        params = dict(rule_cfg)
        name = params.pop("name")
        if name not in CIRCUIT_RULES:
            raise SpecError(f"rule.name must be one of {', '.join(CIRCUIT_RULES)}, got {name!r}")
        params = {**CIRCUIT_RULE_DEFAULTS.get(name, {}), **params}
        try:
            kwargs["rule"] = make_rule(name, **params)
        except RuleError as exc:
            raise SpecError(str(exc)) from None
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise SpecError(str(exc)) from None

    def replace(self, **changes) -> "CircuitSpec":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _section(klass, name: str, values: dict) -> Any:
    allowed = {f.name for f in dataclasses.fields(klass)}
    durations = {
        "neuron": ("tau", "tau_trace"),
        "noise": ("correlation_time",),
        "phases": ("duration", "mirror_duration", "engaged_duration", "presentation",
                   "parity_period", "record_interval"),
    }[name]
    out = {}
    for key, value in values.items():
        if key not in allowed:
            raise SpecError(f"[{name}] unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")
        out[key] = parse_duration(value, f"{name}.{key}") if key in durations else value
    try:
        return klass(**out)
    except TypeError as exc:
        raise SpecError(f"[{name}] {exc}") from None
