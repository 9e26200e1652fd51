"""Weights that travel between rate mode and circuit mode (``--init-from``).

A **rate-mode run** (``weightmirror train``) keeps its network in
``checkpoint.npz``: per weight layer ``net.<i>.W`` (``(n_out, n_in)``),
``net.<i>.b`` and ``net.<i>.B`` (W's layout, the paper's ``Bᵀ``). A **circuit
run** (``weightmirror circuit``) writes ``weights_final.npz``: ``W1, B1, W2,
B2, ...`` in the same layout. :func:`read_weights` reads either as
``Weights``; ``weightmirror circuit --init-from DIR`` starts a circuit from
them and ``weightmirror train --init-from DIR`` (MLPs) a network. The
circuit's units have no biases: a rate run's biases are carried through a
mirror-phase circuit unchanged (``b1, b2, ...`` in its ``weights_*.npz``, not
simulated), so the network comes back whole; a network started from a circuit
that had none starts with zero biases; a circuit that learns (engaged mode)
is refused a network whose biases are not zero. W and B are copied exactly (float32 values
are exact in the circuit's float64; a circuit's float64 values are rounded to
float32 once in rate mode).

One declaration, two modes: :func:`circuit_config_for` writes a rate-mode MLP
configuration as a circuit declaration (``weightmirror circuit --config``
reads it), and ``sims.circuit.rate_network`` / ``rate_reference`` run a
``CircuitSpec`` on the rate-mode engine; ``CircuitSpec.modes``
(``circuits.spec.ModeMapping``) is the one mapping of rule parameters
between them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import results
from ..errors import InputError

__all__ = ["Weights", "TransferError", "read_weights", "circuit_config_for"]


class TransferError(InputError):
    """A folder whose weights cannot be taken (no such run, not an MLP, damaged files)."""


@dataclass
class Weights:
    """``layers``: ``[(W, B)]`` per weight layer in W's layout (float64); ``biases``: per layer, or None
    (a circuit run that carried none); ``sizes``: ``[n_0, ..., n_L]``; ``source``: ``"train"`` or ``"circuit"``; ``path``."""

    layers: list[tuple[np.ndarray, np.ndarray]]
    biases: list[np.ndarray] | None
    sizes: list[int]
    source: str
    path: Path


def _sizes(layers, where: Path) -> list[int]:
    sizes = [layers[0][0].shape[1]]
    for l, (W, B) in enumerate(layers, 1):
        if W.shape != B.shape or W.ndim != 2 or W.shape[1] != sizes[-1]:
            raise TransferError(f"{where}: layer {l}'s W {W.shape} and B {B.shape} do not chain into an MLP")
        sizes.append(W.shape[0])
    return sizes


def read_weights(folder) -> Weights:
    """The W, B (and biases) of a training run's last checkpoint or a circuit run's final weights.

    Raises
    ------
    TransferError
        the folder is not there, holds neither kind of run, is a training run
        of a model other than the MLP, or its files are damaged.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TransferError(f"--init-from {folder}: no such results folder")
    if (folder / "weights_final.npz").is_file():
        try:
            arrays = results.load_arrays(folder / "weights_final.npz")
        except results.ResultsError as exc:
            raise TransferError(f"--init-from: {exc}") from None
        n = sum(1 for k in arrays if re.fullmatch(r"W\d+", k))
        try:
            layers = [(np.asarray(arrays[f"W{l}"], np.float64), np.asarray(arrays[f"B{l}"], np.float64))
                      for l in range(1, n + 1)]
        except KeyError as exc:
            raise TransferError(f"--init-from {folder}: weights_final.npz lacks {exc.args[0]}") from None
        if not layers:
            raise TransferError(f"--init-from {folder}: weights_final.npz holds no W1, B1, ...")
        biases = None
        if "b1" in arrays:  # a rate-mode network's biases, carried through the circuit unchanged
            try:
                biases = [np.asarray(arrays[f"b{l}"], np.float64) for l in range(1, n + 1)]
            except KeyError as exc:
                raise TransferError(f"--init-from {folder}: weights_final.npz lacks {exc.args[0]}") from None
            if [b.shape for b in biases] != [(W.shape[0],) for W, _ in layers]:
                raise TransferError(f"--init-from {folder}: its biases do not fit its layers")
        return Weights(layers, biases, _sizes(layers, folder), "circuit", folder)
    checkpoint = folder / results.CHECKPOINT
    if not checkpoint.is_file():
        raise TransferError(f"--init-from {folder}: neither a circuit run (weights_final.npz) nor a training "
                            f"run with a checkpoint ({results.CHECKPOINT})")
    try:
        config = results.read_config(folder)
        arrays = results.load_arrays(checkpoint)
    except results.ResultsError as exc:
        raise TransferError(f"--init-from: {exc}") from None
    if config.get("model") != "mlp":
        raise TransferError(f"--init-from {folder}: a {config.get('model')!r} run; only an MLP's weights have a "
                            "circuit form (one population per layer)")
    index = sorted({int(m.group(1)) for k in arrays if (m := re.fullmatch(r"net\.(\d+)\.W", k))})
    try:
        layers = [(np.asarray(arrays[f"net.{i}.W"], np.float64), np.asarray(arrays[f"net.{i}.B"], np.float64))
                  for i in index]
        biases = [np.asarray(arrays[f"net.{i}.b"], np.float64) for i in index]
    except KeyError as exc:
        raise TransferError(f"--init-from {checkpoint}: lacks {exc.args[0]}") from None
    if not layers:
        raise TransferError(f"--init-from {checkpoint}: holds no weight layer")
    return Weights(layers, biases, _sizes(layers, folder), "train", folder)


