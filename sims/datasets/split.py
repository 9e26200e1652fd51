"""The validation split: a stratified part of the training set, held out from training.

Defaults and tuned settings are chosen on the validation error, never on the
test error. The held-out part comes out of the *training* set (for the
ImageNet folders: out of ``train/``; ``val/`` stays the test set), so it is
disjoint from the test set by construction, and the training batches are
drawn from the rest only.

The rule (:func:`stratified_split`), for a fraction ``f`` in ``[0, 1)``:

* a class with ``n_c`` training samples contributes
  ``k_c = ⌊f·n_c + ½⌋`` samples (``f·n_c`` rounded, halves up), but
* at least 1 when ``f > 0`` and ``n_c ≥ 2``, and
* at most ``n_c − 1`` (a class never leaves the training part entirely;
  for ``f ≤ 0.5``, the config's range, this bound never binds), and
* none when ``n_c < 2`` or ``f = 0``.

Which ``k_c`` samples: the first ``k_c`` of a permutation of the class's
sample indices (taken in ascending order), drawn from
``np.random.default_rng([VALIDATION_STREAM, seed, c])``: one stream per class,
so the split depends only on the labels, ``f`` and ``seed`` (the config's
``validation_seed``, not the run's ``seed``), and a class's held-out samples
do not depend on the other classes.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["VALIDATION_STREAM", "stratified_split", "validation_counts"]

#: first word of the split's generator seeds (keeps it apart from every other stream)
VALIDATION_STREAM = 0x7A11D


def _check(labels, fraction, seed) -> tuple[np.ndarray, float, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} of {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return labels.astype(np.int64, copy=False), float(fraction), int(seed)


def validation_counts(class_sizes, fraction: float) -> np.ndarray:
    """Held-out samples per class for classes of ``class_sizes`` samples (the module's rule)."""
    sizes = np.asarray(class_sizes, dtype=np.int64)
    out = np.zeros(sizes.shape, dtype=np.int64)
    if fraction <= 0:
        return out
    for i, n in enumerate(sizes.tolist()):
        if n >= 2:
            out[i] = min(max(math.floor(fraction * n + 0.5), 1), n - 1)
    return out


def stratified_split(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices ``0 .. len(labels) − 1`` into a training and a validation part.

    Parameters
    ----------
    labels : array of int
        The training set's class labels (``>= 0``), one per sample.
    fraction : float
        Fraction held out, in ``[0, 1)`` (the config allows ``[0, 0.5]``).
    seed : int
        The split's seed (``validation_seed``), ``>= 0``.

    Returns
    -------
    (train_idx, val_idx) : np.ndarray
        Sorted int64 indices; disjoint, together every sample. Per class the
        validation part holds the number of samples the module docstring's
        rule gives; ``fraction = 0`` gives ``(arange(n), [])``.
        Deterministic: the same labels, fraction and seed give the same split.
    """
    labels, fraction, seed = _check(labels, fraction, seed)
    n = len(labels)
    if fraction == 0 or n == 0:
        return np.arange(n, dtype=np.int64), np.empty(0, dtype=np.int64)
    classes, sizes = np.unique(labels, return_counts=True)
    counts = validation_counts(sizes, fraction)
    held = np.zeros(n, dtype=bool)
    by_class = np.argsort(labels, kind="stable")  # each class's indices in ascending order
    ends = np.cumsum(sizes)
    for c, k, end, size in zip(classes.tolist(), counts.tolist(), ends.tolist(), sizes.tolist()):
        if k == 0:
            continue
        members = by_class[end - size:end]
        rng = np.random.default_rng([VALIDATION_STREAM, seed, int(c)])
        held[members[rng.permutation(len(members))[:k]]] = True
    return np.flatnonzero(~held).astype(np.int64), np.flatnonzero(held).astype(np.int64)
