"""ImageNet readers: the JPEG folder layout and the downsampled ``.npz`` batches.

Full-size ImageNet (ILSVRC-2012)
--------------------------------
The standard folder layout under a root directory::

    root/train/<wnid>/*.JPEG          training images, one folder per class
    root/val/<wnid>/*.JPEG            validation images, same folders, or
    root/val/*.JPEG                   flat validation images plus a labels file

The classes are the sorted names of the folders under ``train/`` (for
ILSVRC-2012: 1,000 WordNet ids ``n01440764`` .. ``n15075141``); class ``k``
is the ``k``-th name.  A flat ``val/`` needs a labels file, in one of two
forms (chosen by the file name: ``*.csv`` is the first form, anything else
the second):

1. the Kaggle ``LOC_val_solution.csv``: a header line ``ImageId,PredictionString``
   then one row per image, ``ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...``;
   the label is the first token of ``PredictionString`` (a wnid) and the
   ``ImageId`` is the file name without its extension;
2. a plain text file of ``<filename> <label>`` lines (blank lines and lines
   starting with ``#`` are ignored), where ``<filename>`` is the file name in
   ``val/`` with or without its extension and ``<label>`` is either a wnid or
   an integer class index **0-based in sorted-wnid order** (Caffe's
   ``val.txt`` convention).  Note that the devkit's
   ``ILSVRC2012_validation_ground_truth.txt`` (one 1-based ILSVRC id per line,
   not in sorted-wnid order) is *not* this form.

Without an explicit ``labels_file``, :func:`scan_imagenet_split` looks for
``LOC_val_solution.csv`` then ``val.txt``, first in ``root`` and then in
``root/val``.

Images are decoded with Pillow in worker processes
(:class:`ImageNetLoader`); the training transform is torchvision's
``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`` followed by a
random horizontal flip, the evaluation transform resizes the shorter side to
``round(256 * size / 224)`` and takes the central ``size x size`` crop.  The
batches are float32 ``(N, 3, size, size)`` normalised with the ImageNet
channel mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``.
Every random draw of sample ``i`` in epoch ``e`` comes from a generator seeded
by ``(seed, e, i)``, so a batch does not depend on the number of workers or
on which process decoded it.  A file that cannot be decoded is skipped,
counted in :attr:`ImageNetLoader.skipped` and logged once with its name.

Downsampled ImageNet (Chrabaszcz, Loshchilov and Hutter 2017)
-------------------------------------------------------------
``train_data_batch_1.npz`` .. ``train_data_batch_10.npz`` and
``val_data.npz``, each with keys ``data`` (uint8 ``(N, 3*S*S)``, channel-major:
all red values, then green, then blue, each row-major) and ``labels``
(integers ``1..1000``), ``S`` = 8, 16, 32 or 64.  Read by
:func:`read_downsampled_batch` and :func:`load_downsampled_imagenet`.

Every problem with the files on disk is a :class:`sims.data.DataError` with a
one-line message ``"<path>: <what is wrong>"``.
"""

from __future__ import annotations

import csv
import logging
import math
import multiprocessing
import os
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from .data import DataError, Dataset
from .distributed import shard_indices

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "ImageNetLoader",
    "find_classes",
    "scan_imagenet_split",
    "read_val_labels",
    "random_resized_crop_box",
    "decode_train",
    "decode_eval",
    "normalise_batch",
    "sample_rng",
    "read_downsampled_batch",
    "load_downsampled_imagenet",
]

PathLike = Union[str, "os.PathLike[str]"]

log = logging.getLogger("weightmirror.imagenet")

#: ImageNet channel mean and std (R, G, B) of pixels scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: File name endings taken as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

#: Names looked for when a flat ``val/`` has no explicit labels file.
VAL_LABEL_FILES = ("LOC_val_solution.csv", "val.txt")

