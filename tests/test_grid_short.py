"""Short versions of the robustness grid (``bench/grid.py``): no divergence, B near Wᵀ.

One epoch (about 420 steps) of each Fashion-MNIST row with the rules' default
settings: every run completes, the weight mirror's B stays within 15° of Wᵀ
and Kolen-Pollack's within 5° in every layer whose B carries an error, and
feedback alignment stays far from it (the contrast the grid reports). Slow
(a few minutes in all); needs Debian's ``dataset-fashion-mnist``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from weightmirror.sims.datasets.idx import FASHION_MNIST_DEFAULT_DIR

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _grid_rows() -> dict:
    spec = importlib.util.spec_from_file_location("grid", ROOT / "bench" / "grid.py")
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    return grid.ROWS


@pytest.fixture(scope="module")
def rows():
    if not (FASHION_MNIST_DEFAULT_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found in {FASHION_MNIST_DEFAULT_DIR} (apt-get install dataset-fashion-mnist)")
    return _grid_rows()


@pytest.mark.parametrize("row", ["fmnist-mlp", "fmnist-sigmoid", "fmnist-deep4", "fmnist-deep6"])
def test_a_short_grid_row_trains_every_rule_and_aligns(rows, row):
    import weightmirror as wm

    angles = {}
    for rule in ("wm", "kp", "fa"):
        run = wm.train({**rows[row], "epochs": 1, "seed": 0}, rule=rule, progress=False)
        s = run.summary
        assert s["status"] == "completed", (row, rule)
        used = [a for a, u in zip(s["angles_deg"], s["feedback_used"]) if u]
        angles[rule] = max(used)
        # the first epoch's curve: from the initial phase the angles stay small (WM, KP)
        if rule in ("wm", "kp"):
            for r in run.metrics:
                assert all(a is not None and a < 15 for a, u in zip(r["angles_deg"], s["feedback_used"]) if u)
    assert angles["wm"] < 15 and angles["kp"] < 5, (row, angles)
    assert angles["fa"] > 45, (row, angles)
