"""Data-parallel training on the CPU: two MPI ranks on NumPy against one process.

The test launches ``mpirun -n 2 python -m tests.test_train_distributed OUT``;
this file is also the script each rank runs (``_rank_main`` at the bottom).
It is skipped, with the reason, where mpirun or mpi4py is missing.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from weightmirror import results
from weightmirror.sims import config

REPO = Path(__file__).resolve().parents[1]
#: run name -> (rule, global batch); batch 63 splits unevenly (32 + 31)
RUNS = {"bp": ("bp", 64), "wm": ("wm", 64), "bp-odd": ("bp", 63)}


def _cfg(name: str, distributed: bool) -> dict:
    """A small digits MLP, 2 epochs; the global batch splits into one shard per rank."""
    rule, batch = RUNS[name]
    return config.resolve({
        "rule": rule, "epochs": 2, "batch_size": batch, "seed": 1,
        "model_options": {"hidden": [32]},
        "wm": {"initial_mirror_steps": 50, "initial_decay": 0.03},
        "run": {"delta_batch_size": 64, "distributed": distributed},
    })


def _need_mpi():
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not found (apt-get install openmpi-bin libopenmpi-dev)")
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py not installed (pip install mpi4py)")


def _mpirun(n: int, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [shutil.which("mpirun"), "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += ["-n", str(n), sys.executable, *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"  # two ranks share two cores
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"mpirun failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _net_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays = results.load_arrays(path)
    return {k[4:]: v for k, v in arrays.items() if k.startswith("net.")}


def test_two_ranks_train_like_one_process_and_keep_identical_replicas(tmp_path):
    _need_mpi()
    _mpirun(2, ["-m", "tests.test_train_distributed", str(tmp_path)])
    from weightmirror.sims.training import train

    # bp: two ranks on half batches give the weights of one process on whole batches
    # (unequal shards are weighted by their sample counts)
    for name in ("bp-odd", "bp"):
        single = tmp_path / f"single-{name}"
        train(_cfg(name, False), single, progress=False, log=lambda s: None)
        want = _net_arrays(single / results.CHECKPOINT)
        got = _net_arrays(tmp_path / name / results.CHECKPOINT)
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}")
    a = results.read_metrics(single / results.METRICS)
    b = results.read_metrics(tmp_path / "bp" / results.METRICS)
    assert [r["epoch"] for r in b] == [0, 1, 2]
    for ra, rb in zip(a, b):  # the test set is split over the ranks and the counts summed
        assert rb["test_top1_error"] == pytest.approx(ra["test_top1_error"], abs=0.3)
        # the validation part too (143 of digits' 1,437 training images: one sample is 0.7 %)
        assert rb["val_top1_error"] == pytest.approx(ra["val_top1_error"], abs=0.75)
        if "train_loss" in ra:
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)

    for rule in RUNS:
        # only rank 0 wrote the results folder; both replicas ended identical
        summary = json.loads((tmp_path / rule / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["completed"]
        r0 = np.load(tmp_path / f"{rule}-rank0.npz")
        r1 = np.load(tmp_path / f"{rule}-rank1.npz")
        assert sorted(r0.files) == sorted(r1.files)
        for key in r0.files:
            np.testing.assert_array_equal(r0[key], r1[key], err_msg=f"{rule} {key}")
        if rule == "wm":
            assert any(k.endswith(".B") for k in r0.files)
            # the mirror aligns B with Wᵀ as in one process (feedback alignment stays near 85°)
            alone = train(_cfg("wm", False), tmp_path / "single-wm", progress=False, log=lambda s: None).summary
            # the ranks' noise samples add up (B is averaged after every step): never worse than one process
            assert all(a <= b + 1.0 for a, b in zip(summary["angles_deg"][1:], alone["angles_deg"][1:]))
            assert max(summary["angles_deg"][1:]) < 45  # the layers whose B carries an error


def test_compare_distributed_writes_each_rule_once_and_prints_one_table(tmp_path):
    _need_mpi()
    out = tmp_path / "cmp"
    proc = _mpirun(2, ["-c", "import sys; from weightmirror.sims.cli import main; sys.exit(main(sys.argv[1:]))",
                       "compare", "--rules", "bp,kp", "--epochs", "1", "--batch-size", "64", "--distributed",
                       "--quiet", "--out", str(out)])
    assert proc.stdout.count("| run | rule | test top-1 error") == 1, proc.stdout
    for rule in ("bp", "kp"):
        summary = json.loads((out / rule / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["completed"] and summary["rule"] == rule
        assert summary["test_top1_error"] < 50


def _rank_main(out: str) -> int:
    """Each rank: train every rule distributed, then save this replica's arrays."""
    import weightmirror.sims.training.loop as train_mod
    from weightmirror.models.backend import to_numpy

    nets = []
    build = train_mod.build_network

    def keep(*args, **kwargs):
        nets.append(build(*args, **kwargs))
        return nets[-1]

    train_mod.build_network = keep
    out_dir = Path(out)
    for rule in RUNS:
        summary = train_mod.train(_cfg(rule, True), out_dir / rule, progress=False, log=lambda s: None).summary
        assert summary["world_size"] == 2, summary
        state = {k: to_numpy(v) for k, v in nets[-1].state().items()}
        np.savez(out_dir / f"{rule}-rank{summary['rank']}.npz", **state)
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1]))
