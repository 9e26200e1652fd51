"""The validation split: held out of the training set, stratified, seeded by validation_seed alone.

Defaults and tuned settings are chosen on the validation error; these tests
pin down that the held-out part is never trained on, never part of the test
set, the same for every rule and seed, and that its metrics are what a
direct evaluation of the trained network gives.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from weightmirror import results
from weightmirror.sims import config
from weightmirror.sims.cli import main
from weightmirror.sims.datasets import Dataset, load_digits, stratified_split
from weightmirror.sims.datasets.split import validation_counts
from weightmirror.sims.training import ArraySource, build_network, load_data, train
from weightmirror.sims.training.seeds import ORDER

SMALL = {"epochs": 2, "batch_size": 64, "model_options": {"hidden": [32]},
         "wm": {"initial_mirror_steps": 40, "initial_decay": 0.03}}
VAL_KEYS = ("val_loss", "val_top1_error", "val_top5_error")


def _cfg(**over) -> config.TrainConfig:
    return config.resolve({**SMALL, **over})


def _tagged_digits() -> Dataset:
    """Digits labels; every sample's single feature is its identity: training i -> i, test j -> n + j."""
    d = load_digits(seed=0)
    n, m = len(d.y_train), len(d.y_test)
    return Dataset(name="tagged", x_train=np.arange(n, dtype=np.float32)[:, None], y_train=d.y_train,
                   x_test=np.arange(n, n + m, dtype=np.float32)[:, None], y_test=d.y_test,
                   num_classes=10, image_shape=(1, 1, 1))


def _ids(batches) -> np.ndarray:
    parts = [np.asarray(x)[:, 0].astype(np.int64) for x, _ in batches]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _class_counts(labels, idx, k=10) -> np.ndarray:
    return np.bincount(np.asarray(labels)[idx], minlength=k)


# --------------------------------------------------------------------------
# the split itself
# --------------------------------------------------------------------------


def test_the_split_is_stratified_disjoint_sorted_and_reproducible():
    # classes of 1, 2, 3, 5, 15, 25, 35, 100 samples, shuffled
    sizes = [1, 2, 3, 5, 15, 25, 35, 100]
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(len(sizes)), sizes))
    for fraction in (0.05, 0.1, 0.25, 0.5):
        train_idx, val_idx = stratified_split(labels, fraction, 0)
        assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0), "sorted, no repeats"
        assert np.intersect1d(train_idx, val_idx).size == 0
        assert np.array_equal(np.union1d(train_idx, val_idx), np.arange(len(labels)))
        got = _class_counts(labels, val_idx, len(sizes))
        for n, k in zip(sizes, got):
            assert abs(k - round(fraction * n)) <= 1, (fraction, n, k)
            # the documented rule: floor(f n + 1/2), at least 1 from a class of >= 2, none from a class of 1
            want = 0 if n < 2 else max(1, math.floor(fraction * n + 0.5))
            assert k == want, (fraction, n, k, want)
        assert np.array_equal(got, validation_counts(sizes, fraction))
        again = stratified_split(labels.copy(), fraction, 0)
        assert np.array_equal(again[0], train_idx) and np.array_equal(again[1], val_idx)
    a = stratified_split(labels, 0.1, 0)[1]
    b = stratified_split(labels, 0.1, 1)[1]
    assert not np.array_equal(a, b), "another validation_seed holds out other samples"
    assert np.array_equal(_class_counts(labels, a, len(sizes)), _class_counts(labels, b, len(sizes)))
    train_idx, val_idx = stratified_split(labels, 0.0, 0)
    assert np.array_equal(train_idx, np.arange(len(labels))) and val_idx.size == 0


def test_the_digits_split_holds_out_a_tenth_of_each_class():
    d = load_digits(seed=0)
    train_idx, val_idx = d.validation_split(0.1, 0)
    sizes = np.bincount(d.y_train, minlength=10)
    held = _class_counts(d.y_train, val_idx)
    assert np.all(np.abs(held - np.round(0.1 * sizes)) <= 1) and held.sum() == 143
    x, y = d.held_out(0.1, 0)
    assert np.array_equal(x, d.x_train[val_idx]) and np.array_equal(y, d.y_train[val_idx])


