"""compare --seeds: every rule with every seed, and statistics that match the saved runs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from weightmirror import results
from weightmirror.sims.cli import main
from weightmirror.sims.stats import mcnemar


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    code = main(["compare", "--rules", "bp,fa", "--seeds", "0,1,2", "--epochs", "2", "--batch-size", "64",
                 "--quiet", "--out", str(out)])
    assert code == 0
    return out


def test_every_rule_runs_every_seed_in_its_own_folder(compared):
    for rule in ("bp", "fa"):
        for seed in (0, 1, 2):
            summary = json.loads((compared / rule / f"seed-{seed}" / results.SUMMARY).read_text())
            assert summary["seed"] == seed and summary["rule"] == rule and summary["status"] == "completed"
            preds = np.load(compared / rule / f"seed-{seed}" / "predictions.npz")
            assert preds["test_pred"].shape == (360,) and preds["test_label"].shape == (360,)
            # the saved predictions are the final network's: their error is the reported test error
            assert 100 * np.mean(preds["test_pred"] != preds["test_label"]) == pytest.approx(summary["test_top1_error"])


def test_the_statistics_are_those_of_the_saved_runs(compared):
    c = json.loads((compared / "comparison.json").read_text())
    assert c["reference"] == "bp" and set(c["runs"]) == {"bp", "fa"}

    def summaries(rule):
        return [json.loads((compared / rule / f"seed-{s}" / results.SUMMARY).read_text()) for s in (0, 1, 2)]

    fa, bp = summaries("fa"), summaries("bp")
    errors = [s["test_top1_error"] for s in fa]
    e = c["runs"]["fa"]
    assert e["n"] == 3 and e["seeds"] == [0, 1, 2] and e["diverged"] == []
    assert e["test_top1_error"]["mean"] == pytest.approx(np.mean(errors))
    assert e["test_top1_error"]["sd"] == pytest.approx(np.std(errors, ddof=1))
    assert e["val_top1_error"]["mean"] == pytest.approx(np.mean([s["val_top1_error"] for s in fa]))
    # the largest angle over the layers whose B carries an error: layers 2 and 3, not the input layer's
    assert e["largest_angle_used_deg"]["mean"] == pytest.approx(np.mean([max(s["angles_deg"][1:]) for s in fa]))
    vs = e["vs_reference"]
    d = np.subtract(errors, [s["test_top1_error"] for s in bp])
    assert vs["test_diff_mean"] == pytest.approx(d.mean())
    if d.std(ddof=1) > 0:
        assert vs["paired_t"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(3)))
    right = {r: np.concatenate([(lambda p: p["test_pred"] == p["test_label"])(
        np.load(compared / r / f"seed-{s}" / "predictions.npz")) for s in (0, 1, 2)]) for r in ("fa", "bp")}
    m = mcnemar(right["fa"], right["bp"])
    assert vs["mcnemar"] == {"only_this_right": m.b, "only_reference_right": m.c, "examples": 1080, "p": m.p}
    table = (compared / "comparison.md").read_text()
    assert "| fa | fa | 3 |" in table and "0 of 3" in table


def test_bad_seeds_are_one_line(tmp_path, capsys):
    for text in ("0,0", "-1", "a,b", ""):
        with pytest.raises(SystemExit) as info:
            main(["compare", "--seeds", text, "--out", str(tmp_path / "x")])
        assert info.value.code == 2
        assert "expected" in capsys.readouterr().err