_SAMPLE_TAG = 1  # appended to (seed, epoch, index) for per-sample generators
_SHUFFLE_TAG = 2  # appended to (seed, epoch) for the epoch's permutation


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------
# Scanning the folder layout
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFolder:
    """The image files of one split and their labels.

    Attributes
    ----------
    root : Path
        The split's directory (``.../train`` or ``.../val``).
    paths : tuple of str
        Image files, sorted by class then file name.
    labels : np.ndarray
        int64 class indices ``0 .. len(classes) - 1``, one per path.
    classes : tuple of str
        Class names (wnids) in index order.
    """

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def _require_dir(path: Path, expected: str) -> None:
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "directory not found"
        raise DataError(f"{path}: {what}; expected {expected}")


def find_classes(train_dir: PathLike) -> tuple[str, ...]:
    """The class names: the sorted sub-folder names of ``train_dir``.

    Parameters
    ----------
    train_dir : str or os.PathLike
        The ``train/`` directory of an ImageNet-layout root.

    Returns
    -------
    tuple of str
        Sorted folder names (hidden folders, starting with ``.``, excluded).

    Raises
    ------
    DataError
        If the directory is missing or has no sub-folders.
    """
    train_dir = Path(train_dir)
    _require_dir(train_dir, "a train/ directory with one folder per class (train/<wnid>/*.JPEG)")
    classes = sorted(
        e.name for e in os.scandir(train_dir) if e.is_dir() and not e.name.startswith(".")
    )
    if not classes:
        raise DataError(
            f"{train_dir}: no class folders; expected train/<wnid>/*.JPEG sub-folders"
        )
    return tuple(classes)


