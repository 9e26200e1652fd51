"""Training configuration: one typed tree of frozen dataclasses, one TOML reader, one writer.

A :class:`TrainConfig` says everything ``weightmirror train`` needs; it is
written in full to each run's ``config.toml`` and reads back to the same
object::

    rule = "wm"              # circuits.rules.RULE_NAMES: bp, fa, ss, usf, brsf, frsf, wm, kp
    model = "mlp"            # models.zoo.MODEL_NAMES
    data = "digits"          # sims.datasets.DATASETS
    data_dir = ""            # "" = the data set's default location
    epochs = 20
    batch_size = 128
    seed = 0
    validation = 0.1         # fraction of the training set held out for validation, in [0, 0.5] (0: none)
    validation_seed = 0      # seed of that split only: every rule and every seed sees the same split
    device = "cpu"           # models.backend.DEVICES
    label = ""               # names the run in figures and tables ("" = the rule)

    [model_options]          # the model builder's own options (models.zoo), checked by the builder
    [optim]                  # OptimConfig: SGD with momentum, decoupled weight decay, schedule
    [wm] / [kp] / [ss]       # the rules' own dataclasses (circuits.rules), every section checked
    [run]                    # RunConfig: evaluation, checkpoints, ImageNet decoding, data parallel, GPU

Every name list is imported from its owner; every section is validated by
the dataclass that holds it (the rules by ``circuits.rules``, the model
options by ``models.zoo.check_model_options``), through the shared helpers
of :mod:`weightmirror.checks`. A bad key or value raises :class:`ConfigError`
(an :class:`weightmirror.errors.InputError`) with one line naming the key
and what is allowed; a number must be finite.

The validation part is stratified by class and drawn from
``validation_seed`` alone (:func:`weightmirror.sims.datasets.split.stratified_split`):
a class of ``n`` training samples gives ``⌊validation·n + ½⌋`` of them, at
least 1 if ``n ≥ 2``, none if ``n = 1``. The training batches, the δ-angle
batch and ``steps_per_epoch`` use the rest; the test set is untouched (for
the ImageNet folders ``val/`` stays the test set and validation comes out of
``train/``). Choose defaults and tuned settings on the ``val_*`` metrics,
never on ``test_*``.

Layers of values: the defaults here (:data:`RULE_TRAINING_DEFAULTS` for the
rules, :data:`MODEL_DEFAULTS` for the model options), then a TOML file, then
overrides (command-line flags or :func:`weightmirror.train` keywords), all in
config-key form (``{"optim": {"lr": 0.01}}``).
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import checks, tomlfile
from ..circuits.rules import RULE_NAMES, Backprop, KolenPollack, LearningRule, SignSymmetry, WeightMirror, make_rule
from ..errors import InputError
from ..models.backend import CONV_ALGORITHMS, DEVICES
from ..models.optim import SCHEDULES
from ..models.zoo import MODEL_NAMES, check_model_options
from .datasets import DATASETS

__all__ = ["ConfigError", "TrainConfig", "OptimConfig", "RunConfig", "RULE_TRAINING_DEFAULTS", "MODEL_DEFAULTS",
           "RULE_SECTIONS", "resolve", "read_file", "as_written_run"]


class ConfigError(InputError):
    """A configuration key or value is not allowed."""


# --------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum (``models.optim.SGD``) and its learning-rate schedule.

    Parameters
    ----------
    lr : base learning rate η (> 0).
    momentum : heavy-ball coefficient μ in [0, 1).
    nesterov : Nesterov momentum.
    weight_decay : decoupled weight decay λ_wd ≥ 0, ``W ← (1 − η λ_wd) W``.
    schedule : ``constant``, ``step`` (× ``gamma`` at each of ``milestones``,
        in epochs) or ``cosine`` (to ``final_fraction``·η at the end).
    warmup_epochs : linear warm-up from 0, in epochs (may be fractional; at most ``epochs``).
    milestones, gamma : the step schedule (increasing epochs >= 1; ``gamma`` > 0).
    final_fraction : the cosine schedule's last value, as a fraction of η, in [0, 1].
    label_smoothing : ε of the smoothed cross-entropy targets, in [0, 1).
    """

    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    final_fraction: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self):
        checks.number(self.lr, "config key optim.lr", ConfigError, low=0, low_open=True)
        checks.number(self.momentum, "config key optim.momentum", ConfigError, low=0, high=1, high_open=True)
        checks.number(self.weight_decay, "config key optim.weight_decay", ConfigError, low=0)
        checks.choice(self.schedule, SCHEDULES, "config key optim.schedule", ConfigError)
        checks.number(self.warmup_epochs, "config key optim.warmup_epochs", ConfigError, low=0)
        milestones = checks.int_list(self.milestones, "config key optim.milestones", ConfigError, low=1)
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ConfigError(f"config key optim.milestones: must be increasing epochs >= 1, got {list(milestones)}")
        checks.number(self.gamma, "config key optim.gamma", ConfigError, low=0, low_open=True)
        checks.number(self.final_fraction, "config key optim.final_fraction", ConfigError, low=0, high=1)
        checks.number(self.label_smoothing, "config key optim.label_smoothing", ConfigError,
                      low=0, high=1, high_open=True)