# --------------------------------------------------------------------------
# what the source serves
# --------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2])
def test_training_batches_never_serve_the_held_out_part_nor_the_test_set(world_size):
    data = _tagged_digits()
    n = len(data.y_train)
    cfg = _cfg(rule="bp", batch_size=50)
    sources = [ArraySource(data, cfg, r, world_size) for r in range(world_size)]
    src = sources[0]
    assert src.n_validation == 143 and src.n_train == n - 143 and src.n_test == len(data.y_test)
    assert src.steps_per_epoch() == (n - 143) // 50
    val = np.sort(np.concatenate([_ids(s.val_batches()) for s in sources]))
    assert np.array_equal(val, src.val_idx), "the ranks' validation shards are the held-out part, once each"
    test = np.concatenate([_ids(s.eval_batches()) for s in sources])
    assert np.intersect1d(val, test).size == 0 and test.min() >= n, "the test set is not touched"
    for epoch in range(3):
        served = np.concatenate([_ids(s.train_batches(epoch)) for s in sources])
        assert len(served) == src.steps_per_epoch() * 50 and len(np.unique(served)) == len(served)
        assert np.intersect1d(served, val).size == 0, "a held-out sample was served for training"
        assert np.intersect1d(served, test).size == 0
        assert np.isin(served, src.train_idx).all()
        # the labels served are those of the samples served
        ys = np.concatenate([y for s in sources for _, y in s.train_batches(epoch)])
        assert np.array_equal(ys, data.y_train[served])
    mx, my = src.metric_batch(256)
    assert len(my) == 256 and np.intersect1d(_ids([(mx, my)]), val).size == 0, "δ-angle batch from training part"


def test_the_split_is_the_same_for_every_rule_and_seed_and_moves_with_validation_seed():
    data = _tagged_digits()
    first = ArraySource(data, _cfg(rule="bp", seed=0), 0, 1).val_idx
    for rule in ("bp", "fa", "wm", "kp", "brsf"):
        for seed in (0, 1, 7):
            src = ArraySource(data, _cfg(rule=rule, seed=seed), 0, 1)
            assert np.array_equal(src.val_idx, first), (rule, seed)
            held = np.sort(_ids(src.val_batches()))
            assert np.array_equal(held, first)
    other = ArraySource(data, _cfg(rule="bp", validation_seed=1), 0, 1).val_idx
    assert len(other) == len(first) and not np.array_equal(other, first)
    assert np.array_equal(ArraySource(data, _cfg(rule="bp", validation_seed=1, seed=5), 0, 1).val_idx, other)
    # and a training run reports the split it used: the same sizes for every seed
    sizes = {(r.summary["n_train"], r.summary["n_validation"], r.summary["n_test"])
             for r in (train(_cfg(rule="fa", seed=s, epochs=1), data=data, progress=False) for s in (0, 3))}
    assert sizes == {(len(data.y_train) - 143, 143, len(data.y_test))}


def test_validation_zero_trains_on_the_whole_training_set_without_val_metrics():
    data = load_digits(seed=0)
    src = ArraySource(data, _cfg(validation=0), 0, 1)
    n = len(data.y_train)
    assert src.n_train == n == 1437 and src.n_validation == 0 and list(src.val_batches()) == []
    assert src.steps_per_epoch() == n // 64
    # the order of the time before the split existed: the permutation of the whole set
    for epoch in range(2):
        want = np.random.default_rng([0, ORDER, epoch]).permutation(n)
        assert np.array_equal(src.order(epoch), want)
    run = train(_cfg(rule="bp", validation=0, epochs=1), progress=False)
    for row in run.metrics:
        assert not any(k.startswith("val_") for k in row), row.keys()
    assert not any(k.startswith("val_") for k in run.summary)
    assert (run.summary["n_train"], run.summary["n_validation"], run.summary["n_test"]) == (1437, 0, 360)
    on = train(_cfg(rule="bp", epochs=1), progress=False)
    assert all(set(VAL_KEYS) <= set(row) for row in on.metrics), "epoch 0 included"
    assert on.summary["n_train"] == 1437 - 143


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------


def test_defaults_and_the_written_config():
    cfg = config.TrainConfig()
    assert cfg.validation == 0.1 and cfg.validation_seed == 0
    d = cfg.to_dict()
    assert d["validation"] == 0.1 and d["validation_seed"] == 0
    assert config.resolve({"validation": 0}).validation == 0.0
    assert config.resolve({"validation": 0.5, "validation_seed": 12}).to_dict()["validation_seed"] == 12


