"""Training configuration: defaults, TOML files, command-line overrides, validation.

A config is a nested dict, written in full to each run's ``config.toml``::

    rule = "wm"              # bp, fa, ss, usf, brsf, frsf, wm, kp
    model = "mlp"
    data = "digits"          # digits, mnist, fashion-mnist, cifar10, imagenet32/64, imagenet (JPEG folders)
    data_dir = ""            # "" = the data set's default location
    epochs = 20
    batch_size = 128
    seed = 0
    device = "cpu"           # cpu, cuda

    [model_options]          # per model; mlp: hidden, activation
    [optim]                  # lr, momentum, nesterov, weight_decay, schedule, ...
    [wm] / [kp] / [ss]       # the learning rules' parameters (circuits.rules)
    [run]                    # evaluation, checkpoints, ImageNet decoding, data parallel

The ``[run]`` keys:

``eval_batch_size``
    samples per evaluation batch (the whole test/val set is evaluated);
``delta_batch_size``
    training samples on which angle(δ, δ_BP) is measured;
``checkpoint_every``
    epochs between checkpoints (the last epoch is always checkpointed);
``checkpoint_every_steps``
    also checkpoint every that many training steps, mid-epoch included
    (0: only at epoch ends); an interruption checkpoints at its step anyway;
``image_size``
    side of the square crops of ``data = "imagenet"`` (the JPEG folder layout);
``workers``
    decoding processes of the ImageNet folder reader (0: decode in-process);
``distributed``
    data parallel over the ranks of an MPI launch (``mpirun -n K``): one
    process per device, the global ``batch_size`` split across ranks;
``tf32``
    on a GPU, let float32 matrix products and cuDNN convolutions use TF32
    tensor cores (PyTorch's default for convolutions; off: float32 throughout);
``conv_algorithm``
    how GPU convolutions run: ``auto`` (the faster of im2col + cuBLAS and
    cuDNN, measured per layer geometry), ``im2col`` or ``cudnn``.

Every key is checked on load: an unknown key or a bad value raises
``ConfigError`` with one line naming the key and what is allowed.
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from ..errors import InputError

from weightmirror.circuits import rules as rules_mod
from weightmirror.models.backend import DEVICES
from weightmirror.models.conv import CONV_ALGORITHMS
from weightmirror.models.optim import SCHEDULES

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "imagenet", "imagenet32", "imagenet64")
MODELS = ("mlp", "convnet", "resnet20", "resnet18", "resnet50")
ACTIVATIONS = ("relu", "tanh", "sigmoid")


class ConfigError(InputError):
    """A configuration key or value is not allowed."""


def _rule_defaults(name: str) -> dict[str, Any]:
    rule = rules_mod.make_rule(name)
    return {k: v for k, v in rule.params().items() if k in rules_mod.rule_parameter_names(name)}


DEFAULTS: dict[str, Any] = {
    "rule": "bp",
    "model": "mlp",
    "data": "digits",
    "data_dir": "",
    "epochs": 20,
    "batch_size": 128,
    "seed": 0,
    "device": "cpu",
    "model_options": {},
    "optim": {
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "warmup_epochs": 0.0,
        "milestones": [],
        "gamma": 0.1,
        "final_fraction": 0.0,
        "label_smoothing": 0.0,
    },
    # Rate-mode training: on average 16 uniform noise samples per step, as one
    # mirror batch of 64 at a random quarter of the steps (η_B = λ_B = 0.002 per
    # batch); as accurate as 32 Gaussian samples every step, and cheaper (BENCHMARKS.md)
    "wm": {**_rule_defaults("wm"), "noise": "uniform", "mirror_batch_size": 64, "mirror_batches": 0.25,
           "lr": 0.002, "decay": 0.002},
    # KP's feedback synapses start silent, and its own decay is confined to the
    # first quarter of training: it wipes out W₀ - B₀ᵀ there and leaves W free to
    # grow afterwards (see BENCHMARKS.md §1)
    "kp": {**_rule_defaults("kp"), "weight_decay": 0.15, "decay_until": 0.25, "feedback_init": "zero"},
    "ss": _rule_defaults("ss"),
    "run": {
        "eval_batch_size": 1000,
        "delta_batch_size": 256,
        "checkpoint_every": 1,
        "checkpoint_every_steps": 0,
        "image_size": 224,
        "workers": 4,
        "distributed": False,
        "tf32": False,
        "conv_algorithm": "auto",
    },
}

#: default [model_options] per model (the builders' own defaults otherwise)
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"mlp": {"hidden": [500, 500], "activation": "relu"}}


def _model_options() -> dict[str, tuple[str, ...]]:
    from weightmirror.models.zoo import model_options

    return {name: model_options(name) for name in MODELS}


#: model -> allowed keys of [model_options] (the builders' own keyword arguments)
MODEL_OPTIONS: dict[str, tuple[str, ...]] = _model_options()


def _type_name(t) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}[t]


def _check_value(path: str, value, default):
    """The value's type must match the default's (ints are accepted for floats)."""
    t = type(default)
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if t is bool and not isinstance(value, bool):
        raise ConfigError(f"config key {path}: expected true/false, got {value!r}")
    if t is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"config key {path}: expected an integer, got {value!r}")
    if t is not bool and t is not int and not isinstance(value, t):
        raise ConfigError(f"config key {path}: expected {_type_name(t)}, got {value!r}")
    return value


def merge(base: dict, override: dict, where: str = "") -> dict:
    """``base`` updated by ``override``; unknown keys are a ConfigError."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{where}{key}"
        if key not in base:
            allowed = ", ".join(base)
            raise ConfigError(f"unknown config key {path!r}; allowed here: {allowed}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path}: expected a table [{path}], got {value!r}")
            if key == "model_options":  # per-model keys, checked in validate()
                out[key] = {**out[key], **value}
            else:
                out[key] = merge(base[key], value, f"{path}.")
        else:
            out[key] = _check_value(path, value, base[key])
    return out


