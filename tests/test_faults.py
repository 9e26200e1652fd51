"""Bad inputs and faults: one line ``weightmirror: error: ...``, exit 2, nothing written earlier changed.

Every case runs on the embedded digits data with tiny networks (one or two
epochs, 16 hidden units). Bad inputs run ``main()`` in-process (an uncaught
exception fails the test as a traceback would); faults with real signals,
kill -9 and a second writer run ``python -m weightmirror`` in a subprocess,
with a hook (:data:`HOOK`) that parks the run at a chosen point (the initial
mirror phase, the epoch-0 evaluation, the first training step) until the
test has acted.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from weightmirror import locks, results
from weightmirror.sims.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}

TINY = """
epochs = 1
batch_size = 64
[model_options]
hidden = [16]
[wm]
initial_mirror_steps = 20
"""

# A run parked at one point: ``python -c HOOK WHERE MARKER <weightmirror args>``; it touches MARKER
# when it gets there and sleeps (a signal handler that raises ends the sleep at once).
HOOK = r"""
import sys, time, pathlib
where, marker = sys.argv[1], pathlib.Path(sys.argv[2])
from weightmirror.sims.training import loop
from weightmirror.circuits import rules

def park():
    marker.touch()
    time.sleep(120)

if where == "mirror":
    real_phase = rules.WeightMirror.initial_phase
    def initial_phase(self, *a, **k):
        park()
        return real_phase(self, *a, **k)
    rules.WeightMirror.initial_phase = initial_phase
elif where == "eval0":
    real_row = loop.metrics_row
    def metrics_row(net, xp, cfg, epoch, *a, **k):
        if epoch == 0:
            park()
        return real_row(net, xp, cfg, epoch, *a, **k)
    loop.metrics_row = metrics_row
elif where == "step1":
    real_step = loop.train_step
    def train_step(*a, **k):
        if not marker.exists():
            park()
        return real_step(*a, **k)
    loop.train_step = train_step
from weightmirror.sims.cli import main
sys.exit(main(sys.argv[3:]))
"""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with the tiny config and one finished bp run (``base``), made once."""
    root = tmp_path_factory.mktemp("faults")
    (root / "tiny.toml").write_text(TINY)
    assert main(["train", "--config", str(root / "tiny.toml"), "--out", str(root / "base"), "--quiet"]) == 0
    return root


def _copy(work: Path, tmp_path: Path, name: str = "run") -> Path:
    dst = tmp_path / name
    shutil.copytree(work / "base", dst)
    return dst


def _snapshot(*folders: Path) -> dict:
    """Every file under ``folders`` with its bytes (the lock file left out: it comes and goes)."""
    out = {}
    for folder in folders:
        if Path(folder).is_file():
            out[str(folder)] = Path(folder).read_bytes()
            continue
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file() and p.name != locks.LOCK_NAME:
                out[str(p)] = p.read_bytes()
    return out


def _refused(capsys, argv, needle, *unchanged, code=2):
    """``main(argv)`` exits ``code`` with one stderr line naming ``needle``; ``unchanged`` stays as it was."""
    before = _snapshot(*unchanged)
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("weightmirror: error: "), err
    assert "Traceback" not in err
    for part in [needle] if isinstance(needle, str) else needle:
        assert part in lines[0], (part, lines[0])
    assert _snapshot(*unchanged) == before, "a file written earlier changed"
    return lines[0]


def _rows(folder: Path) -> list[dict]:
    """The metrics rows without their wall times (those differ between runs)."""
    return [{k: v for k, v in r.items() if k != "epoch_seconds"}
            for r in results.read_metrics(Path(folder) / results.METRICS)]


def _write_idx(path: Path, dims, data=b"") -> None:
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + data)