@pytest.mark.parametrize("toml, needle", [
    ("validation = 0.9\n", "config key validation: must be in [0, 0.5], got 0.9"),
    ("validation = -0.1\n", "config key validation: must be in [0, 0.5], got -0.1"),
    ("validation = nan\n", "config key validation: must be a finite number in [0, 0.5], got nan"),
    ("validation = true\n", "config key validation: expected a number"),
    ("validation_seed = -1\n", "config key validation_seed: must be >= 0, got -1"),
    ("validation_seed = 1.5\n", "config key validation_seed: expected an integer"),
])
def test_bad_validation_values_are_one_line(tmp_path, toml, needle, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    code = main(["train", "--config", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()
    with pytest.raises(config.ConfigError) as info:
        config.resolve(config.read_file(path))
    assert "\n" not in str(info.value) and needle in str(info.value)


def test_direct_construction_is_checked_too():
    for bad in (0.9, -0.1, float("nan"), float("inf")):
        with pytest.raises(config.ConfigError, match=r"config key validation: .*\[0, 0\.5\]"):
            config.TrainConfig(validation=bad)
    with pytest.raises(config.ConfigError, match="config key validation_seed: must be >= 0"):
        config.TrainConfig(validation_seed=-1)


# --------------------------------------------------------------------------
# the metrics
# --------------------------------------------------------------------------


def test_val_metrics_equal_a_direct_evaluation_of_the_trained_network(tmp_path):
    cfg = _cfg(rule="wm", validation=0.2, validation_seed=3, seed=2)
    run = train(cfg, tmp_path / "run", progress=False)
    last = run.metrics[-1]
    summary = json.loads((tmp_path / "run" / results.SUMMARY).read_text())
    for key in VAL_KEYS:
        assert summary[key] == last[key] == run.summary[key]
    # by hand: the checkpoint in a freshly built network, on the held-out samples
    data = load_data(cfg)
    _, val_idx = stratified_split(data.y_train, 0.2, 3)
    assert summary["n_validation"] == len(val_idx) and summary["n_train"] == len(data.y_train) - len(val_idx)
    assert summary["n_test"] == len(data.y_test)
    from weightmirror.models.backend import get_array_module

    xp = get_array_module("cpu")
    net = build_network(cfg, data, xp)
    arrays = results.load_arrays(tmp_path / "run" / results.CHECKPOINT)
    net.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("net.")})
    x, y = data.x_train[val_idx], data.y_train[val_idx]
    logits = np.asarray(net.forward(x, train=False), dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(len(y)), y].mean()
    top1 = 100.0 * np.mean(logits.argmax(axis=1) != y)
    top5 = 100.0 * np.mean(~(np.argsort(-logits, axis=1)[:, :5] == y[:, None]).any(axis=1))
    assert last["val_top1_error"] == pytest.approx(top1, abs=1e-9)
    assert last["val_top5_error"] == pytest.approx(top5, abs=1e-9)
    assert last["val_loss"] == pytest.approx(loss, rel=1e-5)
    # the test figures are of the test set, not of the held-out samples
    test_top1 = 100.0 * np.mean(np.asarray(net.forward(data.x_test, train=False)).argmax(axis=1) != data.y_test)
    assert last["test_top1_error"] == pytest.approx(test_top1, abs=1e-9)
    assert last["epoch"] == 2


def test_the_epoch_line_shows_the_validation_error():
    lines = []
    train(_cfg(rule="bp", epochs=1), progress=True, log=lines.append)
    assert any("val error" in line and "test error" in line for line in lines), lines
    lines = []
    train(_cfg(rule="bp", epochs=1, validation=0), progress=True, log=lines.append)
    assert lines and not any("val error" in line for line in lines)
    # the input layer's B carries no error: its angle is printed in parentheses
    epoch_lines = [line for line in lines if "angle(B,W^T)" in line]
    assert epoch_lines and all(re.search(r"angle\(B,W\^T\) \(\d+\.\d\)(/\d+\.\d)+ deg", line) for line in epoch_lines)


# --------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------


def _rows_without_times(out):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"}
            for r in results.read_metrics(Path(out) / results.METRICS)]


def test_a_mid_epoch_resume_with_a_validation_part_is_the_same_run(tmp_path):
    cfg = _cfg(rule="bp", epochs=3, validation=0.25, validation_seed=2)
    steps = ArraySource(load_data(cfg), cfg).steps_per_epoch()
    assert steps == (1437 - 360) // 64  # 1,077 training images of 1,437
    whole = train(cfg, tmp_path / "whole", progress=False).summary
    part = train(cfg, tmp_path / "part", progress=False, stop_after_steps=steps + 3, log=lambda s: None).summary
    assert part["resume_from"] == {"epoch": 1, "step": 3}
    resumed = train(None, tmp_path / "part", resume=True, progress=False, log=lambda s: None).summary
    a, b = _rows_without_times(tmp_path / "whole"), _rows_without_times(tmp_path / "part")
    assert [r["epoch"] for r in b] == [0, 1, 2, 3] and all(set(VAL_KEYS) <= set(r) for r in b)
    assert a == b, "bp draws no noise: the resumed run is the uninterrupted one, val metrics included"
    for key in (*VAL_KEYS, "test_top1_error", "n_train", "n_validation"):
        assert resumed[key] == whole[key], key