#: the data sets circuit mode reads, with their input size and classes
_CIRCUIT_DATA = {"digits": (64, 10), "fashion-mnist": (784, 10)}


def circuit_config_for(cfg) -> dict:
    """A rate-mode MLP configuration as a circuit declaration (a dict in ``circuit.toml`` form).

    What carries over: the architecture (``[n_in, *hidden, n_classes]``, one
    population per layer), the hidden nonlinearity (ReLU; ``linear`` has no
    rate-mode twin), the rule's name, the data set, the seed and the He
    initialisation. What does not, by construction: biases (circuit units have
    none), the optimiser (a circuit learns online, one presentation per step,
    on ``½‖y_L - t‖²``), and the rule's rate-mode parameters (the circuit takes
    its rule's circuit defaults, ``CIRCUIT_RULE_REGISTRY``; ``CircuitSpec.modes``
    says how they read per simulated second). ``sims.circuit.resolve_spec``
    turns the result into a ``CircuitSpec``.

    Raises
    ------
    TransferError
        the model is not an MLP, its activation or rule has no circuit form,
        or its data set is not one circuit mode reads.
    """
    from ..circuits.spec import CIRCUIT_RULES

    if cfg.model != "mlp":
        raise TransferError(f"model {cfg.model!r} has no circuit form; only an MLP (one population per layer)")
    activation = cfg.model_options.get("activation", "relu")
    if activation != "relu":
        raise TransferError(f"activation {activation!r} has no circuit form; circuit units are ReLU (or linear)")
    if cfg.rule not in CIRCUIT_RULES:
        raise TransferError(f"rule {cfg.rule!r} has no circuit form; allowed: {', '.join(CIRCUIT_RULES)}")
    if cfg.data not in _CIRCUIT_DATA:
        raise TransferError(f"data {cfg.data!r} is not read by circuit mode; allowed: {', '.join(_CIRCUIT_DATA)}")
    n_in, n_out = _CIRCUIT_DATA[cfg.data]
    hidden = [int(h) for h in cfg.model_options.get("hidden", [])]
    return {"layers": [n_in, *hidden, n_out], "rule": {"name": cfg.rule}, "data": cfg.data, "seed": int(cfg.seed),
            "init": "he", "neuron": {"activation": "relu"}}