def _popen(args, where="none", marker=None):
    return subprocess.Popen([sys.executable, "-c", HOOK, where, str(marker), *args], env=ENV, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _end(proc) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------
# bad inputs: config values and flags
# --------------------------------------------------------------------------


@pytest.mark.parametrize("toml, needle", [
    ("[optim]\ngamma = -1\n", "optim.gamma: must be > 0"),
    ("[optim]\ngamma = 0\n", "optim.gamma: must be > 0"),
    ("[optim]\nmilestones = [-1]\n", "optim.milestones"),
    ("[optim]\nmilestones = [3, 2]\n", "optim.milestones: must be increasing"),
    ("[optim]\nfinal_fraction = -0.5\n", "optim.final_fraction: must be in [0, 1]"),
    ("[optim]\nfinal_fraction = 1.5\n", "optim.final_fraction: must be in [0, 1]"),
    ("[optim]\nwarmup_epochs = 1e9\n", "optim.warmup_epochs: must be <= epochs"),
    ("[optim]\nlr = nan\n", "optim.lr"),
    ("[optim]\nlr = inf\n", "optim.lr"),
    ("epochs = 10000000\n", "config key epochs: must be in [1, 1000000]"),
    ("batch_size = 0\n", "config key batch_size"),
    ("validation = 0.9\n", "config key validation"),
])
def test_bad_config_value(tmp_path, capsys, toml, needle):
    path = tmp_path / "bad.toml"
    path.write_text("epochs = 1\n" + toml if not toml.startswith("epochs") else toml)
    _refused(capsys, ["train", "--config", str(path), "--out", str(tmp_path / "o"), "--quiet"], needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, needle", [
    (["train", "--epochs", "10000000"], "--epochs: expected at most 1000000"),
    (["train", "--epochs", "1e30"], "--epochs"),
    (["train", "--lr", "nan"], "--lr: expected a finite number"),
    (["train", "--rule", "backprop"], "invalid choice: 'backprop'"),
    (["compare", "--seeds", "1,1"], "--seeds"),
    (["circuit", "--threads", "-1"], "--threads"),
])
def test_bad_flag_has_the_one_prefix(tmp_path, capsys, argv, needle):
    """argparse errors share the prefix of every other error (no ``weightmirror train: error:``)."""
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightmirror: error: ") and needle in lines[0], lines
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--pilot", "abc"], "mirror_pilot: cannot read 'abc' as a duration"),
    (["--pilot", "-3"], "mirror_pilot (s): must be >= 0"),
    (["--pilot", "5s", "--rule", "kp"], "mirror_pilot needs a mirror-only run"),
])
def test_a_bad_pilot_is_one_line(tmp_path, capsys, argv, needle):
    _refused(capsys, ["circuit", *argv, "--out", str(tmp_path / "o"), "--quiet"], needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["train", "circuit"])
def test_a_data_folder_for_the_embedded_digits_is_refused(tmp_path, capsys, command, work):
    """--data-dir with the embedded digits set: refused (never silently ignored), nothing written."""
    extra = ["--config", str(work / "tiny.toml")] if command == "train" else ["--duration", "10ms"]
    _refused(capsys, [command, *extra, "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"],
             [f"data_dir {str(tmp_path)!r}: the digits data set is embedded", "leave data_dir (--data-dir) out"])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["train", "compare", "circuit", "figures"])
def test_empty_out_is_refused(tmp_path, capsys, command, work, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run written into "." would land here
    argv = [command, "--out", ""] + (["--results", str(work / "base")] if command == "figures" else [])
    _refused(capsys, argv, "--out: an empty folder name")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "circuit", "figures"])
def test_out_naming_a_file(tmp_path, capsys, command, work):
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    argv = {"train": ["train", "--config", str(work / "tiny.toml"), "--quiet"],
            "circuit": ["circuit", "--layers", "4,3,2", "--duration", "20ms", "--quiet"],
            "figures": ["figures", "--results", str(work / "base")]}[command]
    _refused(capsys, [*argv, "--out", str(target)], [str(target), "a file, not a folder"], target)