def test_a_run_written_before_the_split_resumes_on_its_whole_training_set(tmp_path):
    """A config.toml without the validation keys (0.2.0) resumes as it trained: validation = 0."""
    cfg = _cfg(rule="bp", epochs=2, validation=0)
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "old", progress=False, stop_after=1)
    path = tmp_path / "old" / results.CONFIG
    text = "".join(line for line in path.read_text().splitlines(keepends=True)
                   if not line.startswith(("validation =", "validation_seed =")))
    assert "validation" not in text
    path.write_text(text)
    resumed = train(None, tmp_path / "old", resume=True, progress=False, log=lambda s: None).summary
    assert resumed["n_validation"] == 0 and resumed["n_train"] == 1437
    assert _rows_without_times(tmp_path / "old") == _rows_without_times(tmp_path / "whole")


# --------------------------------------------------------------------------
# ImageNet folders: validation out of train/, val/ stays the test set
# --------------------------------------------------------------------------


def _imagenet_cfg(root: Path, **over) -> config.TrainConfig:
    values = {"rule": "bp", "model": "convnet", "data": "imagenet", "data_dir": str(root), "epochs": 1,
              "batch_size": 4, "model_options": {"channels": [4, 8], "hidden": 16},
              "run": {"image_size": 32, "workers": 0, "eval_batch_size": 4, "delta_batch_size": 6}}
    return config.resolve({**values, **over})


def test_imagenet_validation_comes_out_of_train_and_is_never_trained_on(tmp_path):
    pytest.importorskip("PIL", reason="Pillow is needed to write and decode test JPEGs")
    from test_train_imagenet import build_imagenet_root

    from weightmirror.sims.training import ImageFolderSource

    root = build_imagenet_root(tmp_path / "imagenet")
    cfg = _imagenet_cfg(root, validation=0.5)
    folders = load_data(cfg)
    source = ImageFolderSource(folders, cfg)
    try:
        held = source.validation_part
        train_dir = str(root / "train")
        assert all(Path(p).parent.parent == Path(train_dir) for p in held.paths), "validation out of train/"
        assert not set(held.paths) & set(folders.val.paths), "val/ is the test set, untouched"
        # per class floor(0.5 n + 1/2): 4 images -> 2, 5 images (one broken) -> 3
        sizes = np.bincount(folders.train.labels, minlength=3)
        assert np.array_equal(np.bincount(held.labels, minlength=3), validation_counts(sizes, 0.5))
        assert sorted(held.paths + source.train_part.paths) == sorted(folders.train.paths)
        assert source.train_loader.folder is source.train_part
        assert source.validation_loader.folder is held and source.validation_loader.train is False
        for epoch in range(3):
            served = {source.train_part.paths[i] for i in np.concatenate(source.train_loader.batch_indices(epoch))}
            assert served and not served & set(held.paths), "a held-out image was served for training"
        assert (source.n_train, source.n_validation, source.n_test) == (6, 7, 6)
        assert source.steps_per_epoch() == 1
        # the held-out images decode with the evaluation transform, as the test set
        decoded = sum(len(y) for _, y in source.val_batches())
        broken = str(root / "train" / "n01443537" / "broken.JPEG")
        assert decoded == 7 - (broken in held.paths) and source.val_skipped == (broken in held.paths)
    finally:
        source.close()

    # a run: one image per class held out (the at-least-one rule), val and test metrics side by side
    out = tmp_path / "run"
    summary = train(_imagenet_cfg(root), out, progress=False).summary
    rows = results.read_metrics(out / results.METRICS)
    assert (summary["n_train"], summary["n_validation"], summary["n_test"]) == (10, 3, 6)
    source = ImageFolderSource(load_data(_imagenet_cfg(root)), _imagenet_cfg(root))
    source.close()
    broken_held = broken in source.validation_part.paths
    for row in rows:
        assert set(VAL_KEYS) <= set(row) and {"test_top1_error", "skipped_val_images"} <= set(row)
        assert row["skipped_val_images"] == int(broken_held)
        n_val = 3 - broken_held
        assert round(row["val_top1_error"] * n_val / 100, 6) == round(row["val_top1_error"] * n_val / 100)
        assert row["val_top5_error"] == 0.0  # 3 classes
    assert summary["val_top1_error"] == rows[-1]["val_top1_error"]
