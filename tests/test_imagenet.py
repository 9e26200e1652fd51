"""Tests for sims.datasets.imagenet on small generated JPEG folders and .npz batches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL", reason="Pillow is needed to write and decode test JPEGs")
from PIL import Image  # noqa: E402

from weightmirror.sims.datasets import DataError, Dataset  # noqa: E402
from weightmirror.sims.datasets.imagenet import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageNetLoader,
    decode_eval,
    decode_train,
    find_classes,
    load_downsampled_imagenet,
    normalise_batch,
    random_resized_crop_box,
    read_downsampled_batch,
    read_val_labels,
    sample_rng,
    scan_imagenet_split,
)

WNIDS = ("n01440764", "n01443537", "n01484850")


def _jpeg(path: Path, rng: np.random.Generator, size=(40, 30), mode="RGB") -> Path:
    w, h = size
    base = rng.integers(0, 256, (h // 5 + 1, w // 5 + 1, 3), dtype=np.uint8)
    arr = np.kron(base, np.ones((5, 5, 1), dtype=np.uint8))[:h, :w]
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)
    return path


@pytest.fixture
def imagenet_root(tmp_path) -> Path:
    """train/<wnid>/ with 4 images each (one grey, one broken) and a foldered val/."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet"
    for k, wnid in enumerate(WNIDS):
        for i in range(4):
            size = (40 + 8 * i, 30 + 5 * k)
            mode = "L" if (k, i) == (1, 2) else "RGB"
            _jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", rng, size, mode)
        _jpeg(root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", rng)
    # a truncated JPEG and a garbage file, both named like images
    good = (root / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG").read_bytes()
    (root / "train" / WNIDS[0] / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (root / "train" / WNIDS[2] / "garbage.JPEG").write_bytes(b"not a jpeg at all" * 10)
    (root / "train" / WNIDS[2] / "notes.txt").write_text("ignored: not an image")
    return root


def _flat_val(root: Path, rng=None) -> list[str]:
    """Turn val/ into a flat folder of 6 images; returns their wnids in file order."""
    rng = rng or np.random.default_rng(1)
    val = root / "val"
    for d in list(val.iterdir()):
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    wnids = [WNIDS[i % 3] for i in (2, 0, 1, 1, 0, 2)]
    for i, _ in enumerate(wnids):
        _jpeg(val / f"ILSVRC2012_val_{i + 1:08d}.JPEG", rng)
    return wnids


# --------------------------------------------------------------------------
# scanning
# --------------------------------------------------------------------------


def test_scan_train_folders(imagenet_root):
    assert find_classes(imagenet_root / "train") == WNIDS
    f = scan_imagenet_split(imagenet_root, "train")
    assert f.classes == WNIDS and f.num_classes == 3
    assert len(f) == 14  # 12 images + 2 broken, the .txt ignored
    assert f.labels.dtype == np.int64
    assert np.bincount(f.labels).tolist() == [5, 4, 5]
    for p, y in zip(f.paths, f.labels):
        assert Path(p).parent.name == WNIDS[y]


def test_scan_val_class_folders(imagenet_root):
    f = scan_imagenet_split(imagenet_root, "val")
    assert f.labels.tolist() == [0, 1, 2]


def test_val_labels_from_loc_csv(imagenet_root):
    wnids = _flat_val(imagenet_root)
    rows = ["ImageId,PredictionString"] + [
        f"ILSVRC2012_val_{i + 1:08d},{w} 10 12 30 28 {w} 1 2 3 4" for i, w in enumerate(wnids)
    ]
    (imagenet_root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    f = scan_imagenet_split(imagenet_root, "val")  # found automatically in root
    assert [WNIDS[k] for k in f.labels] == wnids
    assert all(Path(p).parent == imagenet_root / "val" for p in f.paths)


def test_val_labels_from_text_file_wnids_and_indices(imagenet_root, tmp_path):
    wnids = _flat_val(imagenet_root)
    lines = ["# filename label"]
    for i, w in enumerate(wnids):
        label = w if i % 2 else str(WNIDS.index(w))  # mix wnids and 0-based indices
        name = f"ILSVRC2012_val_{i + 1:08d}" + (".JPEG" if i % 3 else "")
        lines.append(f"{name} {label}")
    labels_file = tmp_path / "my_labels.txt"
    labels_file.write_text("\n".join(lines) + "\n\n")
    f = scan_imagenet_split(imagenet_root, "val", labels_file=labels_file)
    assert [WNIDS[k] for k in f.labels] == wnids


def test_bad_labels_files_raise_data_error(imagenet_root, tmp_path):
    _flat_val(imagenet_root)
    with pytest.raises(DataError, match="needs a labels file"):
        scan_imagenet_split(imagenet_root, "val")
    bad = tmp_path / "bad.txt"
    bad.write_text("ILSVRC2012_val_00000001 n99999999\n")
    with pytest.raises(DataError, match=r"bad\.txt:1: unknown class 'n99999999'"):
        scan_imagenet_split(imagenet_root, "val", labels_file=bad)
    bad.write_text("ILSVRC2012_val_00000001 3\n")
    with pytest.raises(DataError, match=r"out of range 0\.\.2"):
        read_val_labels(bad, WNIDS)
    bad.write_text("just-one-column\n")
    with pytest.raises(DataError, match="expected '<filename> <wnid-or-index>'"):
        read_val_labels(bad, WNIDS)
    bad.write_text("ILSVRC2012_val_00000001 n01440764\n")  # 5 images lack labels
    with pytest.raises(DataError, match="no label for 5 of the 6 images"):
        scan_imagenet_split(imagenet_root, "val", labels_file=bad)
    csv = tmp_path / "wrong.csv"
    csv.write_text("id,label\nx,n01440764\n")
    with pytest.raises(DataError, match="ImageId,PredictionString"):
        read_val_labels(csv, WNIDS)
    with pytest.raises(DataError, match="labels file not found"):
        read_val_labels(tmp_path / "nope.csv", WNIDS)


def test_missing_dirs_and_empty_splits(tmp_path):
    with pytest.raises(DataError, match="directory not found"):
        scan_imagenet_split(tmp_path / "nowhere", "train")
    (tmp_path / "r" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        scan_imagenet_split(tmp_path / "r", "train")
    (tmp_path / "r" / "train" / "n0").mkdir()
    with pytest.raises(DataError, match=r"train: no images"):
        scan_imagenet_split(tmp_path / "r", "train")
    _jpeg(tmp_path / "r" / "train" / "n0" / "a.JPEG", np.random.default_rng(0))
    with pytest.raises(DataError, match=r"val: directory not found"):
        scan_imagenet_split(tmp_path / "r", "val")
    (tmp_path / "r" / "val").mkdir()
    with pytest.raises(DataError, match=r"val: no images"):
        scan_imagenet_split(tmp_path / "r", "val")
    (tmp_path / "r" / "val" / "n9").mkdir()
    with pytest.raises(DataError, match="not among the 1 training classes"):
        scan_imagenet_split(tmp_path / "r", "val")
    with pytest.raises(DataError, match="unknown split"):
        scan_imagenet_split(tmp_path / "r", "test")


# --------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------


def test_random_resized_crop_box_fits_and_falls_back():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(375, 500, rng)
        assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
        assert h > 0 and w > 0
    # a 1000x10 strip: no try can fit, the fallback clamps the ratio to 4/3
    top, left, h, w = random_resized_crop_box(10, 1000, np.random.default_rng(0))
    assert (h, w) == (10, 13) and top == 0 and left == (1000 - 13) // 2
    top, left, h, w = random_resized_crop_box(1000, 10, np.random.default_rng(0))
    assert (h, w) == (13, 10)


def test_transforms_shapes_and_determinism(imagenet_root):
    path = str(imagenet_root / "train" / WNIDS[0] / f"{WNIDS[0]}_3.JPEG")  # 64x30
    a = decode_train(path, sample_rng(5, 0, 7), size=24)
    b = decode_train(path, sample_rng(5, 0, 7), size=24)
    c = decode_train(path, sample_rng(5, 1, 7), size=24)
    assert a.shape == (24, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    full = decode_train(path, sample_rng(5, 0, 7), size=24, fast_decode=False)
    assert full.shape == a.shape
    e = decode_eval(path, size=16)
    assert e.shape == (16, 16, 3) and np.array_equal(e, decode_eval(path, size=16))
    grey = str(imagenet_root / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG")
    assert decode_eval(grey, size=16).shape == (16, 16, 3)


def test_eval_transform_is_resize_then_centre_crop(tmp_path):
    # left half black, right half white, 200x100: the centre crop straddles the edge
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, 100:] = 255
    p = tmp_path / "edge.png"
    Image.fromarray(arr).save(p)
    out = decode_eval(str(p), size=56)  # shorter side -> 64, image 128x64, crop 56
    assert out.shape == (56, 56, 3)
    assert out[:, :20].max() < 30 and out[:, -20:].min() > 225


def test_normalise_batch():
    imgs = np.zeros((2, 4, 5, 3), np.uint8)
    imgs[1] = 255
    x = normalise_batch(imgs)
    assert x.shape == (2, 3, 4, 5) and x.dtype == np.float32
    for c in range(3):
        assert np.allclose(x[0, c], -IMAGENET_MEAN[c] / IMAGENET_STD[c], atol=1e-6)
        assert np.allclose(x[1, c], (1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-6)


# --------------------------------------------------------------------------
# the loader
# --------------------------------------------------------------------------


def test_loader_skips_broken_files_and_is_deterministic(imagenet_root, caplog):
    folder = scan_imagenet_split(imagenet_root, "train")
    caplog.set_level(logging.WARNING, logger="weightmirror.imagenet")
    with ImageNetLoader(folder, batch_size=5, train=True, size=16, seed=3, workers=2) as loader:
        assert len(loader) == 3
        batches = list(loader.epoch(0))
        assert loader.skipped == 2
        assert sorted(Path(p).name for p in loader.skipped_files) == ["garbage.JPEG", "truncated.JPEG"]
        warned = [r.getMessage() for r in caplog.records]
        assert len(warned) == 2 and all("skipped unreadable image" in m for m in warned)
        again = list(loader.epoch(0))
        assert loader.skipped == 4 and len(caplog.records) == 2  # counted again, logged once
        other = list(loader.epoch(1))
    xs = np.concatenate([x for x, _ in batches])
    ys = np.concatenate([y for _, y in batches])
    assert xs.shape == (12, 3, 16, 16) and xs.dtype == np.float32
    assert ys.dtype == np.int64 and sorted(ys.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    for (x1, y1), (x2, y2) in zip(batches, again):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(np.concatenate([y for _, y in other]), ys) or not np.array_equal(
        np.concatenate([x for x, _ in other]), xs
    )
    # same batches whatever the number of workers (in-process decoding here)
    with ImageNetLoader(folder, batch_size=5, train=True, size=16, seed=3, workers=0) as serial:
        for (x1, y1), (x2, y2) in zip(batches, serial.epoch(0)):
            assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_loader_eval_order_shards_and_prefetch(imagenet_root):
    folder = scan_imagenet_split(imagenet_root, "val")
    loader = ImageNetLoader(folder, batch_size=2, train=False, size=16, workers=0, prefetch=3)
    ys = np.concatenate([y for _, y in loader.epoch(0)])
    assert ys.tolist() == [0, 1, 2]
    train = scan_imagenet_split(imagenet_root, "train")
    parts = [
        ImageNetLoader(train, 6, train=True, size=8, seed=1, workers=0, rank=r, world_size=2)
        for r in range(2)
    ]
    shards = [p.batch_indices(0) for p in parts]
    whole = ImageNetLoader(train, 6, train=True, size=8, seed=1, workers=0).batch_indices(0)
    for a, b, full in zip(*shards, whole):
        assert np.array_equal(np.concatenate([a, b]), full)
    with pytest.raises(ValueError, match="rank"):
        ImageNetLoader(train, 6, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        ImageNetLoader(train, 0)


# --------------------------------------------------------------------------
# downsampled ImageNet .npz
# --------------------------------------------------------------------------


def _write_npz(path: Path, n: int, side: int, rng, **override):
    arrays = {
        "data": rng.integers(0, 256, (n, 3 * side * side), dtype=np.uint8),
        "labels": rng.integers(1, 1001, n).tolist(),
        "mean": np.zeros(3 * side * side),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_read_downsampled_batch_layout(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _write_npz(tmp_path / "val_data.npz", 5, 8, rng)
    x, y = read_downsampled_batch(tmp_path / "val_data.npz")
    assert x.shape == (5, 3, 8, 8) and x.dtype == np.uint8
    # channel-major: the first 64 values of a row are the red plane, row-major
    assert np.array_equal(x[2, 0], arrays["data"][2, :64].reshape(8, 8))
    assert np.array_equal(x[2, 2], arrays["data"][2, 128:].reshape(8, 8))
    assert y.tolist() == [v - 1 for v in arrays["labels"]] and y.dtype == np.int64


def test_load_downsampled_imagenet_standardised(tmp_path):
    rng = np.random.default_rng(1)
    for b in (1, 2):
        _write_npz(tmp_path / f"train_data_batch_{b}.npz", 6, 4, rng)
    _write_npz(tmp_path / "val_data.npz", 3, 4, rng)
    ds = load_downsampled_imagenet(tmp_path, train_batches=[1, 2])
    assert isinstance(ds, Dataset) and ds.name == "imagenet4"
    assert ds.x_train.shape == (12, 3, 4, 4) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (3, 3, 4, 4) and ds.num_classes == 1000
    assert np.allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.allclose(ds.x_train.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert ds.y_train.min() >= 0 and ds.y_train.max() <= 999
    flat = load_downsampled_imagenet(tmp_path, train_batches=[1], flatten=True)
    assert flat.x_train.shape == (6, 48)
    with pytest.raises(DataError, match=r"train_data_batch_3\.npz: file not found"):
        load_downsampled_imagenet(tmp_path)  # all ten by default


@pytest.mark.parametrize(
    "override,match",
    [
        ({"data": None}, r"lacks key\(s\) data"),
        ({"labels": None}, r"lacks key\(s\) labels"),
        ({"data": np.zeros((4, 50), np.uint8)}, "not 3\\*S\\*S"),
        ({"data": np.zeros((4, 3, 4, 4), np.uint8)}, "must be uint8 of shape"),
        ({"data": np.zeros((4, 48), np.float32)}, "must be uint8 of shape"),
        ({"labels": [1, 2, 3]}, "has 3 labels but 4 images"),
        ({"labels": [0, 1, 2, 3]}, r"labels must be 1\.\.1000"),
        ({"labels": [1, 2, 3, 1001]}, r"labels must be 1\.\.1000"),
    ],
)
def test_downsampled_bad_files(tmp_path, override, match):
    rng = np.random.default_rng(2)
    p = tmp_path / "val_data.npz"
    kw = {"data": rng.integers(0, 256, (4, 48), dtype=np.uint8)}
    kw.update(override)
    _write_npz(p, 4, 4, rng, **kw)
    with pytest.raises(DataError, match=match) as info:
        read_downsampled_batch(p)
    assert str(info.value).startswith(str(p) + ": ") and "\n" not in str(info.value)


def test_downsampled_size_mismatch_and_non_npz(tmp_path):
    rng = np.random.default_rng(3)
    _write_npz(tmp_path / "train_data_batch_1.npz", 2, 4, rng)
    _write_npz(tmp_path / "val_data.npz", 2, 8, rng)
    with pytest.raises(DataError, match=r"val_data\.npz: images are 8x8, expected 4x4"):
        load_downsampled_imagenet(tmp_path, train_batches=[1])
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        read_downsampled_batch(junk)
    with pytest.raises(DataError, match="directory not found"):
        load_downsampled_imagenet(tmp_path / "none")


def test_loader_abandoned_epoch_does_not_corrupt_the_next(imagenet_root):
    folder = scan_imagenet_split(imagenet_root, "train")
    with ImageNetLoader(folder, 4, train=True, size=8, seed=0, workers=2, prefetch=2) as loader:
        reference = [x for x, _ in loader.epoch(0)]
        it = loader.epoch(1)
        next(it)  # leaves batches in flight, then a new epoch starts
        again = [x for x, _ in loader.epoch(0)]
        with pytest.raises(RuntimeError, match="another epoch"):
            next(it)
    assert all(np.array_equal(a, b) for a, b in zip(reference, again))
    first = reference[0].copy()
    assert np.array_equal(reference[0], first), "yielded batches are not overwritten later"


def test_loader_start_skips_batches_and_keep_empty_keeps_unreadable_batches(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "imagenet"
    for i in range(2):
        _jpeg(root / "train" / WNIDS[0] / f"good_{i}.JPEG", rng)
    (root / "train" / WNIDS[1]).mkdir(parents=True)
    (root / "train" / WNIDS[1] / "bad_0.JPEG").write_bytes(b"not a jpeg" * 10)
    (root / "train" / WNIDS[1] / "bad_1.JPEG").write_bytes(b"nor this" * 10)
    split = scan_imagenet_split(root, "train")
    # eval order is the sorted file order: batch 0 = the two good images, batch 1 = the two broken
    with ImageNetLoader(split, 2, train=False, size=16, workers=0) as loader:
        plain = list(loader.epoch(0))
        kept = list(loader.epoch(0, keep_empty=True))
        late = list(loader.epoch(0, start=1, keep_empty=True))
    assert [len(y) for _, y in plain] == [2]
    assert [len(y) for _, y in kept] == [2, 0] and kept[1][0].shape == (0, 3, 16, 16)
    assert [len(y) for _, y in late] == [0]
    assert loader.skipped == 6  # two broken files, in each of the three epochs


def test_decoding_workers_start_from_a_fork_server_and_die_with_their_parent(imagenet_root, tmp_path):
    """The loader's workers are not forks of the training process (a fork beside a running OpenBLAS
    call could hang it), and a parent killed with SIGKILL leaves no decoding worker behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from weightmirror.sims.datasets.imagenet import loader

    if "forkserver" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no fork server on this platform")
    assert loader.default_start_method() == "forkserver"
    pids = tmp_path / "pids"
    script = f"""
import os, sys, time
from pathlib import Path
from weightmirror.sims.datasets.imagenet import ImageNetLoader, scan_imagenet_split
folder = scan_imagenet_split({str(imagenet_root)!r}, "train")
with ImageNetLoader(folder, 4, train=True, size=16, workers=2) as ld:
    assert ld.start_method == "forkserver"
    next(iter(ld.epoch(0)))
    Path({str(pids)!r}).write_text(" ".join(str(p.pid) for p in ld._pool._pool))
    time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while not pids.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert pids.exists(), "the loader never produced a batch"
        workers = [int(p) for p in pids.read_text().split()]
        assert len(workers) == 2 and all(os.getppid() != w for w in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 10
        alive = workers
        while alive and time.time() < deadline:
            time.sleep(0.2)
            alive = [w for w in alive if os.path.exists(f"/proc/{w}") and
                     Path(f"/proc/{w}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")]
        assert not alive, f"decoding workers {alive} outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