def _scan_class_folders(split_dir: Path, classes: Sequence[str]) -> tuple[list[str], list[int]]:
    index = {c: k for k, c in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    folders = sorted(
        e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
    )
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DataError(
            f"{split_dir / unknown[0]}: class folder not among the {len(classes)} "
            f"training classes (train/<wnid> folders)"
        )
    for name in folders:
        files = sorted(
            e.name for e in os.scandir(split_dir / name) if e.is_file() and _is_image(e.name)
        )
        paths.extend(str(split_dir / name / f) for f in files)
        labels.extend([index[name]] * len(files))
    return paths, labels


def read_val_labels(
    labels_file: PathLike, classes: Sequence[str]
) -> dict[str, int]:
    """Read a validation labels file into ``{file stem: class index}``.

    Parameters
    ----------
    labels_file : str or os.PathLike
        A ``*.csv`` file in the ``LOC_val_solution.csv`` form (header
        ``ImageId,PredictionString``; the label is the first token of
        ``PredictionString``), or a plain text file of ``<filename> <label>``
        lines, label a wnid or a 0-based index in sorted-wnid order.
    classes : sequence of str
        The class names (wnids) in index order.

    Returns
    -------
    dict
        Maps each file name *without its extension* to its class index.

    Raises
    ------
    DataError
        If the file is missing or unreadable, a line is malformed, or a label
        is an unknown wnid or an index out of range; the message names the
        file and line.
    """
    path = Path(labels_file)
    if not path.is_file():
        what = "is a directory, expected a file" if path.is_dir() else "labels file not found"
        raise DataError(
            f"{path}: {what} (a LOC_val_solution.csv or a text file of "
            "'<filename> <wnid-or-index>' lines)"
        )
    index = {c: k for k, c in enumerate(classes)}
    out: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read labels file: {exc}") from None

    def label_of(token: str, where: str) -> int:
        if token in index:
            return index[token]
        try:
            k = int(token)
        except ValueError:
            raise DataError(
                f"{where}: unknown class {token!r}; expected one of the "
                f"{len(classes)} train/ wnids or an index 0..{len(classes) - 1}"
            ) from None
        if not 0 <= k < len(classes):
            raise DataError(
                f"{where}: class index {k} out of range 0..{len(classes) - 1}"
            )
        return k

    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows or [h.strip() for h in rows[0][:2]] != ["ImageId", "PredictionString"]:
            got = ",".join(rows[0]) if rows else "an empty file"
            raise DataError(
                f"{path}: expected a header 'ImageId,PredictionString' "
                f"(LOC_val_solution.csv form), got {got[:60]!r}"
            )
        for lineno, row in enumerate(rows[1:], start=2):
            if not row or not "".join(row).strip():
                continue
            where = f"{path}:{lineno}"
            if len(row) < 2 or not row[0].strip() or not row[1].split():
                raise DataError(
                    f"{where}: expected 'ImageId,<wnid> <box> ...', got {','.join(row)[:60]!r}"
                )
            wnid = row[1].split()[0]
            if wnid not in index:
                raise DataError(
                    f"{where}: unknown class {wnid!r}; not among the "
                    f"{len(classes)} train/ wnids"
                )
            out[Path(row[0].strip()).stem] = index[wnid]
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            where = f"{path}:{lineno}"
            if len(parts) != 2:
                raise DataError(
                    f"{where}: expected '<filename> <wnid-or-index>', got {line[:60]!r}"
                )
            out[Path(parts[0]).stem] = label_of(parts[1], where)
    if not out:
        raise DataError(f"{path}: no labels found")
    return out


def scan_imagenet_split(
    root: PathLike,
    split: str = "train",
    labels_file: Optional[PathLike] = None,
    classes: Optional[Sequence[str]] = None,
) -> ImageFolder:
    """List the images and labels of one split of an ImageNet-layout root.

    Parameters
    ----------
    root : str or os.PathLike
        Directory holding ``train/`` (always needed: it defines the classes)
        and ``val/``.
    split : {"train", "val"}
        Which split.
    labels_file : str or os.PathLike, optional
        Labels of a flat ``val/`` (see the module docstring for the two
        forms).  If omitted, ``LOC_val_solution.csv`` and then ``val.txt`` are
        looked for in ``root`` and then in ``root/val``.  Ignored when
        ``val/`` has class folders.
    classes : sequence of str, optional
        The class names; default: the sorted folder names of ``train/``.

    Returns
    -------
    ImageFolder
        Paths (sorted by class, then name) and int64 labels.

    Raises
    ------
    DataError
        If a directory is missing, a split holds no images, a val class
        folder is not a training class, the labels file is missing or
        malformed, or a flat val image has no label.
    """
    root = Path(root)
    if split not in ("train", "val"):
        raise DataError(f"{split!r}: unknown split; allowed: train, val")
    _require_dir(root, "an ImageNet root holding train/<wnid>/*.JPEG and val/")
    classes = tuple(classes) if classes is not None else find_classes(root / "train")
    split_dir = root / split
    if split == "train":
        paths, labels = _scan_class_folders(split_dir, classes)
    else:
        _require_dir(split_dir, "val/<wnid>/*.JPEG or a flat val/*.JPEG with a labels file")
        has_folders = any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(split_dir))
        if has_folders:
            paths, labels = _scan_class_folders(split_dir, classes)
        else:
            files = sorted(
                e.name for e in os.scandir(split_dir) if e.is_file() and _is_image(e.name)
            )
            if not files:
                raise DataError(
                    f"{split_dir}: no images; expected val/<wnid>/*.JPEG or val/*.JPEG "
                    f"(extensions {', '.join(IMAGE_EXTENSIONS)})"
                )
            if labels_file is None:
                candidates = [d / n for d in (root, split_dir) for n in VAL_LABEL_FILES]
                found = [c for c in candidates if c.is_file()]
                if not found:
                    raise DataError(
                        f"{split_dir}: flat val/ without class folders needs a labels "
                        f"file; none of {', '.join(VAL_LABEL_FILES)} in {root} or "
                        f"{split_dir} (pass labels_file)"
                    )
                labels_file = found[0]
            table = read_val_labels(labels_file, classes)
            missing = [f for f in files if Path(f).stem not in table]
            if missing:
                raise DataError(
                    f"{labels_file}: no label for {len(missing)} of the {len(files)} "
                    f"images in {split_dir}, e.g. {missing[0]}"
                )
            paths = [str(split_dir / f) for f in files]
            labels = [table[Path(f).stem] for f in files]
    if not paths:
        raise DataError(
            f"{split_dir}: no images; expected {split}/<wnid>/*.JPEG "
            f"(extensions {', '.join(IMAGE_EXTENSIONS)}, any case)"
        )
    return ImageFolder(
        root=split_dir,
        paths=tuple(paths),
        labels=np.asarray(labels, dtype=np.int64),
        classes=tuple(classes),
    )


