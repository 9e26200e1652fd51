"""Dataset loading for the weight-mirror / Kolen-Pollack simulations.

Supported data sets
-------------------
``digits``
    scikit-learn's bundled 8x8 hand-written digits (1,797 images, 16 grey
    levels).  Needs no files; split deterministically into 1,437 training and
    360 test images.
``mnist``, ``fashion-mnist``
    The four IDX files of MNIST / Fashion-MNIST (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``), each raw or gzipped.  Fashion-MNIST defaults
    to Debian's ``/usr/share/datasets/fashion-mnist`` (package
    ``dataset-fashion-mnist``).
``cifar10``
    The CIFAR-10 "python version" batches (``data_batch_1`` ..
    ``data_batch_5``, ``test_batch``).  These are pickles: only give files
    you trust, since unpickling can run arbitrary code.

Every problem with the files on disk is reported as a :class:`DataError`
whose message is one line naming the file and what is wrong with it.

The individual loaders (:func:`load_mnist_dir`, :func:`load_cifar10`,
:func:`load_digits`) return images of shape ``(N, C, H, W)`` scaled to
``[0, 1]`` as float32, *not* standardised; :func:`load_dataset` additionally
standardises with the training-set statistics and optionally flattens.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from ..errors import InputError

__all__ = [
    "DataError",
    "Dataset",
    "DATASET_NAMES",
    "FASHION_MNIST_DEFAULT_DIR",
    "read_idx",
    "load_mnist_dir",
    "load_cifar10",
    "load_digits",
    "load_dataset",
    "standardise",
    "iterate_minibatches",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Names accepted by :func:`load_dataset`.
DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "imagenet32", "imagenet64")

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

_GZIP_MAGIC = b"\x1f\x8b"

# IDX data type code -> (big-endian numpy dtype, human-readable name).
_IDX_TYPES = {
    0x08: (np.dtype(">u1"), "unsigned byte"),
    0x09: (np.dtype(">i1"), "signed byte"),
    0x0B: (np.dtype(">i2"), "int16"),
    0x0C: (np.dtype(">i4"), "int32"),
    0x0D: (np.dtype(">f4"), "float32"),
    0x0E: (np.dtype(">f8"), "float64"),
}

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"


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


# --------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
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


def read_idx(path: PathLike) -> np.ndarray:
    """Read an array stored in the IDX format (as used by MNIST).

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file, raw or gzip-compressed.  Compression is detected from
        the gzip magic bytes ``1f 8b``, not from the file extension.

    Returns
    -------
    np.ndarray
        Array of the shape given in the header, in native byte order, with
        dtype uint8, int8, int16, int32, float32 or float64 according to the
        IDX type code (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E).

    Raises
    ------
    DataError
        If the file is missing or unreadable, the gzip stream is corrupt, the
        magic number is wrong, or the data length does not match the header
        exactly (truncated file or trailing bytes).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip stream: {exc}") from None

    if len(raw) == 0:
        raise DataError(f"{path}: empty file, expected an IDX header")
    if len(raw) < 4:
        raise DataError(
            f"{path}: truncated: {len(raw)} bytes, shorter than the 4-byte IDX magic number"
        )
    magic = raw[:4]
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{path}: not an IDX file: magic number is {magic.hex(' ')}, "
            "expected 00 00 <type> <ndim>"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code not in _IDX_TYPES:
        supported = ", ".join(f"0x{c:02X} {n}" for c, (_, n) in _IDX_TYPES.items())
        raise DataError(
            f"{path}: unsupported IDX data type code 0x{type_code:02X} "
            f"(supported: {supported})"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(
            f"{path}: truncated header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(raw)}"
        )
    dims = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype, type_name = _IDX_TYPES[type_code]
    count = prod(dims)
    expected = count * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        shape_txt = "x".join(str(d) for d in dims)
        size_txt = (
            f"{shape_txt} = {expected}"
            if dtype.itemsize == 1
            else f"{shape_txt} x {dtype.itemsize} = {expected}"
        )
        what = "pixels" if ndim == 3 and type_code == 0x08 else f"{type_name} data"
        if actual < expected:
            raise DataError(
                f"{path}: truncated: header says {size_txt} bytes of {what}, "
                f"file has {actual}"
            )
        raise DataError(
            f"{path}: trailing bytes: header says {size_txt} bytes of {what}, "
            f"file has {actual} ({actual - expected} extra)"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header_len)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _find_idx(directory: Path, base: str) -> Path:
    """Locate ``base`` or ``base.gz`` inside ``directory``."""
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{directory / base}: missing: expected {base} or {base}.gz in {directory} "
        f"(an MNIST-format directory holds {', '.join(_MNIST_FILES.values())}, "
        "each optionally .gz)"
    )