@pytest.mark.parametrize("command", ["train", "circuit"])
@pytest.mark.parametrize("kind", ["junk", "folder"])
def test_config_file_of_binary_junk_or_a_folder(tmp_path, capsys, command, kind):
    path = tmp_path / "cfg.toml"
    if kind == "junk":
        path.write_bytes(bytes(range(256)) * 4)
        needle = "not a text file (not UTF-8)"
    else:
        path.mkdir()
        needle = "is a directory, not a TOML file"
    _refused(capsys, [command, "--config", str(path), "--out", str(tmp_path / "o"), "--quiet"], [str(path), needle])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("neuron, needle", [
    ("max_rate = 100.0\nbaseline_rate = 200.0\n", "neuron.max_rate (100 Hz) must be above neuron.baseline_rate"),
    ("max_rate = 200.0\nbaseline_rate = 200.0\n", "must be above neuron.baseline_rate"),
    ("kind = 'spiking'\nmax_rate = 5000.0\n", "must not exceed 1/dt (2000 Hz)"),
])
def test_bad_circuit_rates(tmp_path, capsys, neuron, needle):
    path = tmp_path / "c.toml"
    path.write_text("layers = [4, 3, 2]\n[neuron]\n" + neuron)
    _refused(capsys, ["circuit", "--config", str(path), "--out", str(tmp_path / "o"), "--quiet"], needle)
    assert not (tmp_path / "o").exists()


def test_idx_training_set_without_images(tmp_path, capsys):
    data = tmp_path / "idx"
    data.mkdir()
    _write_idx(data / "train-images-idx3-ubyte", [0, 28, 28])
    _write_idx(data / "train-labels-idx1-ubyte", [0])
    _write_idx(data / "t10k-images-idx3-ubyte", [1, 28, 28], bytes(784))
    _write_idx(data / "t10k-labels-idx1-ubyte", [1], bytes(1))
    _refused(capsys, ["train", "--data", "mnist", "--data-dir", str(data), "--epochs", "1",
                      "--out", str(tmp_path / "o"), "--quiet"],
             ["train-images-idx3-ubyte", "holds no images"], data)
    assert not (tmp_path / "o").exists()