# --------------------------------------------------------------------------
# Transforms (Pillow), run inside the worker processes
# --------------------------------------------------------------------------


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random draw of sample ``index`` in ``epoch``.

    Seeded by ``(seed, epoch, index)`` through :class:`numpy.random.SeedSequence`,
    so it does not depend on batch composition or on the decoding process.
    """
    return np.random.default_rng([int(seed), int(epoch), int(index), _SAMPLE_TAG])


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> tuple[int, int, int, int]:
    """Crop box ``(top, left, h, w)`` of torchvision's ``RandomResizedCrop``.

    Up to 10 tries draw an area fraction ``s ~ U(scale)`` and an aspect
    ratio ``r`` log-uniform in ``ratio``, giving
    ``w = round(sqrt(s A r))``, ``h = round(sqrt(s A / r))`` for the image
    area ``A``; the first box that fits is placed uniformly at random.  If
    none fits, the fallback is the largest central crop whose aspect ratio
    is clamped to ``ratio``.

    Parameters
    ----------
    height, width : int
        Image size.
    rng : np.random.Generator
        Source of the draws.
    scale, ratio : tuple of float
        Range of the area fraction and of the width/height ratio.

    Returns
    -------
    tuple of int
        ``(top, left, h, w)``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _to_rgb(img, request: Optional[tuple[int, int]] = None):
    """Decode an opened Pillow image as RGB.

    ``request`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale while keeping
    both sides >= the request (Pillow's ``draft``); ``load`` forces the full
    decode, so a corrupt or truncated file raises here.
    """
    if request is not None and img.format == "JPEG":
        img.draft("RGB", (max(1, int(request[0])), max(1, int(request[1]))))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_train(
    path: str,
    rng: np.random.Generator,
    size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    fast_decode: bool = True,
) -> np.ndarray:
    """Decode an image with the training transform.

    Random-resized crop (:func:`random_resized_crop_box`, on the image's full
    size) resized bilinearly to ``size x size``, then a horizontal flip with
    probability 1/2.

    Parameters
    ----------
    path : str
        Image file.
    rng : np.random.Generator
        The sample's generator (:func:`sample_rng`).
    size : int
        Output side.
    scale, ratio : tuple of float
        Passed to :func:`random_resized_crop_box`.
    fast_decode : bool
        Let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) when the crop
        still keeps at least ``size`` pixels per side; much faster for small
        crops, slightly different pixels from a full decode.

    Returns
    -------
    np.ndarray
        uint8 ``(size, size, 3)``.
    """
    from PIL import Image

    with Image.open(path) as src:
        width, height = src.size
        top, left, h, w = random_resized_crop_box(height, width, rng, scale, ratio)
        flip = rng.random() < 0.5
        request = None
        if fast_decode:
            f = min(max(size / w, size / h), 1.0)  # keep >= size pixels across the crop
            request = (math.ceil(width * f), math.ceil(height * f))
        img = _to_rgb(src, request)
    sx, sy = img.size[0] / width, img.size[1] / height
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    img = img.resize((size, size), Image.BILINEAR, box=box)
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(img, dtype=np.uint8)