def _choice(path: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config key {path}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _positive(path: str, value, strict: bool = True) -> None:
    if (value <= 0) if strict else (value < 0):
        raise ConfigError(f"config key {path}: must be {'> 0' if strict else '>= 0'}, got {value}")


def validate(cfg: dict) -> dict:
    """Check every value's range; returns cfg. Raises ConfigError."""
    _choice("rule", cfg["rule"], rules_mod.RULE_NAMES)
    _choice("model", cfg["model"], MODELS)
    _choice("data", cfg["data"], DATASETS)
    _choice("device", cfg["device"], DEVICES)
    _positive("epochs", cfg["epochs"])
    _positive("batch_size", cfg["batch_size"])
    if cfg["seed"] < 0:
        raise ConfigError(f"config key seed: must be >= 0, got {cfg['seed']}")
    _check_model_options(cfg["model"], cfg["model_options"])
    o = cfg["optim"]
    _positive("optim.lr", o["lr"])
    if not 0 <= o["momentum"] < 1:
        raise ConfigError(f"config key optim.momentum: must be in [0, 1), got {o['momentum']}")
    _positive("optim.weight_decay", o["weight_decay"], strict=False)
    _choice("optim.schedule", o["schedule"], SCHEDULES)
    _positive("optim.warmup_epochs", o["warmup_epochs"], strict=False)
    if not 0 <= o["label_smoothing"] < 1:
        raise ConfigError(f"config key optim.label_smoothing: must be in [0, 1), got {o['label_smoothing']}")
    if not all(isinstance(m, int) for m in o["milestones"]):
        raise ConfigError(f"config key optim.milestones: expected a list of integers, got {o['milestones']!r}")
    r = cfg["run"]
    for key in ("eval_batch_size", "delta_batch_size", "checkpoint_every", "image_size"):
        _positive(f"run.{key}", r[key])
    for key in ("checkpoint_every_steps", "workers"):
        _positive(f"run.{key}", r[key], strict=False)
    _choice("run.conv_algorithm", r["conv_algorithm"], CONV_ALGORITHMS)
    # the learning rules check their own parameters (every section, used or not)
    for section in ("wm", "kp", "ss"):
        try:
            rules_mod.make_rule(section, **cfg[section])
        except rules_mod.RuleError as exc:
            raise ConfigError(f"config section [{section}]: {exc}") from None
    rule = make_rule_from_config(cfg)
    if rule.key == "kp" and o["weight_decay"] == 0 and rule.weight_decay == 0 and rule.decay == 0:
        raise ConfigError("rule kp needs a decay to align B with W: set optim.weight_decay, "
                          "kp.weight_decay or kp.decay > 0")
    return cfg


def _check_model_options(model: str, options: dict) -> None:
    if model == "mlp":
        hidden = options.get("hidden", [])
        if not isinstance(hidden, list) or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ConfigError(f"config key model_options.hidden: expected a list of integers >= 1, got {hidden!r}")
        _choice("model_options.activation", options.get("activation", "relu"), ACTIVATIONS)
    if model in ("resnet18", "resnet50") and "stem" in options:
        _choice("model_options.stem", options["stem"], ("imagenet", "cifar"))
    for key in ("channels",):
        if key in options and not (isinstance(options[key], list) and all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in options[key])):
            raise ConfigError(f"config key model_options.{key}: expected a list of integers >= 1, got {options[key]!r}")
    if model == "convnet" and "batchnorm" in options and not isinstance(options["batchnorm"], bool):
        raise ConfigError(f"config key model_options.batchnorm: expected true or false, got {options['batchnorm']!r}")
    if model == "convnet" and "hidden" in options:
        h = options["hidden"]
        if not isinstance(h, int) or isinstance(h, bool) or h < 1:
            raise ConfigError(f"config key model_options.hidden: expected an integer >= 1, got {h!r}")


def _rule_section(name: str) -> str:
    return {"usf": "ss", "brsf": "ss", "frsf": "ss"}.get(name, name)


def make_rule_from_config(cfg: dict):
    """The rule object named by ``cfg['rule']`` with its section's parameters."""
    name = cfg["rule"]
    section = _rule_section(name)
    params = dict(cfg.get(section, {})) if section in ("wm", "kp", "ss") else {}
    if name in ("usf", "brsf", "frsf"):
        params.pop("magnitude", None)  # fixed by the variant's name
    return rules_mod.make_rule(name, **params)


def load_toml(path: str | Path) -> dict:
    """Read a TOML file; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None


def resolve(file_values: dict | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the file, then command-line overrides; validated."""
    cfg = merge(DEFAULTS, file_values or {})
    flat = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = merge(cfg, flat)
    # Options the user gave must suit the model; defaults of other models are dropped.
    given = dict((file_values or {}).get("model_options", {}))
    given.update(flat.get("model_options", {}))
    allowed = MODEL_OPTIONS.get(cfg["model"], ())
    for key in given:
        if key not in allowed:
            raise ConfigError(
                f"unknown config key 'model_options.{key}' for model {cfg['model']}; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
    cfg["model_options"] = {**MODEL_DEFAULTS.get(cfg["model"], {}), **given}
    return validate(cfg)
