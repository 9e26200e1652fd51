"""Weights that travel between rate mode and circuit mode (``--init-from``).

A **rate-mode run** (``weightmirror train``) keeps its network in
``checkpoint.npz``: per weight layer ``net.<i>.W`` (``(n_out, n_in)``),
``net.<i>.b`` and ``net.<i>.B`` (W's layout, the paper's ``Bᵀ``). A **circuit
run** (``weightmirror circuit``) writes ``weights_final.npz``: ``W1, B1, W2,
B2, ...`` in the same layout. :func:`read_weights` reads either as
``Weights``; ``weightmirror circuit --init-from DIR`` starts a circuit from
them and ``weightmirror train --init-from DIR`` (MLPs) a network. The
circuit's units have no biases: a rate run's biases are dropped when its
weights enter a circuit (said in one line), and a network started from a
circuit starts with zero biases. W and B are copied exactly (float32 values
are exact in the circuit's float64; a circuit's float64 values are rounded to
float32 once in rate mode).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import results
from ..errors import InputError

__all__ = ["Weights", "TransferError", "read_weights"]


class TransferError(InputError):
    """A folder whose weights cannot be taken (no such run, not an MLP, damaged files)."""


@dataclass
class Weights:
    """``layers``: ``[(W, B)]`` per weight layer in W's layout (float64); ``biases``: per layer, or None
    (a circuit run); ``sizes``: ``[n_0, ..., n_L]``; ``source``: ``"train"`` or ``"circuit"``; ``path``."""

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
        return Weights(layers, None, _sizes(layers, folder), "circuit", folder)
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