def decode_eval(path: str, size: int = 224, fast_decode: bool = True) -> np.ndarray:
    """Decode an image with the evaluation transform.

    The shorter side is resized (bilinear) to ``round(256 * size / 224)``
    (256 for ``size`` 224), then the central ``size x size`` crop is taken.

    Parameters
    ----------
    path : str
        Image file.
    size : int
        Output side.
    fast_decode : bool
        Let libjpeg decode at a reduced scale that keeps the shorter side
        at least the resize target.

    Returns
    -------
    np.ndarray
        uint8 ``(size, size, 3)``.
    """
    from PIL import Image

    short = int(round(256 * size / 224))
    with Image.open(path) as src:
        img = _to_rgb(src, (short, short) if fast_decode else None)
    w, h = img.size
    if w <= h:
        ow, oh = short, max(1, int(short * h / w))
    else:
        oh, ow = short, max(1, int(short * w / h))
    top = int(round((oh - size) / 2.0))
    left = int(round((ow - size) / 2.0))
    # resize only the source region of the centre crop: the same pixels as
    # resizing the whole image and cropping, for less work
    sx, sy = w / ow, h / oh
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    img = img.resize((size, size), Image.BILINEAR, box=box)
    return np.asarray(img, dtype=np.uint8)


# Per-process view of the loader's shared batch buffers (set in each worker).
_WORKER_SLOTS: Optional[list] = None


def _init_worker(slots: list, shape: tuple) -> None:
    """Pool initializer: map the shared batch buffers as float32 arrays."""
    global _WORKER_SLOTS
    _WORKER_SLOTS = [_slot_array(raw, shape) for raw in slots]


def _slot_array(raw, shape: tuple) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float32, count=int(np.prod(shape))).reshape(shape)


def _decode_task(task, slots: Optional[list] = None):
    """Decode one sample straight into row ``row`` of batch buffer ``slot``.

    ``task = (slot, row, index, path, train, size, seed, epoch, fast)``;
    returns ``(row, index, error text or None)``.  The image is normalised
    here, in the worker, so the parent process only copies the finished
    float32 batch out of shared memory.
    """
    slot, row, index, path, train, size, seed, epoch, fast = task
    try:
        if train:
            arr = decode_train(path, sample_rng(seed, epoch, index), size, fast_decode=fast)
        else:
            arr = decode_eval(path, size, fast_decode=fast)
        out = (slots if slots is not None else _WORKER_SLOTS)[slot][row]
        _normalise_into(arr, out)
        return row, index, None
    except Exception as exc:  # noqa: BLE001 - any decoding failure skips the file
        text = str(exc).splitlines()[0] if str(exc) else ""
        return row, index, f"{type(exc).__name__}{': ' + text if text else ''}"


_SCALE = (1.0 / (255.0 * np.asarray(IMAGENET_STD))).astype(np.float32)
_SHIFT = (np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).astype(np.float32)


def _normalise_into(image: np.ndarray, out: np.ndarray) -> None:
    """uint8 ``(H, W, 3)`` -> ``out`` float32 ``(3, H, W)``, ``(x/255 - mean) / std``."""
    for c in range(3):
        np.multiply(image[..., c], _SCALE[c], out=out[c], dtype=np.float32, casting="unsafe")
        out[c] -= _SHIFT[c]


