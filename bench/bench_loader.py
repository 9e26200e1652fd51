"""Benchmark: images per second of the ImageNet loader (decode + transform).

Generates a folder of ImageNet-like JPEGs (default 512 images, 500x375,
quality 90, textured so that files are about ImageNet's size), then times
whole epochs of :class:`sims.datasets.imagenet.ImageNetLoader` for the training and
the evaluation transform at several worker counts.  The figure includes
Pillow decoding, the crop/resize, the transfer from the workers and the
float32 normalisation of the batches; nothing consumes the batches.

Usage::

    python -m bench.bench_loader                      # workers 1 and 2
    python -m bench.bench_loader --workers 1 2 4 8 16 --images 1024

A GPU that trains ResNet-50 at R images/s needs R / (per-worker rate)
decoding cores; the printed table gives the per-worker rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, n_images: int, width: int, height: int, classes: int = 8) -> float:
    """Write ``n_images`` JPEGs under ``root/train/<wnid>/``; return mean file KiB."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    sizes = []
    for i in range(n_images):
        wnid = f"n{1000000 + i % classes:08d}"
        d = root / "train" / wnid
        d.mkdir(parents=True, exist_ok=True)
        fx, fy, ph = rng.uniform(0.01, 0.08, 3)
        base = np.stack(
            [
                128 + 100 * np.sin(fx * xx + ph * 10),
                128 + 100 * np.sin(fy * yy + ph * 20),
                128 + 100 * np.sin(fx * xx + fy * yy),
            ],
            axis=-1,
        )
        noise = rng.normal(0, 18, (height, width, 3))
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = d / f"{wnid}_{i}.JPEG"
        Image.fromarray(arr).save(path, "JPEG", quality=90)
        sizes.append(path.stat().st_size)
    return float(np.mean(sizes)) / 1024


def time_loader(folder, train: bool, workers: int, batch_size: int, epochs: int, size: int) -> float:
    """Images per second over ``epochs`` epochs (the pool started beforehand)."""
    from weightmirror.sims.datasets.imagenet import ImageNetLoader

    with ImageNetLoader(
        folder, batch_size, train=train, size=size, seed=0, workers=workers, prefetch=2
    ) as loader:
        # start the pool and warm the page cache with one batch
        next(iter(loader.epoch(99)))
        n = 0
        t0 = time.perf_counter()
        for e in range(epochs):
            for x, _ in loader.epoch(e):
                n += len(x)
        dt = time.perf_counter() - t0
    return n / dt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dir", type=Path, default=None, help="reuse/create the JPEG folder here")
    args = parser.parse_args(argv)

    from weightmirror.sims.datasets.imagenet import scan_imagenet_split

    tmp = None
    root = args.dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="wm_bench_loader_")
        root = Path(tmp.name)
    if not (root / "train").is_dir():
        t0 = time.perf_counter()
        kib = make_folder(root, args.images, args.width, args.height)
        print(f"wrote {args.images} JPEGs {args.width}x{args.height}, mean {kib:.0f} KiB, "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
    folder = scan_imagenet_split(root, "train")
    import PIL

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, NumPy {np.__version__}, Pillow {PIL.__version__}")
    print(f"{len(folder)} images, batch {args.batch_size}, output {args.size}x{args.size}, "
          f"{args.epochs} epochs per figure")
    print("| transform | workers | images/s | images/s per worker |")
    print("|---|---|---|---|")
    for train in (True, False):
        for w in args.workers:
            rate = time_loader(folder, train, w, args.batch_size, args.epochs, args.size)
            name = "train (RRC + flip)" if train else "eval (resize + centre crop)"
            print(f"| {name} | {w} | {rate:.0f} | {rate / w:.0f} |", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
