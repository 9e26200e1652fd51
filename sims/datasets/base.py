"""What every data-set reader shares: the error type, the in-memory data set, standardisation.

:class:`DataError` is the one error of every reader under
``weightmirror.sims.datasets``; :class:`Dataset` is what the in-memory readers
(digits, MNIST / Fashion-MNIST, CIFAR-10, downsampled ImageNet) return.  The
small helpers here (reading a whole file, checking a directory, checking
labels) turn problems with the files on disk into a :class:`DataError` whose
message is one line, ``"<path>: <what is wrong>"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from weightmirror.errors import InputError

from .split import stratified_split

__all__ = [
    "DataError",
    "Dataset",
    "standardise",
    "iterate_minibatches",
]

PathLike = Union[str, "os.PathLike[str]"]


class DataError(InputError):
    """A data file or directory is missing, malformed or inconsistent.

    The message is a single line of the form ``"<file>: <what is wrong>"``.
    """


@dataclass
class Dataset:
    """A train/test split of an image classification data set.

    Attributes
    ----------
    name : str
        Canonical data set name (e.g. ``"fashion-mnist"``).
    x_train, x_test : np.ndarray
        float32 images, either ``(N, C, H, W)`` or flattened ``(N, C*H*W)``.
    y_train, y_test : np.ndarray
        int64 class labels in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes.
    image_shape : tuple of int
        ``(C, H, W)`` of one image, whether or not ``x`` is flattened.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple[int, int, int]

    @property
    def input_size(self) -> int:
        """Number of input features per image, ``C * H * W``."""
        return int(prod(self.image_shape))

    def validation_split(self, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(train_idx, val_idx)``: the training set split by :func:`.split.stratified_split`.

        Sorted indices into ``x_train`` / ``y_train``; the validation part is
        held out from training, the test set is untouched.
        """
        return stratified_split(self.y_train, fraction, seed)

    def held_out(self, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of the validation part of the training set (copies, in index order)."""
        _, val_idx = self.validation_split(fraction, seed)
        return self.x_train[val_idx], self.y_train[val_idx]


# --------------------------------------------------------------------------
# Shared readers and checks
# --------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """Read a whole file, turning OS errors into :class:`DataError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _require_dir(path: Path, expected: str) -> None:
    """Raise :class:`DataError` unless ``path`` is a directory (``expected`` says what it should hold)."""
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "directory not found"
        raise DataError(f"{path}: {what}; expected {expected}")


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    """Raise :class:`DataError` unless ``labels`` are 1-D integers in ``0..num_classes - 1``."""
    if labels.ndim != 1:
        raise DataError(f"{path}: expected a 1-D label array, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected integer labels, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels must be in 0..{num_classes - 1}, "
            f"found values {int(labels.min())}..{int(labels.max())}"
        )


# --------------------------------------------------------------------------
# Standardisation and minibatches
# --------------------------------------------------------------------------


def standardise(
    x_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardise ``(N, C, H, W)`` images per channel with training statistics.

    Parameters
    ----------
    x_train, x_test : np.ndarray
        Images of shape ``(N, C, H, W)``.

    Returns
    -------
    x_train, x_test : np.ndarray
        float32 arrays of the same shapes; ``x_train`` has mean 0 and
        standard deviation 1 in each channel (a constant channel is only
        centred).
    mean, std : np.ndarray
        The per-channel statistics, shape ``(C,)``, float64.
    """
    mean = x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x_train.std(axis=(0, 2, 3), dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    m = mean.astype(np.float32)[None, :, None, None]
    s = std.astype(np.float32)[None, :, None, None]
    return (
        ((x_train - m) / s).astype(np.float32, copy=False),
        ((x_test - m) / s).astype(np.float32, copy=False),
        mean,
        std,
    )


def iterate_minibatches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: Optional[np.random.Generator] = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over ``(x, y)`` in minibatches, one pass (epoch).

    Parameters
    ----------
    x, y : np.ndarray
        Inputs and targets with the same first dimension.
    batch_size : int
        Samples per batch (positive).  The last batch is smaller unless
        ``drop_last``.
    rng : np.random.Generator, optional
        If given, the samples are visited in the order of
        ``rng.permutation(len(x))``; otherwise in order (batches are then
        views, not copies).
    drop_last : bool, optional
        Skip a final batch smaller than ``batch_size``.

    Yields
    ------
    xb, yb : np.ndarray
        One minibatch.

    Raises
    ------
    ValueError
        If the lengths differ or ``batch_size`` is not positive (raised at
        call time, not at the first ``next``).
    TypeError
        If ``rng`` is not a ``np.random.Generator``.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}"
        )
    order = rng.permutation(n) if rng is not None else None
    stop = (n // batch_size) * batch_size if drop_last else n

    def _gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, n)
            if order is None:
                yield x[start:end], y[start:end]
            else:
                idx = order[start:end]
                yield x[idx], y[idx]

    return _gen()