def test_imagenet_folder_whose_images_are_all_broken(tmp_path):
    """Every JPEG is junk: one error line naming the folder (after the per-file skip notes), exit 2."""
    root = tmp_path / "imagenet"
    junk = np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes()
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            (root / split / wnid).mkdir(parents=True)
            for i in range(3):
                (root / split / wnid / f"img{i}.JPEG").write_bytes(junk)
    proc = subprocess.run([sys.executable, "-m", "weightmirror", "train", "--rule", "bp", "--model", "resnet18",
                           "--data", "imagenet", "--data-dir", str(root), "--epochs", "1", "--quiet",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("weightmirror: error: ") and "could be decoded" in last and "train" in last, last
    assert not (tmp_path / "o").exists()  # nothing left behind


# --------------------------------------------------------------------------
# bad inputs: results folders and checkpoints
# --------------------------------------------------------------------------


def _damage_checkpoint(path: Path, how: str) -> None:
    arrays = dict(np.load(path))
    if how == "meta-not-json":
        arrays["__meta__"] = np.array("not json {")
    elif how == "meta-wrong-types":
        arrays["__meta__"] = np.array(json.dumps({"epoch": "one", "wall_seconds": 0, "metrics": []}))
    elif how == "meta-missing":
        del arrays["__meta__"]
    elif how == "missing-arrays":
        arrays = {k: v for k, v in arrays.items() if not k.startswith("net.")}
    elif how == "wrong-shapes":
        arrays = {k: (v[:1] if k.startswith("net.") else v) for k, v in arrays.items()}
    elif how == "optimiser-wrong-shapes":  # (1, n) would broadcast silently into (m, n)
        arrays = {k: (v[:1] if k.startswith("opt.") and v.ndim == 2 else v) for k, v in arrays.items()}
    if how == "junk":
        path.write_bytes(b"PK\x03\x04 not a zip at all")
        return
    np.savez(path, **arrays)


@pytest.mark.parametrize("how, needle", [
    ("meta-not-json", "its train state (__meta__) is not readable"),
    ("meta-wrong-types", "its train state (__meta__) is not readable"),
    ("meta-missing", "not a training checkpoint (no __meta__)"),
    ("missing-arrays", "does not fit the network of its config.toml (checkpoint lacks arrays"),
    ("wrong-shapes", "does not fit the network of its config.toml (checkpoint array"),
    ("optimiser-wrong-shapes", "does not fit the network of its config.toml (checkpoint optimiser array"),
    ("junk", "not a readable .npz"),
])
def test_damaged_checkpoint_on_resume(tmp_path, capsys, work, how, needle):
    run = _copy(work, tmp_path)
    _damage_checkpoint(run / results.CHECKPOINT, how)
    _refused(capsys, ["train", "--resume", "--epochs", "2", "--out", str(run), "--quiet"],
             [str(run / results.CHECKPOINT), needle], run)


def test_run_config_not_utf8_on_resume(tmp_path, capsys, work):
    run = _copy(work, tmp_path)
    (run / results.CONFIG).write_bytes(b"\xff\xfe rule = 'bp'\n")
    _refused(capsys, ["train", "--resume", "--epochs", "2", "--out", str(run), "--quiet"],
             [str(run / results.CONFIG), "not UTF-8"], run)


@pytest.mark.parametrize("flags, needles", [
    (["--rule", "wm"], ["rule = 'wm' (--rule) but the run has 'bp'"]),
    (["--lr", "5", "--seed", "9"], ["optim.lr = 5.0 (--lr) but the run has", "seed = 9 (--seed) but the run has 0"]),
    (["--batch-size", "32"], ["batch_size = 32 (--batch-size)"]),
    (["--model", "convnet"], ["model = 'convnet' (--model)"]),
])
def test_resume_refuses_flags_that_contradict_the_run(tmp_path, capsys, work, flags, needles):
    run = _copy(work, tmp_path)
    _refused(capsys, ["train", "--resume", "--epochs", "2", *flags, "--out", str(run), "--quiet"],
             ["contradicting values given", *needles], run)


def test_resume_accepts_flags_that_agree_with_the_run(tmp_path, capsys, work):
    run = _copy(work, tmp_path)
    assert main(["train", "--resume", "--epochs", "2", "--rule", "bp", "--seed", "0", "--out", str(run),
                 "--quiet"]) == 0


@pytest.mark.parametrize("flags, needle", [
    (["--epochs", "1"], "--epochs 1: the run in"),
    ([], "has finished (1 epochs); to train it further give --resume --epochs N with N > 1"),
    (["--config", "x.toml"], "--config: not with --resume"),
])
def test_resume_of_a_finished_run_needs_more_epochs(tmp_path, capsys, work, flags, needle):
    run = _copy(work, tmp_path)
    _refused(capsys, ["train", "--resume", *flags, "--out", str(run), "--quiet"], needle, run)


def test_resume_extends_a_finished_run_and_records_it(tmp_path, capsys, work):
    """--resume --epochs 2 on a 1-epoch run: config.toml says 2, the log says epoch 2/2, the rows are 0..2."""
    run = _copy(work, tmp_path)
    capsys.readouterr()
    assert main(["train", "--resume", "--epochs", "2", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "at epoch 2/2" in out and "epoch 2/1" not in out
    assert results.read_config(run)["epochs"] == 2
    assert [r["epoch"] for r in results.read_metrics(run / results.METRICS)] == [0, 1, 2]
    assert results.read_summary(run / results.SUMMARY)["epochs"] == 2


def test_resume_of_a_diverged_run_is_refused(tmp_path, capsys, work):
    run = _copy(work, tmp_path)
    summary = results.read_summary(run / results.SUMMARY)
    results.write_json(run / results.SUMMARY, {**summary, "status": "diverged", "completed": False})
    _refused(capsys, ["train", "--resume", "--epochs", "3", "--out", str(run), "--quiet"], "diverged", run)


def test_figures_on_damaged_metrics_names_the_file(tmp_path, capsys, work):
    """A damaged metrics file (not UTF-8, wrongly typed values) is bad input: each folder named, one error
    line, exit 2, no traceback, nothing changed; a good folder beside them still gets its figures."""
    bad = {"not-utf8": b"\xff\xfe\x00\x01\n", "types": b'{"epoch": 0, "test_top1_error": "x"}\n'}
    folders = []
    for name, content in bad.items():
        run = _copy(work, tmp_path, name)
        (run / results.METRICS).write_bytes(content)
        folders.append(run)
    before = _snapshot(*folders)
    capsys.readouterr()
    code = main(["figures", "--results", *map(str, folders), "--out", str(tmp_path / "fig")])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"weightmirror: error: results folder {folders[0]} is damaged: ")
    assert err[0].endswith("(and 1 more, named above)")
    assert f"ignored  {folders[0]}: {folders[0] / results.METRICS}: not a text file (not UTF-8)" in captured.out
    assert "test_top1_error is 'x', expected a number or null" in captured.out
    assert _snapshot(*folders) == before
    # beside a good run: its figures are made, and the damaged folder still fails the command
    capsys.readouterr()
    code = main(["figures", "--results", str(work / "base"), str(folders[1]), "--out", str(tmp_path / "fig2")])
    captured = capsys.readouterr()
    assert code == 2 and "made     " in captured.out
    assert captured.err.strip() == (f"weightmirror: error: results folder {folders[1]} is damaged: "
                                    f"{folders[1] / results.METRICS}: line 1: test_top1_error is 'x', "
                                    "expected a number or null")
    assert _snapshot(*folders) == before


# --------------------------------------------------------------------------
# one run per folder
# --------------------------------------------------------------------------


def test_a_folder_in_use_is_refused(tmp_path, capsys, work):
    """A live run holds the folder: a second train (and compare over it) stop with one line; nothing changes."""
    out = tmp_path / "cmp"
    marker = tmp_path / "parked"
    first = _popen(["train", "--config", str(work / "tiny.toml"), "--out", str(out / "fa"), "--rule", "fa",
                    "--quiet"], "step1", marker)
    try:
        _wait_for(marker, first)
        info = locks.read_lock(out / "fa")
        assert info is not None and info["pid"] == first.pid
        _refused(capsys, ["train", "--config", str(work / "tiny.toml"), "--out", str(out / "fa"), "--quiet"],
                 [str(out / "fa"), f"is in use by another run (pid {first.pid} since"], out / "fa")
        _refused(capsys, ["compare", "--rules", "bp,fa", "--config", str(work / "tiny.toml"), "--out", str(out),
                          "--quiet"], [str(out / "fa"), "is in use by another run"], out / "fa")
        assert not (out / "bp").exists(), "compare trained nothing"
    finally:
        first.kill()
        first.wait()


def test_compare_checks_every_folder_before_training_any(tmp_path, capsys, work):
    out = tmp_path / "cmp"
    out.mkdir()
    shutil.copytree(work / "base", out / "fa")
    _refused(capsys, ["compare", "--rules", "bp,fa", "--config", str(work / "tiny.toml"), "--out", str(out),
                      "--quiet"], [str(out / "fa"), "already holds a run"], out / "fa")
    assert not (out / "bp").exists()


def test_two_writers_started_together(tmp_path):
    """The issue's race: two trains into one folder at once; one runs, the other stops; the rows are one run's."""
    out, cfg = tmp_path / "R", tmp_path / "t.toml"
    cfg.write_text(TINY.replace("epochs = 1", "epochs = 2"))
    procs = [subprocess.Popen([sys.executable, "-m", "weightmirror", "train", "--rule", rule, "--config", str(cfg),
                               "--out", str(out), "--quiet"], env=ENV, cwd=str(ROOT),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rule in ("bp", "fa")]
    ends = [_end(p) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], ends
    loser = ends[[p.returncode for p in procs].index(2)][1]
    lines = loser.strip().splitlines()
    assert len(lines) == 1 and ("is in use by another run" in lines[0] or "already holds a run" in lines[0]), loser
    winner_rule = ("bp", "fa")[[p.returncode for p in procs].index(0)]
    assert results.read_config(out)["rule"] == winner_rule
    assert results.read_summary(out / results.SUMMARY)["rule"] == winner_rule
    assert [r["epoch"] for r in results.read_metrics(out / results.METRICS)] == [0, 1, 2]
    assert not (out / locks.LOCK_NAME).exists()


def test_lock_is_reentrant_and_released(tmp_path):
    folder = tmp_path / "f"
    with locks.claim(folder, "test") as a:
        assert (folder / locks.LOCK_NAME).is_file() and locks.held(folder) is a
        with locks.claim(folder, "again") as b:
            assert b is a
        assert a.held and (folder / locks.LOCK_NAME).is_file()
    assert not folder.exists(), "an empty folder the claim made is removed again"


def test_a_stale_lock_is_taken_over(tmp_path, capsys, work):
    """A lock whose process is gone (kill -9) is taken over with a note; one on another host is refused."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / locks.LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(),
                                                   "started": 0, "command": "train"}))
    assert main(["train", "--config", str(work / "tiny.toml"), "--out", str(out), "--quiet"]) == 0
    assert "took over the lock of a run that is gone" in capsys.readouterr().out
    assert not (out / locks.LOCK_NAME).exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / locks.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": 0}))
    _refused(capsys, ["train", "--config", str(work / "tiny.toml"), "--out", str(other), "--quiet"],
             ["on host elsewhere.example", f"remove {other / locks.LOCK_NAME}"], other)


# --------------------------------------------------------------------------
# no dead ends: signals, kill -9, a full disk
# --------------------------------------------------------------------------


@pytest.mark.parametrize("where, sig", [("mirror", signal.SIGTERM), ("eval0", signal.SIGINT)])
def test_signal_before_the_first_checkpoint_leaves_a_reusable_folder(tmp_path, capsys, work, where, sig):
    """SIGTERM in the initial mirror phase, SIGINT in the epoch-0 evaluation: exit 130 at once, one line;
    --resume says to rerun; the rerun reuses the folder and equals an uninterrupted run."""
    out, marker = tmp_path / "run", tmp_path / "parked"
    argv = ["train", "--rule", "wm", "--config", str(work / "tiny.toml"), "--out", str(out), "--quiet"]
    proc = _popen(argv, where, marker)
    _wait_for(marker, proc)
    t0 = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = _end(proc)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted before the first checkpoint" in lines[0] and "Traceback" not in stderr
    assert results.folder_state(out)[0] == results.UNSTARTED
    assert not (out / locks.LOCK_NAME).exists() and not (out / results.CHECKPOINT).exists()
    _refused(capsys, ["train", "--resume", "--out", str(out), "--quiet"],
             ["holds no checkpoint", "start it again without --resume"], out)
    assert main(argv) == 0
    assert main([*argv[:-3], "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    assert _rows(out) == _rows(tmp_path / "whole")


def test_kill_9_after_the_first_checkpoint_resumes_exactly(tmp_path, work):
    """kill -9 in the first training step: the epoch-0 checkpoint and the stale lock; --resume finishes it."""
    out, marker = tmp_path / "run", tmp_path / "parked"
    argv = ["train", "--rule", "bp", "--epochs", "2", "--config", str(work / "tiny.toml"), "--quiet"]
    proc = _popen([*argv, "--out", str(out)], "step1", marker)
    _wait_for(marker, proc)
    proc.kill()
    _end(proc)
    assert (out / results.CHECKPOINT).is_file() and (out / locks.LOCK_NAME).is_file()  # the lock is stale now
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert _rows(out) == _rows(tmp_path / "whole")


def test_a_crash_before_the_first_checkpoint_leaves_a_reusable_folder(tmp_path, capsys, work):
    """What a crash leaves after config.toml and an empty metrics.jsonl: a rerun reuses the folder."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(work / "base" / results.CONFIG, out / results.CONFIG)
    (out / results.METRICS).write_text("")
    _refused(capsys, ["train", "--resume", "--out", str(out), "--quiet"], "holds no checkpoint", out)
    assert main(["train", "--config", str(work / "tiny.toml"), "--out", str(out), "--quiet"]) == 0
    assert _rows(out) == _rows(work / "base")


def test_an_old_dead_end_folder_is_reused(tmp_path, work):
    """A folder from 0.2.0 killed in epoch 1: config.toml and the epoch-0 row, no checkpoint: a rerun reuses it."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(work / "base" / results.CONFIG, out / results.CONFIG)
    rows = (work / "base" / results.METRICS).read_text().splitlines(keepends=True)
    (out / results.METRICS).write_text(rows[0])
    assert results.folder_state(out)[0] == results.UNSTARTED
    assert main(["train", "--config", str(work / "tiny.toml"), "--out", str(out), "--quiet"]) == 0
    assert _rows(out) == _rows(work / "base")
    for name in (results.CHECKPOINT, results.SUMMARY):  # rows of trained epochs are results: never reused
        (out / name).unlink()
    assert results.folder_state(out)[0] == results.HOLDS_RUN


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("nth", [1, 3])
def test_full_disk_while_checkpointing(tmp_path, capsys, work, monkeypatch, code, nth):
    """The nth checkpoint write fails (full disk, read-only): one line, exit 2, no temporary file, the earlier
    files intact; once space is back the run goes on (rerun if nothing was checkpointed, else --resume)."""
    out = tmp_path / "run"
    argv = ["train", "--epochs", "3", "--config", str(work / "tiny.toml"), "--quiet"]
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if f".{results.CHECKPOINT}." in name:
            calls.append(name)
            if len(calls) == nth:
                raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    line = _refused(capsys, [*argv, "--out", str(out)], [str(out / results.CHECKPOINT), "cannot be written",
                                                         os.strerror(code)])
    assert "kept as they were" in line
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not list(out.glob(".*.tmp")) and not (out / locks.LOCK_NAME).exists()
    if nth == 1:  # nothing checkpointed: the folder is reused
        assert results.folder_state(out)[0] == results.UNSTARTED
        assert main([*argv, "--out", str(out)]) == 0
    else:  # checkpoints at epochs 0 and 1 written, the one at epoch 2 not
        assert json.loads(str(np.load(out / results.CHECKPOINT)["__meta__"]))["epoch"] == 1
        assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert _rows(out) == _rows(tmp_path / "whole")


def test_circuit_interrupted_folder_is_reused(tmp_path, capsys):
    """A circuit folder without summary.json (stopped mid-simulation) is rerun in place."""
    out = tmp_path / "c"
    argv = ["circuit", "--layers", "4,3,2", "--duration", "20ms", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    (out / results.SUMMARY).unlink()
    (out / "weights_final.npz").unlink()
    assert results.folder_state(out)[0] == results.UNSTARTED
    assert main(argv) == 0
    assert (out / results.SUMMARY).is_file() and (out / "weights_final.npz").is_file()
    _refused(capsys, argv, "already holds a run", out)


def test_resume_may_name_the_data_set_moved_elsewhere(tmp_path, work):
    """--resume --data-dir: the data's new place is taken and recorded, unlike any value of the run itself."""
    from weightmirror.sims.training.loop import resume_config

    run = _copy(work, tmp_path)
    cfg, saved = resume_config(run, {"data_dir": str(tmp_path / "moved"), "epochs": 2})
    assert cfg.data_dir == str(tmp_path / "moved") and saved.data_dir == ""
    assert cfg.epochs == 2 and cfg.to_dict() | {"data_dir": "", "epochs": 1} == saved.to_dict()
    cfg, _ = resume_config(run, {"data_dir": "", "epochs": 2})  # the same place: nothing to record
    assert cfg.data_dir == ""


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path):
    """`weightmirror config --example train | head -0`: the closed pipe ends the command quietly (status
    141, as a shell tool killed by SIGPIPE), with no traceback and no 'Exception ignored' at exit."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "weightmirror", "config", "--example", "train"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
