"""CIFAR-10: the "python version" batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``).

The batches are pickles. They are read with :class:`_BatchUnpickler`, which
admits only what a CIFAR-10 batch is made of (the builtin containers,
strings, bytes and numbers, and NumPy's array and dtype reconstruction); a
pickle that names anything else (``os.system``, ``builtins.eval``, any class)
is refused before it is called, with one line naming the file. So a crafted
batch cannot run code.  :func:`load_cifar10` returns images of shape
``(N, 3, 32, 32)`` scaled to ``[0, 1]`` as float32, *not* standardised.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, PathLike, _check_labels

__all__ = ["load_cifar10"]

_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"


def _dict_get(d: dict, key: str):
    """Look up ``key`` as bytes (Python-2 pickles) or str."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


#: the only globals a CIFAR-10 batch may name: NumPy's array reconstruction (both
#: module spellings, NumPy 1 and 2) and the codec Python 3's protocol-2 pickles use
#: for bytes. Each builds data; none calls anything named by the file.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a callable outside :data:`_ALLOWED_GLOBALS`."""


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS` (no code runs from the file)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR-10 batch -> (uint8 (N, 3, 32, 32), int64 (N,))."""
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-10 batch file not found")
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except _RefusedGlobal as exc:
        raise DataError(f"{path}: refused: the pickle calls {exc}, which a CIFAR-10 batch never does "
                        f"(only NumPy arrays, lists, dicts, bytes and numbers are read)") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad data
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(
            f"{path}: not a valid CIFAR-10 pickle ({type(exc).__name__}"
            f"{': ' + msg if msg else ''})"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(
            f"{path}: expected a pickled dict with keys b'data' and b'labels', "
            f"got {type(batch).__name__}"
        )
    data = _dict_get(batch, "data")
    labels = _dict_get(batch, "labels")
    missing = [k for k, v in (("b'data'", data), ("b'labels'", labels)) if v is None]
    if missing:
        raise DataError(f"{path}: batch dict lacks key(s) {', '.join(missing)}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        got = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be a uint8 array, got {got}")
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{path}: b'data' must have shape (N, 3072), got {data.shape}"
        )
    try:
        labels_arr = np.asarray(labels)
    except Exception:  # noqa: BLE001
        raise DataError(f"{path}: b'labels' is not a sequence of integers") from None
    if labels_arr.ndim != 1 or (labels_arr.size and labels_arr.dtype.kind not in "iu"):
        raise DataError(
            f"{path}: b'labels' must be a 1-D sequence of integers, got "
            f"shape {labels_arr.shape} dtype {labels_arr.dtype}"
        )
    if labels_arr.shape[0] != data.shape[0]:
        raise DataError(
            f"{path}: has {labels_arr.shape[0]} labels but {data.shape[0]} images"
        )
    _check_labels(path, labels_arr, 10)
    return data.reshape(-1, 3, 32, 32), labels_arr.astype(np.int64)


def load_cifar10(directory: PathLike) -> Dataset:
    """Load the CIFAR-10 "python version" batches.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding ``data_batch_1`` .. ``data_batch_5`` and
        ``test_batch``, or one containing ``cifar-10-batches-py/``.

    Returns
    -------
    Dataset
        Images as float32 ``(N, 3, 32, 32)`` (channels R, G, B) scaled to
        ``[0, 1]`` (not standardised), int64 labels, 10 classes.

    Raises
    ------
    DataError
        If the directory or a batch is missing, a batch cannot be unpickled,
        or its contents have the wrong keys, shapes or label values.

    Notes
    -----
    The batches are Python pickles, and unpickling can execute arbitrary
    code: only load files from a trusted source.
    """
    directory = Path(directory)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "directory not found"
        raise DataError(
            f"{directory}: {what}; expected the CIFAR-10 python batches "
            f"(data_batch_1..data_batch_5, test_batch) or a {_CIFAR_SUBDIR}/ folder"
        )
    root = directory
    if not (root / _CIFAR_TEST_BATCH).exists() and (root / _CIFAR_SUBDIR).is_dir():
        root = root / _CIFAR_SUBDIR
    names = (*_CIFAR_TRAIN_BATCHES, _CIFAR_TEST_BATCH)
    if not any((root / n).exists() for n in names):
        raise DataError(
            f"{directory}: no CIFAR-10 batches found; expected data_batch_1.."
            f"data_batch_5 and test_batch here or in {_CIFAR_SUBDIR}/"
        )
    train = [_read_cifar_batch(root / n) for n in _CIFAR_TRAIN_BATCHES]
    x_test, y_test = _read_cifar_batch(root / _CIFAR_TEST_BATCH)
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    scale = np.float32(255.0)
    return Dataset(
        name="cifar10",
        x_train=x_train.astype(np.float32) / scale,
        y_train=y_train,
        x_test=x_test.astype(np.float32) / scale,
        y_test=y_test,
        num_classes=10,
        image_shape=(3, 32, 32),
    )
