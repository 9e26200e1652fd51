"""Downsampled ImageNet (Chrabaszcz, Loshchilov and Hutter 2017): the ``.npz`` batches, in memory.

``train_data_batch_1.npz`` .. ``train_data_batch_10.npz`` and
``val_data.npz``, each with keys ``data`` (uint8 ``(N, 3*S*S)``, channel-major:
all red values, then green, then blue, each row-major) and ``labels``
(integers ``1..1000``), ``S`` = 8, 16, 32 or 64.  Read by
:func:`read_downsampled_batch` and :func:`load_downsampled_imagenet`.
Like CIFAR-10, the whole set is read into a
:class:`weightmirror.sims.datasets.Dataset`, standardised with the training
statistics.

Every problem with the files on disk is a
:class:`weightmirror.sims.datasets.DataError` with a one-line message
``"<path>: <what is wrong>"``.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..base import DataError, Dataset, PathLike, _require_dir

__all__ = [
    "read_downsampled_batch",
    "load_downsampled_imagenet",
]

DOWNSAMPLED_VAL = "val_data.npz"


def read_downsampled_batch(
    path: PathLike, image_size: Optional[int] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one downsampled-ImageNet ``.npz`` batch.

    Parameters
    ----------
    path : str or os.PathLike
        A ``train_data_batch_<k>.npz`` or ``val_data.npz`` file with keys
        ``data`` (uint8 ``(N, 3*S*S)``, channel-major) and ``labels``
        (``N`` integers ``1..1000``); other keys (``mean``) are ignored.
    image_size : int, optional
        Expected side ``S``; default: inferred from ``data``.

    Returns
    -------
    images : np.ndarray
        uint8 ``(N, 3, S, S)``.
    labels : np.ndarray
        int64 ``(N,)`` in ``0..999`` (the file's labels minus one).

    Raises
    ------
    DataError
        If the file is missing or not an ``.npz``, a key is missing, ``data``
        is not uint8 ``(N, 3*S*S)`` for an integer ``S`` (or not the expected
        one), or ``labels`` has the wrong length or values outside ``1..1000``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (a downsampled ImageNet .npz batch)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in ("data", "labels") if k not in keys]
            if missing:
                raise DataError(
                    f"{path}: lacks key(s) {', '.join(missing)}; expected 'data' and "
                    f"'labels', found {', '.join(sorted(keys)) or 'none'}"
                )
            data = npz["data"]
            labels = npz["labels"]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(
            f"{path}: 'data' must be uint8 of shape (N, 3*S*S), got {data.dtype} {data.shape}"
        )
    side = math.isqrt(data.shape[1] // 3) if data.shape[1] % 3 == 0 else 0
    if side < 1 or 3 * side * side != data.shape[1]:
        raise DataError(
            f"{path}: 'data' rows have {data.shape[1]} values, not 3*S*S for an integer S"
        )
    if image_size is not None and side != image_size:
        raise DataError(
            f"{path}: images are {side}x{side}, expected {image_size}x{image_size}"
        )
    labels = np.asarray(labels).reshape(-1) if np.ndim(labels) <= 1 else np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: has {labels.shape[0]} labels but {data.shape[0]} images")
    if labels.size and (labels.min() < 1 or labels.max() > 1000):
        raise DataError(
            f"{path}: labels must be 1..1000, found {int(labels.min())}..{int(labels.max())}"
        )
    return data.reshape(-1, 3, side, side), labels.astype(np.int64) - 1


def load_downsampled_imagenet(
    directory: PathLike,
    train_batches: Optional[Sequence[int]] = None,
    image_size: Optional[int] = None,
    flatten: bool = False,
) -> Dataset:
    """Load downsampled ImageNet, standardised with training statistics.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding ``train_data_batch_1.npz`` ..
        ``train_data_batch_10.npz`` and ``val_data.npz``.
    train_batches : sequence of int, optional
        Which training batches (1..10) to read; default all ten.
    image_size : int, optional
        Expected side S (8, 16, 32, 64); default inferred, and it must agree
        across files.
    flatten : bool
        Return ``x`` as ``(N, 3*S*S)`` instead of ``(N, 3, S, S)``.

    Returns
    -------
    Dataset
        Name ``"imagenet<S>"``, float32 images standardised per channel with
        the training mean and std (computed in float64), int64 labels
        ``0..999``, 1000 classes; ``x_test`` is the validation set.

    Raises
    ------
    DataError
        If the directory or a file is missing or any file is malformed.

    Notes
    -----
    All 64x64 training batches take about 63 GB as float32: pass
    ``train_batches`` for a subset.
    """
    directory = Path(directory)
    _require_dir(
        directory,
        "downsampled ImageNet: train_data_batch_1.npz..train_data_batch_10.npz and val_data.npz",
    )
    wanted = tuple(train_batches) if train_batches is not None else tuple(range(1, 11))
    bad = [b for b in wanted if not (isinstance(b, (int, np.integer)) and 1 <= b <= 10)]
    if bad or not wanted:
        raise DataError(f"{directory}: train_batches must be integers in 1..10, got {list(wanted)}")
    parts = []
    side = image_size
    for b in wanted:
        x, y = read_downsampled_batch(directory / f"train_data_batch_{b}.npz", side)
        side = x.shape[-1]
        parts.append((x, y))
    x_val_u8, y_val = read_downsampled_batch(directory / DOWNSAMPLED_VAL, side)

    n_train = sum(len(p[1]) for p in parts)
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for x, _ in parts:
        xf = x.astype(np.float64)
        total += xf.sum(axis=(0, 2, 3))
        total_sq += np.square(xf).sum(axis=(0, 2, 3))
    count = max(n_train * side * side, 1)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)
    scale = (1.0 / std).astype(np.float32)[:, None, None]
    shift = (mean / std).astype(np.float32)[:, None, None]

    def convert(chunks: list[np.ndarray], n: int) -> np.ndarray:
        out = np.empty((n, 3, side, side), dtype=np.float32)
        start = 0
        for x in chunks:
            view = out[start : start + len(x)]
            np.multiply(x, scale, out=view, dtype=np.float32, casting="unsafe")
            view -= shift
            start += len(x)
        return out

    x_train = convert([p[0] for p in parts], n_train)
    y_train = np.concatenate([p[1] for p in parts])
    parts.clear()
    x_val = convert([x_val_u8], len(y_val))
    if flatten:
        x_train = x_train.reshape(len(x_train), -1)
        x_val = x_val.reshape(len(x_val), -1)
    return Dataset(
        name=f"imagenet{side}",
        x_train=x_train,
        y_train=y_train,
        x_test=x_val,
        y_test=y_val,
        num_classes=1000,
        image_shape=(3, side, side),
    )
