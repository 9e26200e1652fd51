"""The model registry: one name per architecture, the learning rule injected.

``build_model(name, input_shape, num_classes, rule, xp, rng, **options)``
returns a ``models.layers.Network`` with feedback weights initialised by the
rule. ``net.input_shape`` is the shape of one sample the network expects:
``(C·H·W,)`` for ``mlp`` (flattened images), ``(C, H, W)`` for the convolutional
networks; a trainer feeds ``x.reshape(len(x), *net.input_shape)``.

Names and their options:

``mlp``       hidden=[...] (default [256]), activation="relu"|"tanh"|"sigmoid"
``convnet``   channels=(32, 64), hidden=128
``resnet20``  zero_init_residual=False
``resnet18``  stem="imagenet"|"cifar", zero_init_residual=False
``resnet50``  stem="imagenet"|"cifar", zero_init_residual=False
"""
from __future__ import annotations

import inspect
from math import prod

from .mlp import build_mlp
from .resnet import build_convnet, build_resnet, build_resnet20

__all__ = ["MODEL_NAMES", "build_model", "model_options"]


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
