"""The model registry: one name per architecture, the learning rule injected.

``build_model(name, input_shape, num_classes, rule, xp, rng, **options)``
returns a ``models.layers.Network`` with feedback weights initialised by the
rule. ``net.input_shape`` is the shape of one sample the network expects:
``(C·H·W,)`` for ``mlp`` (flattened images), ``(C, H, W)`` for the convolutional
networks; a trainer feeds ``x.reshape(len(x), *net.input_shape)``.

Names and their options:

``mlp``       hidden=[...] (default [256]), activation="relu"|"tanh"|"sigmoid"
``convnet``   channels=(32, 64), hidden=128, batchnorm=False
``resnet20``  zero_init_residual=False
``resnet18``  stem="imagenet"|"cifar", zero_init_residual=False
``resnet50``  stem="imagenet"|"cifar", zero_init_residual=False

``MODEL_NAMES`` is the one list of names; ``check_model_options(name,
options)`` checks a config's ``[model_options]`` table against them
(``ModelOptionError``, an ``InputError``, naming the key).
"""
from __future__ import annotations

import inspect
from math import prod

from .. import checks
from ..errors import InputError
from .layers import ACTIVATION_NAMES
from .mlp import build_mlp
from .resnet import build_convnet, build_resnet, build_resnet20

__all__ = ["MODEL_NAMES", "ModelOptionError", "build_model", "model_options", "check_model_options"]


class ModelOptionError(InputError):
    """A model option (a key of a config's ``[model_options]``) is unknown or has a bad value."""


def _mlp(input_shape, num_classes, rule, xp, rng, hidden=(256,), activation: str = "relu"):
    if isinstance(hidden, int):
        hidden = [hidden]
    n_in = int(prod(int(v) for v in input_shape))
    net = build_mlp([n_in, *[int(h) for h in hidden], int(num_classes)], rule, xp, rng, activation=activation)
    net.input_shape = (n_in,)
    return net


def _resnet18(input_shape, num_classes, rule, xp, rng, stem="imagenet", zero_init_residual=False):
    return build_resnet(18, input_shape, num_classes, rule, xp, rng, stem=stem,
                        zero_init_residual=zero_init_residual)


def _resnet50(input_shape, num_classes, rule, xp, rng, stem="imagenet", zero_init_residual=False):
    return build_resnet(50, input_shape, num_classes, rule, xp, rng, stem=stem,
                        zero_init_residual=zero_init_residual)


_BUILDERS = {
    "mlp": _mlp,
    "convnet": build_convnet,
    "resnet20": build_resnet20,
    "resnet18": _resnet18,
    "resnet50": _resnet50,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
_FIXED = ("input_shape", "num_classes", "rule", "xp", "rng")


def model_options(name: str) -> tuple[str, ...]:
    """The options ``build_model`` accepts for model ``name``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    return tuple(p for p in inspect.signature(_BUILDERS[name]).parameters if p not in _FIXED)


def build_model(name: str, input_shape, num_classes: int, rule, xp, rng, **options):
    """Build model ``name`` for samples of ``input_shape`` and ``num_classes``.

    Raises ``ValueError`` naming the allowed models, or the allowed options.
    """
    allowed = model_options(name)
    for key in options:
        if key not in allowed:
            raise ValueError(f"model {name}: unknown option {key!r}; allowed: {', '.join(allowed) or 'none'}")
    if int(num_classes) < 1:
        raise ValueError(f"model {name}: num_classes must be >= 1, got {num_classes}")
    return _BUILDERS[name](tuple(input_shape), int(num_classes), rule, xp, rng, **options)


def _int_list(value, what):
    checks.int_list(value, what, ModelOptionError, low=1)


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelOptionError(f"{what}: expected an integer >= 1, got {value!r}")


def _true_or_false(value, what):
    if not isinstance(value, bool):
        raise ModelOptionError(f"{what}: expected true or false, got {value!r}")


def _one_of(allowed):
    return lambda value, what: checks.choice(value, allowed, what, ModelOptionError)


#: model -> option -> check(value, what): every option ``model_options(name)`` lists
_OPTION_CHECKS = {
    "mlp": {"hidden": _int_list, "activation": _one_of(ACTIVATION_NAMES)},
    "convnet": {"channels": _int_list, "hidden": _positive_int, "batchnorm": _true_or_false},
    "resnet20": {"zero_init_residual": _true_or_false},
    "resnet18": {"stem": _one_of(("imagenet", "cifar")), "zero_init_residual": _true_or_false},
    "resnet50": {"stem": _one_of(("imagenet", "cifar")), "zero_init_residual": _true_or_false},
}


def check_model_options(name: str, options: dict) -> None:
    """Check a config's ``[model_options]`` table for model ``name``.

    Every key must be an option of the model's builder (``model_options``),
    and each value must be usable:

    - ``mlp``: ``hidden`` a list of integers >= 1, ``activation`` one of
      ``layers.ACTIVATION_NAMES``;
    - ``convnet``: ``channels`` a list of integers >= 1, ``hidden`` an
      integer >= 1, ``batchnorm`` true or false;
    - ``resnet18``/``resnet50``: ``stem`` ``"imagenet"`` or ``"cifar"``;
    - the ResNets: ``zero_init_residual`` true or false.

    Options left out take the builder's defaults. Returns None.

    Raises
    ------
    ModelOptionError
        One line naming the key, e.g. ``unknown config key
        'model_options.depth' for model resnet18; allowed: stem,
        zero_init_residual`` or ``config key model_options.hidden: expected
        a list of integers >= 1, got [10, 0]``; also for an unknown model.
    """
    checks.choice(name, MODEL_NAMES, "model", ModelOptionError)
    if not isinstance(options, dict):
        raise ModelOptionError(f"config key model_options: expected a table, got {options!r}")
    allowed = model_options(name)
    for key, value in options.items():
        if key not in allowed:
            raise ModelOptionError(f"unknown config key 'model_options.{key}' for model {name}; "
                                   f"allowed: {', '.join(allowed) or 'none'}")
        _OPTION_CHECKS[name][key](value, f"config key model_options.{key}")
