"""The ImageNet (ILSVRC-2012) JPEG folder layout: classes, labels, and the scanned splits.

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

Scanning only lists the files; they are decoded while training, by
:class:`weightmirror.sims.datasets.imagenet.loader.ImageNetLoader`.  Every
problem with the files on disk is a
:class:`weightmirror.sims.datasets.DataError` with a one-line message
``"<path>: <what is wrong>"``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..base import DataError, PathLike, _require_dir
from ..split import stratified_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "VAL_LABEL_FILES",
    "ImageFolder",
    "ImageNetFolders",
    "find_classes",
    "read_val_labels",
    "scan_imagenet_split",
]

#: File name endings taken as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

#: Names looked for when a flat ``val/`` has no explicit labels file.
VAL_LABEL_FILES = ("LOC_val_solution.csv", "val.txt")


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

    def subset(self, indices) -> "ImageFolder":
        """The images at ``indices`` (in that order), same root and classes."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFolder(root=self.root, paths=tuple(self.paths[i] for i in idx.tolist()),
                           labels=self.labels[idx], classes=self.classes)


@dataclass(frozen=True)
class ImageNetFolders:
    """The scanned ``train/`` and ``val/`` splits of an ImageNet-layout root.

    Attributes
    ----------
    train, val : ImageFolder
        Image paths and labels of each split.
    """

    train: ImageFolder
    val: ImageFolder

    @property
    def num_classes(self) -> int:
        """Number of classes (the ``train/`` class folders)."""
        return self.train.num_classes

    def validation_split(self, fraction: float, seed: int) -> tuple[ImageFolder, ImageFolder]:
        """``(train part, validation part)`` of ``train/``, stratified by class.

        The split of :func:`weightmirror.sims.datasets.split.stratified_split`
        over the (class-sorted) image list of ``train/``; ``val/`` is not
        touched (it stays the test set). Both parts keep the class-then-name
        order.
        """
        train_idx, val_idx = stratified_split(self.train.labels, fraction, seed)
        return self.train.subset(train_idx), self.train.subset(val_idx)


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