def _check_images(path: Path, images: np.ndarray) -> None:
    if images.ndim != 3:
        raise DataError(
            f"{path}: expected a 3-D image array (N, H, W), got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise DataError(
            f"{path}: expected unsigned-byte pixels (IDX type 0x08), got {images.dtype}"
        )


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.ndim != 1:
        raise DataError(f"{path}: expected a 1-D label array, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected integer labels, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels must be in 0..{num_classes - 1}, "
            f"found values {int(labels.min())}..{int(labels.max())}"
        )


def load_mnist_dir(directory: PathLike, name: str = "mnist") -> Dataset:
    """Load an MNIST-format directory (MNIST, Fashion-MNIST, ...).

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each with or without ``.gz`` (the
        uncompressed one is preferred when both exist).
    name : str, optional
        Name stored in the returned :class:`Dataset` and used in messages.

    Returns
    -------
    Dataset
        Images as float32 ``(N, 1, H, W)`` scaled to ``[0, 1]`` (not
        standardised), int64 labels, 10 classes.

    Raises
    ------
    DataError
        If the directory or a file is missing or malformed, image and label
        counts disagree, labels are outside ``0..9``, or train and test images
        differ in size.
    """
    directory = Path(directory)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "directory not found"
        raise DataError(
            f"{directory}: {what}; expected a {name} directory holding "
            f"{', '.join(_MNIST_FILES.values())} (each optionally .gz)"
        )
    paths = {key: _find_idx(directory, base) for key, base in _MNIST_FILES.items()}
    num_classes = 10
    splits = {}
    for split in ("train", "test"):
        img_path, lab_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images = read_idx(img_path)
        _check_images(img_path, images)
        labels = read_idx(lab_path)
        _check_labels(lab_path, labels, num_classes)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{lab_path}: has {labels.shape[0]} labels but {img_path.name} "
                f"has {images.shape[0]} images"
            )
        splits[split] = (images, labels, img_path)
    train_hw = splits["train"][0].shape[1:]
    test_hw = splits["test"][0].shape[1:]
    if train_hw != test_hw:
        raise DataError(
            f"{splits['test'][2]}: images are {test_hw[0]}x{test_hw[1]} but "
            f"training images are {train_hw[0]}x{train_hw[1]}"
        )

    def to_float(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]

    return Dataset(
        name=name,
        x_train=to_float(splits["train"][0]),
        y_train=splits["train"][1].astype(np.int64),
        x_test=to_float(splits["test"][0]),
        y_test=splits["test"][1].astype(np.int64),
        num_classes=num_classes,
        image_shape=(1, int(train_hw[0]), int(train_hw[1])),
    )


# --------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------


def _dict_get(d: dict, key: str):
    """Look up ``key`` as bytes (Python-2 pickles) or str."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR-10 batch -> (uint8 (N, 3, 32, 32), int64 (N,))."""
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-10 batch file not found")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
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


# --------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------

DIGITS_NUM_TEST = 360