@dataclass(frozen=True)
class RunConfig:
    """How a run is carried out (not what it learns).

    Parameters
    ----------
    eval_batch_size : samples per evaluation batch (the whole test/val set is evaluated).
    delta_batch_size : training samples on which angle(δ, δ_BP) is measured.
    checkpoint_every : epochs between checkpoints (the last epoch is always checkpointed).
    checkpoint_every_steps : also checkpoint every that many training steps,
        mid-epoch included (0: only at epoch ends); an interruption
        checkpoints at its step anyway.
    image_size : side of the square crops of ``data = "imagenet"`` (JPEG folders).
    workers : decoding processes of the ImageNet folder reader (0: in-process).
    distributed : data parallel over the ranks of an MPI launch
        (``mpirun -n K``): one process per device, ``batch_size`` split across ranks.
    tf32 : on a GPU, TF32 tensor cores for float32 products and cuDNN
        convolutions (PyTorch's default for convolutions; off: float32 throughout).
    conv_algorithm : GPU convolutions: ``auto`` (the faster of im2col + cuBLAS
        and cuDNN, measured per layer geometry), ``im2col`` or ``cudnn``.
    split_batch : on the CPU with more than one BLAS thread, split each training
        batch over the threads, each a share of the examples through the whole
        network with the BLAS on one thread (``models.batch_threads``: the same
        gradients, summed in another order); not with batch norm or several
        processes, and only for networks with convolutions (an MLP's products
        keep the BLAS's threads busy). Off: the BLAS's threads alone.
    """

    eval_batch_size: int = 1000
    delta_batch_size: int = 256
    checkpoint_every: int = 1
    checkpoint_every_steps: int = 0
    image_size: int = 224
    workers: int = 4
    distributed: bool = False
    tf32: bool = False
    conv_algorithm: str = "auto"
    split_batch: bool = True

    def __post_init__(self):
        for key in ("eval_batch_size", "delta_batch_size", "checkpoint_every", "image_size"):
            checks.integer(getattr(self, key), f"config key run.{key}", ConfigError, low=1)
        for key in ("checkpoint_every_steps", "workers"):
            checks.integer(getattr(self, key), f"config key run.{key}", ConfigError, low=0)
        checks.choice(self.conv_algorithm, CONV_ALGORITHMS, "config key run.conv_algorithm", ConfigError)
        checks.boolean(self.split_batch, "config key run.split_batch", ConfigError)


#: Rate-mode training defaults of the rules' parameters, on top of each rule
#: class's own defaults (``circuits.rules``).
RULE_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    # on average 16 uniform noise samples per step, as one mirror batch of 64 at a
    # random quarter of the steps (η_B = λ_B = 0.002 per batch); as accurate as 32
    # Gaussian samples every step, and cheaper (BENCHMARKS.md)
    "wm": {"noise": "uniform"},
    # KP's feedback synapses are calibrated by a short mirror phase before learning
    # (to 3°), and Kolen-Pollack's shared updates then keep W − Bᵀ at that small start:
    # no decay of its own is needed, so none costs accuracy (BENCHMARKS.md §1: 0.2.0's
    # silent start with a decay totalling 4 trailed BP by 0.79 points)
    "kp": {"feedback_init": "mirror", "decay_total": 0.0},
    "ss": {},
    "bp": {},
}

#: config section -> the rule class it holds (the sign-symmetry variants share ``ss``)
RULE_SECTIONS: dict[str, type[LearningRule]] = {"bp": Backprop, "wm": WeightMirror, "kp": KolenPollack,
                                                "ss": SignSymmetry}

#: top-level numbers with a range: checked with it, so that every message names the range
_RANGES: dict[str, dict[str, float]] = {"validation": {"low": 0.0, "high": 0.5}}

#: default [model_options] per model (the builders' own defaults otherwise)
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"mlp": {"hidden": [500, 500], "activation": "relu"}}


