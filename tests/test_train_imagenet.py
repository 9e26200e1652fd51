"""Training end to end on a tiny generated ImageNet folder layout (JPEGs through Pillow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL", reason="Pillow is needed to write and decode test JPEGs")
from PIL import Image  # noqa: E402

from weightmirror import results
from weightmirror.sims import config  # noqa: E402
from weightmirror.sims.cli import main  # noqa: E402
from weightmirror.sims.training import ImageFolderSource, load_data, train  # noqa: E402

WNIDS = ("n01440764", "n01443537", "n01484850")


def _jpeg(path: Path, rng: np.random.Generator, k: int, size=(40, 30)) -> None:
    """A 40x30 JPEG whose dominant colour channel is the class ``k``."""
    w, h = size
    arr = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    arr[..., k] += 150
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", quality=90)


def build_imagenet_root(root: Path) -> Path:
    """train/<wnid>/ with 4 images per class plus one broken JPEG; val/<wnid>/ with 2 each."""
    rng = np.random.default_rng(0)
    for k, wnid in enumerate(WNIDS):
        for i in range(4):
            _jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", rng, k)
        for i in range(2):
            _jpeg(root / "val" / wnid / f"ILSVRC2012_val_{k}{i}.JPEG", rng, k)
    good = (root / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG").read_bytes()
    (root / "train" / WNIDS[1] / "broken.JPEG").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture
def imagenet_root(tmp_path) -> Path:
    """The layout of :func:`build_imagenet_root` (also used by tests/test_validation.py)."""
    return build_imagenet_root(tmp_path / "imagenet")


def _cfg(root: Path, **over) -> config.TrainConfig:
    values = {
        "rule": "bp", "model": "convnet", "data": "imagenet", "data_dir": str(root),
        "epochs": 1, "batch_size": 4, "seed": 0,
        "model_options": {"channels": [4, 8], "hidden": 16},
        "optim": {"lr": 0.05},
        "run": {"image_size": 32, "workers": 0, "eval_batch_size": 4, "delta_batch_size": 6},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    return config.resolve(values)


def test_imagenet_folder_trains_one_epoch_and_counts_skipped_images(tmp_path, imagenet_root):
    # validation = 0: the steps and the broken file are those of the whole train/ folder
    # (validation out of train/: tests/test_validation.py)
    out = tmp_path / "run"
    summary = train(_cfg(imagenet_root, validation=0), out, progress=False).summary
    rows = results.read_metrics(out / results.METRICS)
    assert [r["epoch"] for r in rows] == [0, 1]
    for row in rows:
        assert {"test_loss", "test_top1_error", "test_top5_error", "skipped_images",
                "skipped_eval_images"} <= set(row)
        assert row["test_top5_error"] == 0.0  # 3 classes: always among the top 5
        assert 0.0 <= row["test_top1_error"] <= 100.0
        # 6 val images: the error is a multiple of 1/6
        assert round(row["test_top1_error"] * 6 / 100, 6) == round(row["test_top1_error"] * 6 / 100)
    # 13 files, batch 4, drop_last: 3 steps over 12 of them; the broken file is among them
    folders = load_data(_cfg(imagenet_root, validation=0))
    source = ImageFolderSource(folders, _cfg(imagenet_root, validation=0))
    seen = np.concatenate(source.train_loader.batch_indices(0))
    broken = folders.train.paths.index(str(imagenet_root / "train" / WNIDS[1] / "broken.JPEG"))
    assert broken in seen  # (seed 0) so the epoch meets it once
    assert rows[1]["skipped_images"] == 1
    assert rows[0]["skipped_images"] == 0 and rows[1]["skipped_eval_images"] == 0
    assert summary["completed"] and summary["data"] == "imagenet"
    assert summary["skipped_images"] == rows[1]["skipped_images"]
    assert json.loads((out / "summary.json").read_text())["test_top5_error"] == 0.0
    assert source.steps_per_epoch() == 3 and source.image_shape == (3, 32, 32)


def test_imagenet_cli_with_workers_and_a_mid_epoch_resume(tmp_path, imagenet_root, capsys):
    """Through the CLI with a decoding worker; 2 epochs, stopped after step 4 (epoch 2, step 1), resumed."""
    cfg_path = tmp_path / "in.toml"
    cfg_path.write_text(
        "epochs = 2\nbatch_size = 4\nmodel = 'convnet'\nvalidation = 0\n"  # 3 steps per epoch: all of train/
        "[model_options]\nchannels = [4, 8]\nhidden = 16\n"
        "[run]\nimage_size = 32\nworkers = 1\neval_batch_size = 4\ndelta_batch_size = 6\n"
    )
    whole = tmp_path / "whole"
    assert main(["train", "--data", "imagenet", "--data-dir", str(imagenet_root), "--config", str(cfg_path),
                 "--out", str(whole), "--quiet"]) == 0
    cfg = config.read_file(whole / "config.toml")
    assert cfg["data"] == "imagenet" and cfg["run"]["image_size"] == 32
    part = tmp_path / "part"
    stopped = train(config.resolve(cfg), part, progress=False, stop_after_steps=4, log=lambda s: None).summary
    assert stopped["resume_from"] == {"epoch": 1, "step": 1}
    assert main(["train", "--resume", "--out", str(part), "--quiet"]) == 0
    keep = ("epoch_seconds",)
    a = [{k: v for k, v in r.items() if k not in keep} for r in results.read_metrics(whole / results.METRICS)]
    b = [{k: v for k, v in r.items() if k not in keep} for r in results.read_metrics(part / results.METRICS)]
    # bp draws no noise and the augmentation is seeded per sample: the resumed run is the same run
    assert a == b
    assert sum(r["skipped_images"] for r in b) == json.loads((part / "summary.json").read_text())["skipped_images"]


def test_imagenet_needs_a_data_dir(tmp_path, capsys):
    code = main(["train", "--data", "imagenet", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--data-dir" in err[0]


def _live_processes(*markers: str) -> set[int]:
    """Live processes (not zombies) whose command line names any of ``markers``."""
    import os

    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if any(m in cmd for m in markers) and state not in ("Z", "X"):
            found.add(int(entry))
    return found


@pytest.mark.slow
def test_repeated_imagenet_folder_runs_never_hang_and_leave_no_worker(tmp_path, imagenet_root):
    """Issue 11's hang: 1 run in 5 or 6 of KP on an ImageNet folder with decoding workers spun for ever
    inside numpy.linalg.norm. Ten runs in a row (BLAS threads left on), each must end within 120 s with
    status 0; then one is sent SIGTERM mid-run and must end within 10 s with status 130; no decoding
    worker of any of them may be left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg_path = tmp_path / "in.toml"
    cfg_path.write_text(
        "epochs = 2\nbatch_size = 4\nmodel = 'convnet'\nrule = 'kp'\n"
        "[model_options]\nchannels = [4, 8]\nhidden = 16\n"
        "[run]\nimage_size = 32\nworkers = 4\neval_batch_size = 4\ndelta_batch_size = 6\n")
    # the runs themselves name tmp_path; their decoding workers and fork server are multiprocessing's
    markers = (str(tmp_path), "multiprocessing")
    before = _live_processes(*markers)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "weightmirror", "train", "--data", "imagenet", "--data-dir",
                str(imagenet_root), "--config", str(cfg_path), "--out", str(out), "--quiet"]

    for i in range(10):
        out = tmp_path / f"run{i}"
        t = time.time()
        proc = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (i, proc.stderr[-2000:])
        assert (out / results.SUMMARY).is_file(), i
        assert time.time() - t < 120
    out = tmp_path / "stopped"
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / results.CHECKPOINT).is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    t = time.time()
    err = proc.communicate(timeout=10)[1]
    assert time.time() - t < 10 and proc.returncode in (0, 130), err  # 0: it had just finished
    deadline = time.time() + 10
    while _live_processes(*markers) - before and time.time() < deadline:
        time.sleep(0.2)
    assert not _live_processes(*markers) - before, "a decoding worker outlived its run"
