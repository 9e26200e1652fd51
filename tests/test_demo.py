"""The main job, end to end in its quick form."""
import json

from weightmirror.sims.cli import main


def test_demo_quick_writes_runs_figures_and_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for rule in ("bp", "fa", "usf", "brsf", "frsf", "wm", "kp"):
        summary = json.loads((out / "training" / rule / "summary.json").read_text())
        assert summary["rule"] == rule and summary["epochs"] == 3
        assert f"| {rule} |" in printed
    for kind in ("rate", "spiking", "spiking-alternate"):
        assert (out / f"circuit-{kind}" / "summary.json").is_file()
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    for stem in ("feedback_angles", "test_error", "delta_angles", "spike_raster"):
        assert f"{stem}.png" in pngs, pngs
    assert any(p.startswith("mirror_phase") for p in pngs) and any(p.startswith("circuit_diagram") for p in pngs)
    assert (out / "figures" / "results_table.md").read_text().count("| WM |") >= 1
    assert f"figures:  {out}/figures/" in printed
    # a second demo into the same folder is refused and leaves the first intact
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 2
    assert (out / "training" / "bp" / "summary.json").is_file()