def normalise_batch(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)``, ``(x/255 - mean) / std``."""
    out = np.empty((images.shape[0], 3) + images.shape[1:3], dtype=np.float32)
    for c in range(3):
        np.multiply(images[..., c], _SCALE[c], out=out[:, c], dtype=np.float32, casting="unsafe")
        out[:, c] -= _SHIFT[c]
    return out


# --------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------


class ImageNetLoader:
    """Batches ``(x, y)`` of one ImageNet split, decoded in worker processes.

    Parameters
    ----------
    folder : ImageFolder
        The split (:func:`scan_imagenet_split`).
    batch_size : int
        Samples per global batch (before sharding across ranks).
    train : bool
        Training transform (random-resized crop + flip) and, by default, a
        shuffled order; else the evaluation transform in file order.
    size : int
        Output side (224 for ResNets).
    seed : int
        Seed of the epoch permutations and of every per-sample draw.
    workers : int
        Decoding processes; 0 decodes in the calling process (no pool).
    shuffle : bool, optional
        Default: ``train``.
    drop_last : bool
        Drop a final incomplete global batch.
    prefetch : int
        Batches decoded ahead of the one being consumed (>= 1), so decoding
        overlaps training.
    rank, world_size : int
        Data parallelism: each rank gets its :func:`sims.distributed.shard_indices`
        part of every global batch (all ranks see the same permutation).
    chunksize : int, optional
        Tasks per message to a worker; default spreads a batch evenly.
    fast_decode : bool
        Reduced-scale JPEG decoding where it keeps the output resolution
        (see :func:`decode_train`).
    start_method : str, optional
        ``multiprocessing`` start method of the pool (default: the platform's).

    Attributes
    ----------
    skipped : int
        Samples skipped so far because their file could not be decoded.
    skipped_files : dict
        File name -> error text for every file skipped at least once.

    Notes
    -----
    A batch holds only the samples that decoded, so it can be smaller than
    its share of ``batch_size``; a batch with no readable sample is not
    yielded.  Each unreadable file is logged once (logger
    ``weightmirror.imagenet``, level WARNING).  Use as a context manager or
    call :meth:`close` to stop the workers.

    Examples
    --------
    >>> folder = scan_imagenet_split("/data/imagenet", "train")   # doctest: +SKIP
    >>> with ImageNetLoader(folder, 256, train=True, workers=8) as loader:  # doctest: +SKIP
    ...     for x, y in loader.epoch(0):
    ...         pass
    """

    def __init__(
        self,
        folder: ImageFolder,
        batch_size: int,
        train: bool = True,
        size: int = 224,
        seed: int = 0,
        workers: int = 4,
        shuffle: Optional[bool] = None,
        drop_last: bool = False,
        prefetch: int = 2,
        rank: int = 0,
        world_size: int = 1,
        chunksize: Optional[int] = None,
        fast_decode: bool = True,
        start_method: Optional[str] = None,
    ):
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if int(workers) != workers or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        if int(prefetch) != prefetch or prefetch < 1:
            raise ValueError(f"prefetch must be an integer >= 1, got {prefetch!r}")
        if not (0 <= rank < world_size):
            raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
        if len(folder) == 0:
            raise DataError(f"{folder.root}: no images")
        self.folder = folder
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.size = int(size)
        self.seed = int(seed)
        self.workers = int(workers)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.chunksize = chunksize
        self.fast_decode = bool(fast_decode)
        self.start_method = start_method
        self.skipped = 0
        self.skipped_files: dict[str, str] = {}
        self._pool = None
        self._slots: Optional[list[np.ndarray]] = None
        self._raw_slots: Optional[list] = None
        self._inflight: list = []
        self._generation = 0

    # -- life cycle ---------------------------------------------------------

    def _slot_shape(self) -> tuple[int, int, int, int]:
        full = shard_indices(self.batch_size, self.rank, self.world_size)
        return (full.stop - full.start, 3, self.size, self.size)

    def _get_slots(self) -> list[np.ndarray]:
        """The ``prefetch + 1`` shared float32 batch buffers (made once)."""
        if self._slots is None:
            shape = self._slot_shape()
            nbytes = int(np.prod(shape)) * 4
            ctx = multiprocessing.get_context(self.start_method)
            self._raw_slots = [ctx.RawArray("b", nbytes) for _ in range(self.prefetch + 1)]
            self._slots = [_slot_array(raw, shape) for raw in self._raw_slots]
        return self._slots

    def _get_pool(self):
        if self.workers == 0:
            return None
        if self._pool is None:
            self._get_slots()
            ctx = multiprocessing.get_context(self.start_method)
            self._pool = ctx.Pool(
                self.workers, initializer=_init_worker,
                initargs=(self._raw_slots, self._slot_shape()),
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (a later epoch starts new ones)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self._inflight = []

    def __enter__(self) -> "ImageNetLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    # -- batches ------------------------------------------------------------

    def __len__(self) -> int:
        """Global batches per epoch."""
        n = len(self.folder)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Sample indices of ``epoch`` in visiting order (same on every rank)."""
        n = len(self.folder)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, int(epoch), _SHUFFLE_TAG])
        return rng.permutation(n)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """This rank's sample indices of every batch of ``epoch``."""
        order = self.order(epoch)
        out = []
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            out.append(idx[shard_indices(len(idx), self.rank, self.world_size)])
        return out

    def _submit(self, idx: np.ndarray, epoch: int, slot: int):
        paths = self.folder.paths
        tasks = [
            (slot, row, int(i), paths[i], self.train, self.size, self.seed, int(epoch),
             self.fast_decode)
            for row, i in enumerate(idx)
        ]
        pool = self._get_pool()
        if pool is None:
            return slot, tasks  # decoded in _collect, in this process
        chunk = self.chunksize or max(1, -(-len(tasks) // (self.workers * 2)))
        job = pool.map_async(_decode_task, tasks, chunksize=chunk)
        self._inflight.append(job)
        return slot, job

    def _collect(self, pending) -> Optional[tuple[np.ndarray, np.ndarray]]:
        slot, job = pending
        slots = self._get_slots()
        if isinstance(job, list):
            results = [_decode_task(t, slots) for t in job]
        else:
            results = job.get()
            self._inflight.remove(job)
        labels = self.folder.labels
        rows, ys = [], []
        for row, index, err in results:
            if err is not None:
                self.skipped += 1
                path = self.folder.paths[index]
                if path not in self.skipped_files:
                    self.skipped_files[path] = err
                    log.warning("%s: skipped unreadable image (%s)", path, err)
                continue
            rows.append(row)
            ys.append(labels[index])
        if not rows:
            return None
        buf = slots[slot]
        if rows == list(range(len(rows))):
            x = buf[: len(rows)].copy()
        else:
            x = buf[np.asarray(rows)]
        return x, np.asarray(ys, dtype=np.int64)

    def _drain(self) -> None:
        """Wait for batches an abandoned epoch left in flight (they write the buffers)."""
        for job in self._inflight:
            job.wait()
        self._inflight = []

    def epoch(self, epoch: int = 0, start: int = 0,
              keep_empty: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over this rank's batches of ``epoch``.

        Parameters
        ----------
        epoch : int
            Epoch number: selects the permutation and the per-sample draws.
        start : int
            First batch to decode (resuming mid-epoch: the batches before it
            are skipped without being read).
        keep_empty : bool
            Yield a batch whose every file was unreadable as an empty batch
            (``n = 0``) instead of leaving it out, so that every rank of a
            data-parallel run takes the same number of steps.

        Yields
        ------
        x : np.ndarray
            float32 ``(n, 3, size, size)``, normalised; a fresh array that
            stays valid after the next batch.
        y : np.ndarray
            int64 ``(n,)`` class indices.

        Notes
        -----
        One epoch iterator at a time: starting another one ends the
        previous (its next ``next`` raises ``RuntimeError``).
        """
        self._generation += 1
        generation = self._generation
        self._drain()
        batches = deque(self.batch_indices(epoch)[int(start):])
        nslots = self.prefetch + 1
        counter = 0
        pending: deque = deque()

        def submit():
            nonlocal counter
            pending.append(self._submit(batches.popleft(), epoch, counter % nslots))
            counter += 1

        while batches and len(pending) < self.prefetch:
            submit()
        while pending:
            if generation != self._generation:
                raise RuntimeError("ImageNetLoader: another epoch was started; this iterator ended")
            job = pending.popleft()
            # queue the next batch (into a free buffer) before finishing this one
            if batches:
                submit()
            batch = self._collect(job)
            if batch is not None:
                yield batch
            elif keep_empty:
                yield (np.empty((0, 3, self.size, self.size), dtype=np.float32), np.empty((0,), dtype=np.int64))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.epoch(0)


# --------------------------------------------------------------------------
# Downsampled ImageNet (.npz)
# --------------------------------------------------------------------------

DOWNSAMPLED_TRAIN = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
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
