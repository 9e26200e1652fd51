"""A failed run is a failure: a diverged run stops, says where, keeps only finite results, exits 3.

Real runs on the embedded digits data: a huge learning rate (``--lr 1e6``),
a huge mirror learning rate (``[wm] lr = 1e30``, so that in ``compare`` only
the weight mirror diverges), and, for exact positions, a NaN put into the
training loss or into a feedback array B at a chosen step.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightmirror as wm
from weightmirror import results
from weightmirror.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, InputError
from weightmirror.sims import config
from weightmirror.sims.cli import main
from weightmirror.sims.report import format_table
from weightmirror.sims.training import DivergedError, load_data, make_batch_source, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"epochs": 3, "batch_size": 64, "model_options": {"hidden": [32, 32]}, "wm": {"initial_mirror_steps": 50}}
SMALL_TOML = "epochs = 3\nbatch_size = 64\n[model_options]\nhidden = [32, 32]\n[wm]\ninitial_mirror_steps = 50\n"
LINE = re.compile(r"^weightmirror: error: run diverged at epoch (\d+), step (\d+) \(loss = (nan|inf|-inf)\); ")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "weightmirror", *argv], capture_output=True, text=True, env=_env(),
                          timeout=300)


def _assert_finite_checkpoint(folder: Path) -> dict | None:
    """Every array of the checkpoint (if there is one) is finite; returns its train state."""
    path = folder / results.CHECKPOINT
    if not path.exists():
        return None
    arrays = results.load_arrays(path)
    meta = json.loads(str(arrays.pop("__meta__")))
    for name, a in arrays.items():
        assert np.isfinite(a).all(), f"{path}: {name} is not finite"
    return meta


def _assert_rows_finite(rows: list[dict]) -> None:
    """No metrics row of a diverged run holds a non-finite loss or a 0° standing in for NaN."""
    for row in rows:
        assert row["epoch"] == 0 or "train_loss" in row
        for key in ("train_loss", "test_loss", "val_loss"):
            if key in row:
                assert row[key] is not None and math.isfinite(row[key]), (key, row)
        for a in row["angles_deg"]:
            assert a is not None and 0.0 < a < 180.0, row["angles_deg"]  # WM's B is random, not W: never 0
        assert all(n is not None and math.isfinite(n) for n in row["weight_norms"])


def _steps_per_epoch(cfg) -> int:
    source = make_batch_source(cfg, load_data(cfg), 0, 1)
    try:
        return source.steps_per_epoch()
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------------------
# the command line: one line, exit 3, the folder as far as it was finite
# ---------------------------------------------------------------------------
def test_cli_train_with_a_huge_learning_rate_stops_and_exits_3(tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL_TOML)
    out = tmp_path / "run"
    proc = _cli("train", "--rule", "wm", "--data", "digits", "--config", str(cfg), "--lr", "1e6", "--out", str(out),
                "--quiet")
    assert proc.returncode == EXIT_DIVERGED == 3, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "RuntimeWarning" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    match = LINE.match(lines[0])
    assert match, lines[0]
    assert "try a smaller --lr (now 1e+06)" in lines[0]
    assert "[wm] target_angle" in lines[0] and "max_samples" in lines[0]  # what to try for the weight mirror
    assert "| wm |" not in proc.stdout  # no table of a run that failed

    summary = json.loads((out / results.SUMMARY).read_text())
    assert summary["status"] == "diverged" and summary["completed"] is False
    where = summary["diverged"]
    assert (where["epoch"], where["step"]) == (int(match.group(1)), int(match.group(2)))
    assert where["what"] == "loss" and where["loss"] is None and where["layer"] is None  # NaN is null in JSON
    assert where["epoch"] >= 1 and where["step"] >= 1
    rows = results.read_metrics(out / results.METRICS)
    assert [r["epoch"] for r in rows] == list(range(where["epoch"]))  # rows up to the last finite epoch
    _assert_rows_finite(rows)
    assert summary["angles_deg"] == rows[-1]["angles_deg"]
    assert all(a is not None and a > 0 for a in summary["angles_deg"])
    meta = _assert_finite_checkpoint(out)
    if meta is None:
        assert "none is kept" in lines[0]
    else:
        assert f"kept in {out / results.CHECKPOINT}" in lines[0]
        assert meta["epoch"] <= where["epoch"]


def test_cli_train_a_diverged_run_is_not_resumed_into_a_result(tmp_path, capsys):
    """main() in-process: the same exit status; the diverged folder is still one that holds a run."""
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL_TOML)
    out = tmp_path / "run"
    assert main(["train", "--rule", "fa", "--config", str(cfg), "--lr", "1e6", "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and LINE.match(err[0]) and "[optim] warmup_epochs" in err[0], err
    assert main(["train", "--rule", "fa", "--config", str(cfg), "--out", str(out), "--quiet"]) == EXIT_BAD_INPUT
    assert "already holds a run" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# the Python API: an exception that carries the run
# ---------------------------------------------------------------------------
def test_api_train_raises_diverged_error_with_the_run(tmp_path):
    with pytest.raises(wm.DivergedError) as info:
        wm.train(rule="wm", optim={"lr": 1e6}, progress=False, out=tmp_path / "wm", **SMALL)
    exc = info.value
    assert isinstance(exc, RuntimeError) and not isinstance(exc, InputError)
    assert wm.DivergedError is DivergedError
    run = exc.run
    assert run.summary is exc.summary and run.summary["status"] == "diverged" and run.status == "diverged"
    assert run.diverged == {k: exc.summary["diverged"][k] for k in run.diverged}
    assert (exc.epoch, exc.what) == (run.summary["diverged"]["epoch"], "loss") and math.isnan(exc.loss)
    assert "run diverged at epoch" in str(exc) and "[optim] lr (now 1e+06)" in str(exc)
    _assert_rows_finite(run.metrics)
    back = wm.load_run(tmp_path / "wm")
    assert back.status == "diverged" and back.summary["diverged"]["epoch"] == exc.epoch
    assert back.metrics == results.read_metrics(tmp_path / "wm" / results.METRICS)
    assert "diverged at epoch" in repr(back)


def test_sims_train_in_memory_raises_too():
    cfg = config.resolve(SMALL, {"rule": "bp", "optim": {"lr": 1e6}})
    with pytest.raises(DivergedError) as info:
        train(cfg, None, progress=False)
    exc = info.value
    assert exc.checkpoint is None and exc.run.path is None
    assert "a run kept in memory has no checkpoint" in exc.message(cli=True)
    assert exc.summary["status"] == "diverged" and exc.summary["completed"] is False


def test_a_completed_run_says_so():
    run = wm.train(rule="fa", progress=False, **{**SMALL, "epochs": 1})
    assert run.summary["status"] == "completed" and run.summary["completed"] is True and run.status == "completed"


# ---------------------------------------------------------------------------
# exact positions: a NaN put into the loss, or into a feedback array
# ---------------------------------------------------------------------------
def test_a_nan_loss_stops_at_that_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import weightmirror.sims.training.loop as loop

    cfg = config.resolve(SMALL, {"rule": "fa"})
    steps = _steps_per_epoch(cfg)
    real_loss, calls = loop.softmax_cross_entropy, []

    def loss(logits, labels, xp, label_smoothing=0.0):
        calls.append(1)
        value, grad = real_loss(logits, labels, xp, label_smoothing)
        return (math.nan if len(calls) == steps + 3 else value), grad  # epoch 2, step 3

    monkeypatch.setattr(loop, "softmax_cross_entropy", loss)
    out = tmp_path / "run"
    with pytest.raises(DivergedError) as info:
        train(cfg, out, progress=False)
    assert len(calls) == steps + 3, "training stopped at once"
    where = json.loads((out / results.SUMMARY).read_text())["diverged"]
    assert where == {"epoch": 2, "step": 3, "loss": None, "what": "loss", "layer": None, "quantity": "train_loss"}
    assert info.value.message().startswith("run diverged at epoch 2, step 3 (loss = nan); the last finite "
                                           f"checkpoint is kept in {out / results.CHECKPOINT}; try ")
    assert [r["epoch"] for r in results.read_metrics(out / results.METRICS)] == [0, 1]
    meta = _assert_finite_checkpoint(out)
    assert (meta["epoch"], meta["step"]) == (1, 0)  # the end of epoch 1


@pytest.mark.parametrize("inject_at, checkpoint_every_steps, expected", [
    # at the last step of epoch 2: found by the epoch-end check, before epoch 2 is measured
    ("end of epoch 2", 0, {"epoch": 2, "checkpoint": (1, 0), "rows": [0, 1]}),
    # at step 10 of epoch 1, where a mid-epoch checkpoint is due: found before it is written
    ("step 10", 5, {"epoch": 1, "step": 10, "checkpoint": (0, 5), "rows": [0]}),
])
def test_a_nan_feedback_weight_stops_the_run_and_names_the_layer(tmp_path, monkeypatch, inject_at,
                                                                 checkpoint_every_steps, expected):
    from weightmirror.circuits.rules import FeedbackAlignment

    cfg = config.resolve(SMALL, {"rule": "fa", "run": {"checkpoint_every_steps": checkpoint_every_steps}})
    steps = _steps_per_epoch(cfg)
    at = 2 * steps if inject_at == "end of epoch 2" else 10
    calls = []

    def after_step(self, weight_layers, xp, rng, progress=None):
        calls.append(1)
        if len(calls) == at:
            weight_layers[1].B[0, 0] = np.inf

    monkeypatch.setattr(FeedbackAlignment, "after_step", after_step)
    out = tmp_path / "run"
    with pytest.raises(DivergedError) as info:
        train(cfg, out, progress=False)
    assert len(calls) == at
    where = json.loads((out / results.SUMMARY).read_text())["diverged"]
    assert where["what"] == "weights" and where["layer"] == 1 and where["quantity"].endswith(".B")
    assert where["epoch"] == expected["epoch"] and where["step"] == expected.get("step", steps)
    assert where["loss"] is not None and math.isfinite(where["loss"])  # the last finite training loss
    assert "layer 2's feedback weights B" in str(info.value)
    assert [r["epoch"] for r in results.read_metrics(out / results.METRICS)] == expected["rows"]
    meta = _assert_finite_checkpoint(out)
    assert (meta["epoch"], meta["step"]) == expected["checkpoint"]


# ---------------------------------------------------------------------------
# compare: the other rules go on; the table says which diverged
# ---------------------------------------------------------------------------
def test_compare_goes_on_when_one_rule_diverges(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 2\nbatch_size = 64\n[model_options]\nhidden = [16, 16]\n"
                   "[wm]\nadaptive = false\ninitial_mirror_steps = 50\nlr = 1e30\n")  # only wm reads [wm]
    out = tmp_path / "cmp"
    code = main(["compare", "--rules", "wm,bp", "--config", str(cfg), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == EXIT_DIVERGED
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("weightmirror: error: rule wm: run diverged at epoch 1, step "), err
    assert "[wm] lr, now 1e+30" in err[0]
    rows = {line.split("|")[1].strip(): line for line in captured.out.splitlines() if line.startswith("| ")}
    assert "| diverged at epoch 1 |" in rows["wm"]
    # the input layer's B carries no error: its angle in parentheses, explained under the table
    assert re.match(r"\| bp \| bp \| \d+\.\d\d \| \(0\.0\) / 0\.0 / 0\.0 \|", rows["bp"]), rows["bp"]
    bp = json.loads((out / "bp" / results.SUMMARY).read_text())
    assert bp["status"] == "completed" and bp["epochs"] == 2  # trained after wm failed
    assert json.loads((out / "wm" / results.SUMMARY).read_text())["status"] == "diverged"
    _assert_finite_checkpoint(out / "wm")


def test_compare_exits_0_when_nothing_diverges(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 1\nbatch_size = 64\n[model_options]\nhidden = [16]\n")
    assert main(["compare", "--rules", "bp,fa", "--config", str(cfg), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_format_table_shows_a_diverged_summary_as_such():
    done = {"label": "bp", "rule": "bp", "test_top1_error": 4.5, "angles_deg": [0.0, 0.0],
            "delta_angles_deg": [0.0, 0.0], "wall_seconds": 1.0, "status": "completed"}
    failed = {"label": "wm", "rule": "wm", "test_top1_error": 90.0, "angles_deg": [0.0, 0.0],
              "delta_angles_deg": [0.0, 0.0], "wall_seconds": 2.0, "status": "diverged",
              "diverged": {"epoch": 3, "step": 7, "loss": None, "what": "loss", "layer": None}}
    old = {k: v for k, v in done.items() if k != "status"}  # a summary written before status existed
    table = format_table([done, failed, old]).splitlines()
    assert "4.50 | 0.0 / 0.0" in table[2] and "4.50 | 0.0 / 0.0" in table[4]
    assert "| wm | wm | diverged at epoch 3 |" in table[3]
    assert "90.00" not in table[3] and "0.0" not in table[3].split("|")[4]


# ---------------------------------------------------------------------------
# bad numbers are bad input, not a divergence
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, toml, needle", [
    (["--lr", "nan"], None, "argument --lr: expected a finite number, got 'nan'"),
    (["--lr", "inf"], None, "argument --lr: expected a finite number, got 'inf'"),
    (["--lr=-inf"], None, "argument --lr: expected a finite number, got '-inf'"),
    ([], "[wm]\nsigma = inf\n", "[wm].sigma: must be a finite number, got inf"),
    ([], "[optim]\nlr = nan\n", "optim.lr: must be a finite number, got nan"),
    ([], "[optim]\nlr = inf\n", "optim.lr: must be a finite number, got inf"),
])
def test_non_finite_config_values_are_bad_input(tmp_path, argv, toml, needle):
    extra = []
    if toml is not None:
        (tmp_path / "bad.toml").write_text(toml)
        extra = ["--config", str(tmp_path / "bad.toml")]
    for command in (["train", "--rule", "wm"], ["compare", "--rules", "bp,wm"]):
        proc = _cli(*command, *argv, *extra, "--out", str(tmp_path / "o"))
        assert proc.returncode == EXIT_BAD_INPUT, (command, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, (command, proc.stderr)
        assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------
# no direction, no angle: Kolen-Pollack's silent start in circuit mode
# ---------------------------------------------------------------------------
def test_circuit_kp_with_silent_feedback_starts_without_an_angle(tmp_path):
    pytest.importorskip("brian2")
    from weightmirror.circuits.rules import KolenPollack
    from weightmirror.circuits.spec import CircuitSpec, Phases
    from weightmirror.sims import circuit
    from weightmirror.sims.report import circuit_line

    spec = CircuitSpec(layers=(6, 5, 4), rule=KolenPollack(decay=0.01, feedback_init="zero"),
                       phases=Phases(schedule="engaged", duration=0.2, presentation=0.01, record_interval=0.1))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.integers(0, 4, 40)
    run = circuit.simulate(spec, tmp_path / "kp", data=(x, y, x, y), progress=False)
    assert all(math.isnan(a) for a in run.summary["initial_angles_deg"])  # B = 0: not 90°
    written = json.loads((tmp_path / "kp" / results.SUMMARY).read_text())
    assert written["initial_angles_deg"] == [None, None]
    rows = results.read_metrics(tmp_path / "kp" / results.METRICS)
    assert rows[0]["angles_deg"] == [None, None]
    assert all(a is not None and 0 < a < 180 for r in rows[1:] for a in r["angles_deg"])  # B grew: angles
    line = circuit_line(run.summary)
    assert "nan" not in line and " 90.0" not in line
