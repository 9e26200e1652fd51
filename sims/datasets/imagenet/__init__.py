"""ImageNet: the full-size JPEG folders and the downsampled ``.npz`` batches.

One job per module:

* :mod:`.folders` -- scanning the ``train/`` and ``val/`` folder layout
  (classes, validation labels files) into :class:`ImageFolder` and
  :class:`ImageNetFolders`;
* :mod:`.transforms` -- the training and evaluation transforms (crop boxes,
  Pillow decoding) and the channel normalisation;
* :mod:`.loader` -- :class:`ImageNetLoader`, the process pool that decodes
  the batches of a scanned split;
* :mod:`.downsampled` -- downsampled ImageNet 8/16/32/64 (``.npz``), an
  in-memory :class:`weightmirror.sims.datasets.Dataset`.

The public names of the four are re-exported here.
"""

from .downsampled import load_downsampled_imagenet, read_downsampled_batch
from .folders import (
    IMAGE_EXTENSIONS,
    VAL_LABEL_FILES,
    ImageFolder,
    ImageNetFolders,
    find_classes,
    read_val_labels,
    scan_imagenet_split,
)
from .loader import ImageNetLoader
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    decode_eval,
    decode_train,
    normalise_batch,
    random_resized_crop_box,
    sample_rng,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "VAL_LABEL_FILES",
    "ImageFolder",
    "ImageNetFolders",
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
