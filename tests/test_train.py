"""The training command end to end on the embedded digits data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weightmirror import results
from weightmirror.sims import config
from weightmirror.sims.cli import main
from weightmirror.sims.training import train

SMALL = """
epochs = 3
batch_size = 64
[model_options]
hidden = [32, 32]
[wm]
initial_mirror_steps = 100
initial_decay = 0.03
"""


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def _metrics(out):
    return results.read_metrics(Path(out) / results.METRICS)


def test_cli_train_writes_the_results_folder(tmp_path, small_config, capsys):
    out = tmp_path / "run"
    assert main(["train", "--rule", "wm", "--config", str(small_config), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("rule", "data", "model", "epochs", "test_top1_error", "angles_deg", "delta_angles_deg",
                "wall_seconds"):
        assert key in summary
    assert summary["rule"] == "wm" and summary["data"] == "digits" and summary["epochs"] == 3
    assert len(summary["angles_deg"]) == 3 and len(summary["delta_angles_deg"]) == 3
    assert summary["test_top1_error"] < 20  # digits is learnt in 3 epochs
    rows = _metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert {"train_loss", "test_top1_error", "test_top5_error", "angles_deg", "weight_norms"} <= set(rows[-1])
    cfg = config.read_file(out / "config.toml")
    assert cfg["rule"] == "wm" and cfg["model_options"]["hidden"] == [32, 32]
    assert config.resolve(cfg).to_dict() == cfg  # the written config is complete and valid
    assert "| wm |" in capsys.readouterr().out


def test_rule_angles_behave_as_the_paper_says(tmp_path, small_config):
    """KP and WM align B with Wᵀ; FA does not (digits, a few epochs)."""
    out = {}
    for rule in ("fa", "wm"):
        cfg = config.resolve(config.read_file(small_config), {"rule": rule})
        out[rule] = train(cfg, tmp_path / rule, progress=False).summary
    # KP from silent feedback synapses (B = 0), aligned by its own decay only
    cfg = config.resolve(config.read_file(small_config),
                         {"rule": "kp", "epochs": 8, "kp": {"feedback_init": "zero", "decay_total": 4.0}})
    out["kp"] = train(cfg, tmp_path / "kp", progress=False).summary
    kp_rows = _metrics(tmp_path / "kp")
    assert out["fa"]["angles_deg"][1] > 60
    # KP's feedback starts silent (B = 0): before training there is no angle (null, not 90°)
    assert kp_rows[0]["angles_deg"] == [None, None, None]
    for layer in (1, 2):  # the layers whose B carries an error (the input layer's does not)
        # from its first finite point KP's angle falls every epoch of its decay and ends below FA's
        angles = [r["angles_deg"][layer] for r in kp_rows[1:]]
        assert all(b < a for a, b in zip(angles[:3], angles[1:3]))
        assert angles[-1] < 0.5 * out["fa"]["angles_deg"][layer]
    assert max(out["wm"]["angles_deg"][1:]) < 15
    assert out["wm"]["delta_angles_deg"][0] < out["fa"]["delta_angles_deg"][0]


def test_resume_equals_uninterrupted(tmp_path, small_config):
    base = config.read_file(small_config)
    for rule in ("wm", "brsf"):
        cfg = config.resolve(base, {"rule": rule, "epochs": 3})
        whole = train(cfg, tmp_path / f"whole-{rule}", progress=False).summary
        partial = train(cfg, tmp_path / f"part-{rule}", progress=False, stop_after=1).summary
        assert partial["completed"] is False and not (tmp_path / f"part-{rule}" / "summary.json").exists()
        resumed = train(None, tmp_path / f"part-{rule}", resume=True, progress=False).summary
        keep = ("epoch_seconds", "wall_seconds")
        a = [{k: v for k, v in r.items() if k not in keep} for r in _metrics(tmp_path / f"whole-{rule}")]
        b = [{k: v for k, v in r.items() if k not in keep} for r in _metrics(tmp_path / f"part-{rule}")]
        assert a == b
        assert "val_top1_error" in a[-1], "the default validation split is on: its metrics resume exactly too"
        assert resumed["test_top1_error"] == whole["test_top1_error"]
        assert resumed["val_top1_error"] == whole["val_top1_error"]
        assert resumed["angles_deg"] == whole["angles_deg"]


def test_existing_run_is_not_overwritten(tmp_path, small_config, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(small_config), "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    before = (out / "summary.json").read_bytes()
    assert main(["train", "--config", str(small_config), "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--resume" in err[0]
    assert (out / "summary.json").read_bytes() == before


@pytest.mark.parametrize("toml, needle", [
    ("epochs = -3\n", "config key epochs: must be in [1, 1000000], got -3"),
    ("learning_rate = 0.1\n", "unknown config key 'learning_rate'; allowed here: rule, model"),
    ("[optim]\nschedule = 'linear'\n", "allowed: constant, step, cosine"),
    ("[wm]\nsigma = 0\n", "rule wm: sigma: must be > 0"),
    ("[model_options]\nhidden = [10, 0]\n", "model_options.hidden"),
    ("epochs = [\n", "not valid TOML"),
    ("[run]\nconv_algorithm = 'fft'\n", "run.conv_algorithm: 'fft' is not allowed; allowed: auto, im2col, cudnn"),
    ("[run]\ntf32 = 1\n", "run.tf32: expected true/false"),
])
def test_bad_config_is_one_clear_line(tmp_path, toml, needle, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    code = main(["train", "--config", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_bad_flag_and_missing_paths_exit_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cases = [
        (["train", "--rule", "backprop", "--out", str(tmp_path / "a")], "invalid choice: 'backprop'"),
        (["train", "--epochs", "0", "--out", str(tmp_path / "a")], "expected a positive integer"),
        (["train", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "a")], "not found"),
        (["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path / "nodir"), "--out", str(tmp_path / "a")],
         "nodir"),
        (["train", "--resume", "--out", str(tmp_path / "never")], "nothing to resume"),
    ]
    for argv, needle in cases:
        proc = subprocess.run([sys.executable, "-m", "weightmirror", *argv], capture_output=True, text=True, env=env)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (argv, proc.stderr)


def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    from weightmirror.models.backend import cuda_available

    if cuda_available():
        pytest.skip("a GPU is present")
    code = main(["train", "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--device cuda" in err


def _rows_without_times(out):
    keep = ("epoch_seconds", "wall_seconds")
    return [{k: v for k, v in r.items() if k not in keep} for r in _metrics(out)]


def _checkpoint_meta(out):
    arrays = results.load_arrays(Path(out) / results.CHECKPOINT)
    return json.loads(str(arrays["__meta__"]))


def test_mid_epoch_checkpoint_resumes_at_its_step(tmp_path, small_config):
    """Stopped at a step inside epoch 2, resumed: the right step, the right epochs and rows.

    digits: 1,437 training images, batch 64 -> 22 steps per epoch; stop after
    30 steps = epoch 2, step 8. For bp no noise is drawn, so the resumed run
    equals the uninterrupted one exactly; for wm the rest of the interrupted
    epoch draws its noise from the (seed, purpose, epoch, step) stream.
    (validation = 0: the step counts are of the whole training set; a
    mid-epoch resume with a validation part: tests/test_validation.py.)
    """
    base = config.read_file(small_config)
    for rule in ("bp", "wm"):
        cfg = config.resolve(base, {"rule": rule, "epochs": 3, "validation": 0})
        whole = train(cfg, tmp_path / f"whole-{rule}", progress=False).summary
        part_dir = tmp_path / f"part-{rule}"
        lines = []
        partial = train(cfg, part_dir, progress=False, stop_after_steps=30, log=lines.append).summary
        assert partial["completed"] is False and partial["resume_from"] == {"epoch": 1, "step": 8}
        assert not (part_dir / "summary.json").exists()
        assert any("--resume" in line and "step 8/22" in line for line in lines), lines
        meta = _checkpoint_meta(part_dir)
        assert (meta["epoch"], meta["step"]) == (1, 8)
        assert len(meta["partial"]["losses"]) == 8
        assert [r["epoch"] for r in _metrics(part_dir)] == [0, 1]
        resumed = train(None, part_dir, resume=True, progress=False, log=lines.append).summary
        assert any("epoch 2/3, step 9/22" in line for line in lines), lines
        assert resumed["completed"] is True and resumed["epochs"] == 3
        a, b = _rows_without_times(tmp_path / f"whole-{rule}"), _rows_without_times(part_dir)
        assert [r["epoch"] for r in b] == [0, 1, 2, 3]
        assert a[:2] == b[:2]
        if rule == "bp":
            assert a == b, "without noise a mid-epoch resume is exact"
            assert resumed["test_top1_error"] == whole["test_top1_error"]
        else:
            # same data order, other noise draws: close, not necessarily equal
            assert abs(b[-1]["train_loss"] - a[-1]["train_loss"]) < 0.1
            assert max(b[-1]["angles_deg"][1:]) < 30  # the layers whose B carries an error
        assert _checkpoint_meta(part_dir)["epoch"] == 3


def test_checkpoint_every_steps(tmp_path, small_config, monkeypatch):
    """run.checkpoint_every_steps writes a checkpoint at every N-th global step, atomically."""
    saved = []
    real_save = results.save_arrays

    def spy(path, arrays):
        if "__meta__" not in arrays:  # not a checkpoint (the test predictions at the end)
            return real_save(path, arrays)
        meta = json.loads(str(arrays["__meta__"]))
        saved.append((meta["epoch"], meta["step"]))
        real_save(path, arrays)

    monkeypatch.setattr(results, "save_arrays", spy)
    # validation = 0: 22 steps per epoch are those of the whole training set (1,437 // 64)
    cfg = config.resolve(config.read_file(small_config),
                         {"epochs": 2, "validation": 0, "run": {"checkpoint_every_steps": 10}})
    train(cfg, tmp_path / "run", progress=False)
    # (0, 0): the checkpoint after the epoch-0 evaluation, before any step (a crash in epoch 1 resumes);
    # 22 steps per epoch: global steps 10, 20, (22 = epoch end), 30, 40, (44 = end)
    assert saved == [(0, 0), (0, 10), (0, 20), (1, 0), (1, 8), (1, 18), (2, 0)]
    assert not list((tmp_path / "run").glob(".*.tmp")), "no temporary files left"


def test_warmup_and_label_smoothing_from_the_config(tmp_path, small_config, monkeypatch):
    """optim.warmup_epochs and optim.label_smoothing reach the optimiser and the loss."""
    import weightmirror.sims.training.loop as train_mod
    from weightmirror.models.optim import SGD

    lrs, smoothing = [], set()
    real_step, real_loss = SGD.step, train_mod.softmax_cross_entropy

    def step(self, lr, progress=None):
        lrs.append(lr)
        return real_step(self, lr, progress)

    def loss(logits, labels, xp, label_smoothing=0.0):
        smoothing.add(label_smoothing)
        return real_loss(logits, labels, xp, label_smoothing)

    monkeypatch.setattr(SGD, "step", step)
    monkeypatch.setattr(train_mod, "softmax_cross_entropy", loss)
    path = tmp_path / "warm.toml"
    # validation = 0: 22 steps per epoch, those of the whole training set (1,437 // 64)
    path.write_text(SMALL.replace("epochs = 3", "epochs = 2\nvalidation = 0")
                    + "[optim]\nlr = 0.1\nwarmup_epochs = 1\nlabel_smoothing = 0.1\nschedule = 'constant'\n")
    cfg = config.resolve(config.read_file(path))
    assert cfg.optim.warmup_epochs == 1.0 and cfg.optim.label_smoothing == 0.1
    train(cfg, tmp_path / "run", progress=False)
    assert 0.1 in smoothing  # the training loss is smoothed (evaluation is not)
    assert len(lrs) == 44
    # linear warm-up over the first epoch: lr·(step/22), then constant
    for i, lr in enumerate(lrs[:22]):
        assert lr == pytest.approx(0.1 * i / 22, abs=1e-9)
    assert all(lr == pytest.approx(0.1) for lr in lrs[22:])
    written = config.read_file(tmp_path / "run" / "config.toml")
    assert written["optim"]["warmup_epochs"] == 1.0 and written["optim"]["label_smoothing"] == 0.1


def test_sigint_checkpoints_the_current_step_and_exits_130(tmp_path):
    """A real SIGINT to ``weightmirror train``: checkpoint, exit 130, a resume hint; --resume finishes."""
    import signal
    import time

    cfg = tmp_path / "long.toml"
    cfg.write_text("epochs = 500\nbatch_size = 16\nvalidation = 0\n[model_options]\nhidden = [16]\n[run]\ndelta_batch_size = 16\n")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "weightmirror", "train", "--config", str(cfg), "--out", str(out),
                             "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the loop runs (epoch 1 written)
            metrics = out / results.METRICS
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "--resume --out" in stderr and "Traceback" not in stderr
    meta = _checkpoint_meta(out)
    assert meta["epoch"] >= 1 and 0 <= meta["step"] < 89  # 1,437 // 16 steps per epoch
    assert len(meta["metrics"]) == meta["epoch"] + 1
    assert not (out / "summary.json").exists()
    finish = meta["epoch"] + 1
    assert main(["train", "--resume", "--epochs", str(finish), "--out", str(out), "--quiet"]) == 0
    assert [r["epoch"] for r in _metrics(out)] == list(range(finish + 1))
    assert json.loads((out / "summary.json").read_text())["epochs"] == finish