def load_digits(seed: int = 0) -> Dataset:
    """Load scikit-learn's bundled 8x8 digits with a fixed train/test split.

    Parameters
    ----------
    seed : int, optional
        Seed of the permutation used to split the 1,797 images into 1,437
        training and 360 test images.  The same seed always gives the same
        split.

    Returns
    -------
    Dataset
        Images as float32 ``(N, 1, 8, 8)`` scaled to ``[0, 1]`` (the raw
        values are 0..16; not standardised), int64 labels, 10 classes.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise DataError(
            f"digits: scikit-learn is needed for the digits data set ({exc})"
        ) from None
    bunch = _sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(len(labels))
    test_idx, train_idx = perm[:DIGITS_NUM_TEST], perm[DIGITS_NUM_TEST:]
    return Dataset(
        name="digits",
        x_train=images[train_idx][:, None, :, :],
        y_train=labels[train_idx],
        x_test=images[test_idx][:, None, :, :],
        y_test=labels[test_idx],
        num_classes=10,
        image_shape=(1, 8, 8),
    )


# --------------------------------------------------------------------------
# Front end
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


def load_dataset(
    name: str,
    data_dir: Optional[PathLike] = None,
    flatten: bool = True,
    seed: int = 0,
) -> Dataset:
    """Load a data set, standardised with its training-set statistics.

    Parameters
    ----------
    name : {"digits", "mnist", "fashion-mnist", "cifar10"}
        Which data set (case-insensitive).
    data_dir : str or os.PathLike, optional
        Where the files are.  Required for ``"mnist"`` and ``"cifar10"``;
        ``"fashion-mnist"`` defaults to ``/usr/share/datasets/fashion-mnist``;
        ignored for ``"digits"``.
    flatten : bool, optional
        If true, ``x`` arrays are ``(N, C*H*W)``, else ``(N, C, H, W)``.
    seed : int, optional
        Seed of the digits train/test split; unused by the other data sets,
        whose split is fixed by their files.

    Returns
    -------
    Dataset
        float32 images, scaled to ``[0, 1]`` and then standardised with the
        per-channel mean and std of the training set; int64 labels.

    Raises
    ------
    DataError
        For an unknown name, a missing ``data_dir`` where one is required, or
        any problem with the files.
    """
    key = str(name).strip().lower()
    if key not in DATASET_NAMES:
        raise DataError(
            f"{name!r}: unknown data set; allowed names are {', '.join(DATASET_NAMES)}"
        )
    if key in ("imagenet32", "imagenet64"):
        if data_dir is None:
            raise DataError(
                f"{key}: data_dir is required (a directory holding "
                "train_data_batch_1..10.npz and val_data.npz)"
            )
        from .imagenet import load_downsampled_imagenet  # lazy: imagenet imports this module

        # the reader standardises with training statistics itself
        return load_downsampled_imagenet(data_dir, image_size=int(key[len("imagenet"):]), flatten=flatten)
    if key == "digits":
        ds = load_digits(seed=seed)
    elif key == "cifar10":
        if data_dir is None:
            raise DataError(
                "cifar10: data_dir is required (a directory holding data_batch_1.."
                f"data_batch_5 and test_batch, or {_CIFAR_SUBDIR}/)"
            )
        ds = load_cifar10(data_dir)
    else:
        if data_dir is None:
            if key == "mnist":
                raise DataError(
                    "mnist: data_dir is required (a directory holding "
                    f"{', '.join(_MNIST_FILES.values())}, each optionally .gz)"
                )
            data_dir = FASHION_MNIST_DEFAULT_DIR
            if not Path(data_dir).is_dir():
                raise DataError(
                    f"{data_dir}: directory not found; install Debian's "
                    "dataset-fashion-mnist package or pass data_dir"
                )
        ds = load_mnist_dir(data_dir, name=key)

    x_train, x_test, _, _ = standardise(ds.x_train, ds.x_test)
    if flatten:
        x_train = x_train.reshape(x_train.shape[0], -1)
        x_test = x_test.reshape(x_test.shape[0], -1)
    ds.x_train, ds.x_test = x_train, x_test
    return ds


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
