"""MNIST-format data sets: the IDX reader and the MNIST / Fashion-MNIST directory loader.

An MNIST-format directory holds four IDX files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``), each raw or gzipped.  Fashion-MNIST defaults to
Debian's ``/usr/share/datasets/fashion-mnist`` (package
``dataset-fashion-mnist``).  :func:`load_mnist_dir` returns images of shape
``(N, 1, H, W)`` scaled to ``[0, 1]`` as float32, *not* standardised.
"""

from __future__ import annotations

import gzip
import zlib
from math import prod
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, PathLike, _check_labels, _read_bytes

__all__ = [
    "FASHION_MNIST_DEFAULT_DIR",
    "read_idx",
    "load_mnist_dir",
]

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
    if images.shape[0] == 0 or 0 in images.shape[1:]:
        raise DataError(
            f"{path}: holds no images (shape {images.shape}); expected at least one image of at least 1x1 pixels"
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
