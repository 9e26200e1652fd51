"""The ImageNet image transforms (Pillow): crop boxes, decoding, normalisation.

The training transform is torchvision's
``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`` followed by a
random horizontal flip; the evaluation transform resizes the shorter side to
``round(256 * size / 224)`` and takes the central ``size x size`` crop.
Images are then normalised with the ImageNet channel mean
``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``.  Every random
draw of sample ``i`` in epoch ``e`` comes from the generator
:func:`sample_rng` seeded by ``(seed, e, i)``, so it does not depend on the
process that decodes the sample.  These functions run inside the worker
processes of :class:`weightmirror.sims.datasets.imagenet.loader.ImageNetLoader`.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "sample_rng",
    "random_resized_crop_box",
    "decode_train",
    "decode_eval",
    "normalise_batch",
]

#: ImageNet channel mean and std (R, G, B) of pixels scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SAMPLE_TAG = 1  # appended to (seed, epoch, index) for per-sample generators


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
