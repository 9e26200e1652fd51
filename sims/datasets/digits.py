"""scikit-learn's bundled 8x8 hand-written digits, split into training and test images.

1,797 images with 16 grey levels; needs no files.  :func:`load_digits`
splits them deterministically into 1,437 training and 360 test images and
returns them as ``(N, 1, 8, 8)`` float32 scaled to ``[0, 1]``, *not*
standardised.
"""

from __future__ import annotations

import numpy as np

from .base import DataError, Dataset

__all__ = ["load_digits"]

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
