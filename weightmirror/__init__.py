"""weightmirror: learning without weight transport, in neuron circuits and on arrays.

A simulator of the weight mirror and Kolen-Pollack mechanisms (Akrout et al.,
"Deep Learning without Weight Transport", NeurIPS 2019) beside backprop,
feedback alignment and sign symmetry, in two modes that share one set of
learning rules:

``weightmirror.circuits``
    the learning rules (``circuits.rules``), the circuit declaration
    (``circuits.spec``) and its Brian2 build (``circuits.brian``);
``weightmirror.models``
    rate mode on arrays (NumPy or CuPy): layers, MLPs, ResNets, the optimiser;
``weightmirror.sims``
    what a user runs: configuration, data sets, training, circuit runs, the CLI;
``weightmirror.figures``
    figures from saved results folders.
"""
__version__ = "0.2.0"

from pathlib import Path as _Path

# Installed, the subpackages sit inside this folder. In a source checkout they
# are its sibling folders circuits/, models/, sims/, figures/ (pyproject maps
# them under ``weightmirror``): let code run from a checkout find them too,
# with or without an editable install.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "sims" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - the package's own __path__
del _checkout

# The public names, each from the module that owns it. They are imported on
# first use (PEP 562), so ``import weightmirror`` stays light (no Brian2, no
# matplotlib) and ``weightmirror --version`` is instant.
_EXPORTS = {
    # run, read back, build (weightmirror.api)
    "train": "weightmirror.api",
    "simulate": "weightmirror.api",
    "load_run": "weightmirror.api",
    "build_circuit": "weightmirror.api",
    "Run": "weightmirror.results",
    # declarations
    "TrainConfig": "weightmirror.sims.config",
    "CircuitSpec": "weightmirror.circuits.spec",
    "NeuronModel": "weightmirror.circuits.spec",
    "Noise": "weightmirror.circuits.spec",
    "Phases": "weightmirror.circuits.spec",
    # the learning rules, written once for both modes
    "make_rule": "weightmirror.circuits.rules",
    "RULE_NAMES": "weightmirror.circuits.rules",
    "LearningRule": "weightmirror.circuits.rules",
    "Backprop": "weightmirror.circuits.rules",
    "FeedbackAlignment": "weightmirror.circuits.rules",
    "SignSymmetry": "weightmirror.circuits.rules",
    "WeightMirror": "weightmirror.circuits.rules",
    "KolenPollack": "weightmirror.circuits.rules",
    "angle_degrees": "weightmirror.circuits.rules",
    # rate mode, piece by piece
    "load_dataset": "weightmirror.sims.datasets:load",
    "Dataset": "weightmirror.sims.datasets",
    "get_array_module": "weightmirror.models.backend",
    "make_rng": "weightmirror.models.backend",
    "use_gpu_options": "weightmirror.models.backend",
    "build_model": "weightmirror.models.zoo",
    "build_network": "weightmirror.sims.training",
    "softmax_cross_entropy": "weightmirror.models.layers",
    "SGD": "weightmirror.models.optim",
    "Schedule": "weightmirror.models.optim",
    "train_step": "weightmirror.sims.training",
    "Trainee": "weightmirror.sims.training",
    "feedback_angles": "weightmirror.sims.training.metrics",
    "delta_angles": "weightmirror.sims.training.metrics",
    # errors
    "InputError": "weightmirror.errors",
    "DivergedError": "weightmirror.sims.training",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'weightmirror' has no attribute {name!r}")
    import importlib

    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr or name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
