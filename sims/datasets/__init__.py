"""The data sets of the weight-mirror / Kolen-Pollack simulations: one registry, name -> loader.

Supported data sets (:data:`DATASETS`, the names the config accepts)
--------------------------------------------------------------------
``digits``
    scikit-learn's bundled 8x8 hand-written digits (1,797 images, 16 grey
    levels).  Needs no files; split deterministically into 1,437 training and
    360 test images (:mod:`.digits`).
``mnist``, ``fashion-mnist``
    The four IDX files of MNIST / Fashion-MNIST (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``), each raw or gzipped.  Fashion-MNIST defaults
    to Debian's ``/usr/share/datasets/fashion-mnist`` (package
    ``dataset-fashion-mnist``) (:mod:`.idx`).
``cifar10``
    The CIFAR-10 "python version" batches (``data_batch_1`` ..
    ``data_batch_5``, ``test_batch``).  These are pickles, read by a
    restricted unpickler that admits NumPy arrays and builtin containers
    only, so a crafted batch cannot run code (:mod:`.cifar`).
``imagenet``
    The ILSVRC-2012 JPEG folders ``train/<wnid>/*.JPEG`` and ``val/``:
    scanned, not loaded; the images are decoded while training
    (:mod:`.imagenet.folders`, :mod:`.imagenet.loader`).
``imagenet32``, ``imagenet64``
    Downsampled ImageNet, ``train_data_batch_1..10.npz`` and
    ``val_data.npz`` (:mod:`.imagenet.downsampled`).

Every data set but ``imagenet`` is held in memory as a :class:`Dataset`
(:data:`IN_MEMORY_DATASETS`).  Every problem with the files on disk is
reported as a :class:`DataError` whose message is one line naming the file
and what is wrong with it.

The individual loaders (:func:`load_mnist_dir`, :func:`load_cifar10`,
:func:`load_digits`) return images of shape ``(N, C, H, W)`` scaled to
``[0, 1]`` as float32, *not* standardised; :func:`load_dataset` additionally
standardises with the training-set statistics and optionally flattens, and
:func:`load` does the same or, for ``imagenet``, scans the folders into an
:class:`ImageNetFolders`.

The validation part (config ``validation``, ``validation_seed``) is held
out of the training set by :func:`stratified_split` (:mod:`.split`),
through :meth:`Dataset.validation_split` / :meth:`Dataset.held_out` and
:meth:`ImageNetFolders.validation_split`; the test set is never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from .base import DataError, Dataset, PathLike, iterate_minibatches, standardise
from .cifar import _CIFAR_SUBDIR, load_cifar10
from .digits import load_digits
from .idx import _MNIST_FILES, FASHION_MNIST_DEFAULT_DIR, load_mnist_dir, read_idx
from .imagenet.downsampled import load_downsampled_imagenet
from .imagenet.folders import ImageNetFolders, scan_imagenet_split
from .split import stratified_split

__all__ = [
    "DataError",
    "check_data_dir",
    "Dataset",
    "DATASETS",
    "IN_MEMORY_DATASETS",
    "FASHION_MNIST_DEFAULT_DIR",
    "ImageNetFolders",
    "read_idx",
    "load_mnist_dir",
    "load_cifar10",
    "load_digits",
    "load_downsampled_imagenet",
    "load_dataset",
    "load",
    "standardise",
    "iterate_minibatches",
    "stratified_split",
]


# --------------------------------------------------------------------------
# One loader per name: (name, data_dir, flatten, seed) -> Dataset or ImageNetFolders
# --------------------------------------------------------------------------


def _standardised(ds: Dataset, flatten: bool) -> Dataset:
    """Standardise ``ds`` in place with its training statistics, flattening if asked."""
    x_train, x_test, _, _ = standardise(ds.x_train, ds.x_test)
    if flatten:
        x_train = x_train.reshape(x_train.shape[0], -1)
        x_test = x_test.reshape(x_test.shape[0], -1)
    ds.x_train, ds.x_test = x_train, x_test
    return ds


def check_data_dir(name: str, data_dir: Optional[PathLike]) -> None:
    """Refuse a data folder given for the embedded digits set (a mistake, never silently ignored)."""
    if str(name).strip().lower() == "digits" and data_dir not in (None, ""):
        raise DataError(f"data_dir {str(data_dir)!r}: the digits data set is embedded (scikit-learn's) and "
                        "reads no folder; leave data_dir (--data-dir) out, or choose a data set read from files")


def _digits(key: str, data_dir: Optional[PathLike], flatten: bool, seed: int) -> Dataset:
    check_data_dir(key, data_dir)
    # One train/test split for every run (split seed 0), like the data sets read
    # from files: the run's seed draws weights, order and noise, never the test set.
    return _standardised(load_digits(seed=0), flatten)


def _mnist(key: str, data_dir: Optional[PathLike], flatten: bool, seed: int) -> Dataset:
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
    return _standardised(load_mnist_dir(data_dir, name=key), flatten)


def _cifar10(key: str, data_dir: Optional[PathLike], flatten: bool, seed: int) -> Dataset:
    if data_dir is None:
        raise DataError(
            "cifar10: data_dir is required (a directory holding data_batch_1.."
            f"data_batch_5 and test_batch, or {_CIFAR_SUBDIR}/)"
        )
    return _standardised(load_cifar10(data_dir), flatten)


def _downsampled(key: str, data_dir: Optional[PathLike], flatten: bool, seed: int) -> Dataset:
    if data_dir is None:
        raise DataError(
            f"{key}: data_dir is required (a directory holding "
            "train_data_batch_1..10.npz and val_data.npz)"
        )
    # the reader standardises with training statistics itself
    return load_downsampled_imagenet(data_dir, image_size=int(key[len("imagenet"):]), flatten=flatten)


def _imagenet_folders(
    key: str, data_dir: Optional[PathLike], flatten: bool, seed: int
) -> ImageNetFolders:
    if not data_dir:
        raise DataError("imagenet: --data-dir is required (a folder holding train/<wnid>/*.JPEG and val/)")
    train_split = scan_imagenet_split(data_dir, "train")
    val_split = scan_imagenet_split(data_dir, "val", classes=train_split.classes)
    return ImageNetFolders(train_split, val_split)


#: The registry: every data set the config accepts -> its loader, in display order.
_LOADERS: dict[str, Callable[[str, Optional[PathLike], bool, int], Union[Dataset, ImageNetFolders]]] = {
    "digits": _digits,
    "mnist": _mnist,
    "fashion-mnist": _mnist,
    "cifar10": _cifar10,
    "imagenet": _imagenet_folders,
    "imagenet32": _downsampled,
    "imagenet64": _downsampled,
}

#: Names of every data set the config accepts (``data = ...``, ``--data``).
DATASETS: tuple[str, ...] = tuple(_LOADERS)

#: The data sets held in memory as a :class:`Dataset` (all but the ImageNet JPEG folders).
IN_MEMORY_DATASETS: tuple[str, ...] = tuple(n for n in DATASETS if n != "imagenet")


# --------------------------------------------------------------------------
# Front end
# --------------------------------------------------------------------------


def load_dataset(
    name: str,
    data_dir: Optional[PathLike] = None,
    flatten: bool = True,
    seed: int = 0,
) -> Dataset:
    """Load an in-memory data set, standardised with its training-set statistics.

    Parameters
    ----------
    name : {"digits", "mnist", "fashion-mnist", "cifar10", "imagenet32", "imagenet64"}
        Which data set (case-insensitive); any of :data:`IN_MEMORY_DATASETS`.
    data_dir : str or os.PathLike, optional
        Where the files are.  Required for ``"mnist"``, ``"cifar10"``,
        ``"imagenet32"`` and ``"imagenet64"``; ``"fashion-mnist"`` defaults
        to ``/usr/share/datasets/fashion-mnist``; refused for ``"digits"`` (embedded).
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
        For an unknown name (or ``"imagenet"``, whose JPEG folders are not
        loaded into memory: see :func:`load`), a missing ``data_dir`` where
        one is required, or any problem with the files.
    """
    key = str(name).strip().lower()
    if key not in IN_MEMORY_DATASETS:
        raise DataError(
            f"{name!r}: unknown data set; allowed names are {', '.join(IN_MEMORY_DATASETS)}"
        )
    return _LOADERS[key](key, data_dir, flatten, seed)


def load(
    name: str,
    data_dir: Optional[PathLike] = None,
    *,
    flatten: bool,
    seed: int,
) -> Union[Dataset, ImageNetFolders]:
    """Load (or, for the ImageNet JPEG folders, scan) any data set of :data:`DATASETS`.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (case-insensitive).
    data_dir : str or os.PathLike, optional
        Where the files are (see :func:`load_dataset`); for ``"imagenet"``
        the root holding ``train/`` and ``val/``, required.
    flatten : bool
        For the in-memory sets: ``x`` as ``(N, C*H*W)`` instead of
        ``(N, C, H, W)``.  Ignored for ``"imagenet"``.
    seed : int
        Seed of the digits train/test split; unused by the other data sets.

    Returns
    -------
    Dataset or ImageNetFolders
        Standardised arrays in memory (as :func:`load_dataset`); for
        ``"imagenet"`` the scanned ``train/`` and ``val/`` splits (images
        are decoded while training).

    Raises
    ------
    DataError
        For an unknown name, a missing ``data_dir`` where one is required,
        or any problem with the files.
    """
    key = str(name).strip().lower()
    if key not in _LOADERS:
        raise DataError(f"{name!r}: unknown data set; allowed names are {', '.join(DATASETS)}")
    return _LOADERS[key](key, data_dir, flatten, seed)