def _section_of(rule: str) -> str | None:
    """The config section holding rule ``rule``'s parameters (None: it has none)."""
    if rule in ("usf", "brsf", "frsf"):
        return "ss"
    return rule if rule in RULE_SECTIONS else None


def _rule_section(name: str, table: Mapping[str, Any]):
    values = {**RULE_TRAINING_DEFAULTS[name], **table}
    return checks.from_table(RULE_SECTIONS[name], values, f"config section [{name}]", ConfigError)


# --------------------------------------------------------------------------
# the whole configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; see the module docstring for the keys.

    Top-level keys: ``rule``, ``model``, ``data``, ``data_dir``, ``epochs``,
    ``batch_size``, ``seed``, ``device``, ``label`` (see the module docstring) and

    validation : float in [0, 0.5], default 0.1
        The fraction of the training set held out for validation (stratified
        by class, see the module docstring); the metrics rows then carry
        ``val_loss``, ``val_top1_error``, ``val_top5_error``. 0: no validation
        part, no ``val_*`` metrics, training on the whole training set.
    validation_seed : int >= 0, default 0
        The seed of that split, independent of ``seed``: every rule and every
        seed of one data set hold out the same samples.
    init_from : str, default ""
        A results folder whose W and B start the network instead of the
        seed's draw (``sims.transfer``: a circuit run's final weights or
        another MLP run's last checkpoint; its biases too, zeros from a
        circuit); the rule's initial phase (WM's mirror, KP's mirror start)
        is then skipped, so the B that came with the weights is kept. MLPs
        only.

    Build one with :meth:`from_dict` / :func:`resolve` (every key checked),
    change it with :meth:`updated`, write it with :meth:`to_dict` /
    :func:`weightmirror.results.write_config`. Fields are read as attributes: ``cfg.optim.lr``,
    ``cfg.run.eval_batch_size``, ``cfg.wm.sigma``.
    """

    rule: str = "bp"
    model: str = "mlp"
    data: str = "digits"
    data_dir: str = ""
    epochs: int = 20
    batch_size: int = 128
    seed: int = 0
    validation: float = 0.1
    validation_seed: int = 0
    device: str = "cpu"
    label: str = ""
    init_from: str = ""
    model_options: Mapping[str, Any] = field(default_factory=lambda: dict(MODEL_DEFAULTS["mlp"]))
    optim: OptimConfig = field(default_factory=OptimConfig)
    bp: Backprop = field(default_factory=lambda: _rule_section("bp", {}))
    wm: WeightMirror = field(default_factory=lambda: _rule_section("wm", {}))
    kp: KolenPollack = field(default_factory=lambda: _rule_section("kp", {}))
    ss: SignSymmetry = field(default_factory=lambda: _rule_section("ss", {}))
    run: RunConfig = field(default_factory=RunConfig)

    SECTIONS = ("model_options", "optim", "bp", "wm", "kp", "ss", "run")

    def __post_init__(self):
        checks.choice(self.rule, RULE_NAMES, "config key rule", ConfigError)
        checks.choice(self.model, MODEL_NAMES, "config key model", ConfigError)
        checks.choice(self.data, DATASETS, "config key data", ConfigError)
        checks.string(self.data_dir, "config key data_dir", ConfigError)
        checks.string(self.init_from, "config key init_from", ConfigError)
        if self.init_from and self.model != "mlp":
            raise ConfigError(f"init_from: only an MLP starts from another run's weights (model is {self.model!r})")
        checks.integer(self.epochs, "config key epochs", ConfigError, low=1, high=1_000_000)
        checks.integer(self.batch_size, "config key batch_size", ConfigError, low=1)
        checks.integer(self.seed, "config key seed", ConfigError, low=0)
        object.__setattr__(self, "validation", checks.number(self.validation, "config key validation",
                                                             ConfigError, **_RANGES["validation"]))
        checks.integer(self.validation_seed, "config key validation_seed", ConfigError, low=0)
        checks.choice(self.device, DEVICES, "config key device", ConfigError)
        checks.string(self.label, "config key label", ConfigError)
        if self.optim.warmup_epochs > self.epochs:
            raise ConfigError(f"config key optim.warmup_epochs: must be <= epochs ({self.epochs}), "
                              f"got {self.optim.warmup_epochs:g}")
        check_model_options(self.model, dict(self.model_options))
        object.__setattr__(self, "model_options", dict(self.model_options))
        rule = self.make_rule()
        if rule.key == "kp" and rule.feedback_init != "mirror" and self.optim.weight_decay == 0 and \
                rule.decay_total == 0 and rule.decay == 0:
            raise ConfigError("rule kp needs a decay to align B with W: set kp.decay_total, kp.decay "
                              "or optim.weight_decay > 0")

    # -- derived ---------------------------------------------------------------
    def make_rule(self) -> LearningRule:
        """The rule object named by ``rule`` with its section's parameters."""
        section = _section_of(self.rule)
        if section is None:
            return make_rule(self.rule)
        params = getattr(self, section).params()
        if section == "ss":
            params.pop("magnitude", None)
            if self.rule != "ss":  # usf/brsf/frsf: the magnitude is fixed by the name
                return make_rule(self.rule, **params)
            return make_rule("ss", magnitude=self.ss.magnitude)
        return make_rule(self.rule, **params)

    @property
    def run_label(self) -> str:
        """How figures and tables name this run: ``label``, else the rule."""
        return self.label or self.make_rule().key

    # -- conversion --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A nested dict of plain values (every parameter), as written to ``config.toml``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "model_options":
                out[f.name] = copy.deepcopy(dict(value))
            elif f.name in RULE_SECTIONS:
                out[f.name] = value.params()
            elif dataclasses.is_dataclass(value):
                out[f.name] = {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in dataclasses.asdict(value).items()}
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None) -> "TrainConfig":
        """Defaults updated by ``values`` (config-key form), every key and value checked."""
        return resolve(values)

    @classmethod
    def from_file(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "TrainConfig":
        """Defaults, then the TOML file at ``path``, then ``overrides``; checked."""
        return resolve(read_file(path), overrides)

    def updated(self, overrides: Mapping[str, Any] | None = None, **more: Any) -> "TrainConfig":
        """A copy with ``overrides`` (config-key form, nested tables merged) applied and checked."""
        return resolve(self.to_dict(), {**(overrides or {}), **more})


def _merge(base: dict, override: Mapping[str, Any], where: str = "") -> dict:
    """``base`` updated by ``override``, tables merged key by key (a new dict)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(file_values: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults, then ``file_values`` (a parsed TOML file), then ``overrides``; checked.

    Overrides whose value is ``None`` are ignored (an unset flag). Model
    options are those the file and overrides give on top of
    :data:`MODEL_DEFAULTS` of the chosen model; an option the model does not
    take is refused (``models.zoo.check_model_options``).

    Raises
    ------
    ConfigError
        For an unknown key or a bad value; the message names the key.
    """
    values = _merge(dict(file_values or {}), {k: v for k, v in (overrides or {}).items() if v is not None})
    top = [f.name for f in dataclasses.fields(TrainConfig)]
    for key, value in values.items():
        if key not in top:
            raise ConfigError(f"unknown config key {key!r}; allowed here: {', '.join(top)}")
        if key in TrainConfig.SECTIONS and not isinstance(value, Mapping):
            raise ConfigError(f"config key {key}: expected a table [{key}], got {value!r}")
    hints = typing.get_type_hints(TrainConfig)
    scalars = {key: checks.number(values[key], f"config key {key}", ConfigError, **_RANGES[key]) if key in _RANGES
               else checks.typed(values[key], hints[key], f"config key {key}", ConfigError)
               for key in top if key in values and key not in TrainConfig.SECTIONS}
    model = scalars.get("model", TrainConfig.model)
    checks.choice(model, MODEL_NAMES, "config key model", ConfigError)
    options = {**MODEL_DEFAULTS.get(model, {}), **dict(values.get("model_options", {}))}
    sections = {
        "optim": checks.from_table(OptimConfig, dict(values.get("optim", {})), "config key optim", ConfigError),
        "run": checks.from_table(RunConfig, dict(values.get("run", {})), "config key run", ConfigError),
    }
    for name in RULE_SECTIONS:
        sections[name] = _rule_section(name, dict(values.get(name, {})))
    return TrainConfig(**scalars, model_options=options, **sections)


#: top-level keys added after a version wrote run configs -> the value that version trained with
_ADDED_KEYS: dict[str, Any] = {"validation": 0.0, "validation_seed": 0}


def as_written_run(values: Mapping[str, Any]) -> dict[str, Any]:
    """A run's own ``config.toml`` values, with any key added since it was written set as that run had it.

    A run's config is written in full, so a key it lacks is younger than
    the run: ``validation`` (0.2.0 and earlier trained on the whole training
    set) becomes 0, so that a resumed run keeps training on what it trained on.
    """
    return {**_ADDED_KEYS, **dict(values)}


def read_file(path: str | Path) -> dict[str, Any]:
    """A config file's values (not yet resolved); one ConfigError line if it cannot be read."""
    return tomlfile.read(path, ConfigError)
