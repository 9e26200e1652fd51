"""Multilayer perceptron of any depth, with the learning rule injected."""
from __future__ import annotations

from .layers import ACTIVATIONS, Linear, Network


def build_mlp(sizes: list[int], rule, xp, rng, activation: str = "relu") -> Network:
    """``sizes = [n_in, h_1, ..., n_out]``: Linear layers with ``activation``
    between them and none after the last (the loss applies the softmax).

    Weights are He-initialised for ReLU, LeCun for tanh and sigmoid; the
    rule then sets each layer's feedback weights.
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"MLP sizes must be >= 1 and at least two, got {sizes}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    init = "he" if activation == "relu" else "lecun"
    modules = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = Linear(int(n_in), int(n_out), xp, rng, init=init)
        modules.append(layer)
        if i < len(sizes) - 2:
            # the Linear output is used by nothing else: rectify it in place
            act = ACTIVATIONS[activation](inplace=True) if activation == "relu" else ACTIVATIONS[activation]()
            layer.mirror_activation = act
            modules.append(act)
    net = Network(modules, rule, xp)
    net.init_feedback(rng)
    return net
