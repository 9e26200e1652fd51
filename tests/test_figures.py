"""Figures from saved results: every figure script on small REAL runs.

The results are made once per session by short real runs (``sims.train`` on
the digits MLP for BP, FA, WM and KP; a tiny ``sims.circuit`` mirror phase in
Brian2's runtime device, and a spiking one where circuit mode builds it);
the figures then only read them. Circuit figures skip with the reason when
circuit mode (``sims.circuit`` / Brian2) is missing or fails to run.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weightmirror.figures import make as figures_make
from weightmirror.figures.inputs import SkipFigure, discover

RULES = ("bp", "fa", "wm", "kp")
TRAINING_FIGURES = ("feedback_angles", "test_error", "delta_angles")
CIRCUIT_FIGURES = ("circuit_diagram", "mirror_phase", "populations")
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# real results, made once
# ---------------------------------------------------------------------------
TINY = {"data": "digits", "model": "mlp", "epochs": 2, "batch_size": 64,
        "model_options": {"hidden": [16, 16]}, "wm": {"initial_mirror_steps": 50}}


@pytest.fixture(scope="session")
def training_results(tmp_path_factory) -> Path:
    """A compare-style folder: one real 2-epoch run per rule (digits, MLP 64-16-16-10)."""
    from weightmirror.sims import config
    from weightmirror.sims.training import load_data, train

    out = tmp_path_factory.mktemp("compare")
    base = TINY
    data = None
    for rule in RULES:
        cfg = config.resolve(base, {"rule": rule})
        if data is None:
            data = load_data(cfg)
        train(cfg, out / rule, progress=False, log=lambda s: None, data=data)
    return out


@pytest.fixture(scope="session")
def wm_pairs(tmp_path_factory) -> Path:
    """Four real 2-epoch WM runs: ``labelled/fast`` and ``labelled/slow`` (labels wm-fast and
    wm-slow) and ``plain/a/wm``, ``plain/b/wm`` (no label: both named by their rule; b has another
    seed AND another WM learning rate, so it is not a second seed of a's setting)."""
    from weightmirror.sims import config
    from weightmirror.sims.training import load_data, train

    out = tmp_path_factory.mktemp("wm-pairs")
    runs = {"labelled/fast": {"rule": "wm", "label": "wm-fast"},
            "labelled/slow": {"rule": "wm", "label": "wm-slow", "wm": {"lr": 0.0005, "decay": 0.0005}},
            "plain/a/wm": {"rule": "wm"},
            "plain/b/wm": {"rule": "wm", "seed": 1, "wm": {"lr": 0.0005, "decay": 0.0005}}}
    data = None
    for folder, overrides in runs.items():
        cfg = config.resolve(TINY, overrides)
        if data is None:
            data = load_data(cfg)
        train(cfg, out / folder, progress=False, log=lambda s: None, data=data)
    return out


@pytest.fixture(scope="session")
def diverged_results(tmp_path_factory) -> Path:
    """A compare-style folder: real 2-epoch BP and KP runs, and a WM run that diverged at epoch 2, step 3
    (a NaN training loss put in at that step: its folder holds rows 0 and 1 and a diverged summary)."""
    import math

    import weightmirror.sims.training.loop as loop
    from weightmirror.sims import config
    from weightmirror.sims.training import DivergedError, load_data, make_batch_source, train

    out = tmp_path_factory.mktemp("diverged")
    data = None
    for rule in ("bp", "wm", "kp"):
        cfg = config.resolve(TINY, {"rule": rule})
        if data is None:
            data = load_data(cfg)
        if rule != "wm":
            train(cfg, out / rule, progress=False, log=lambda s: None, data=data)
            continue
        steps = make_batch_source(cfg, data, 0, 1).steps_per_epoch()
        real_loss, calls = loop.softmax_cross_entropy, []

        def loss(logits, labels, xp, label_smoothing=0.0):
            calls.append(1)
            value, grad = real_loss(logits, labels, xp, label_smoothing)
            return (math.nan if len(calls) == steps + 3 else value), grad

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(loop, "softmax_cross_entropy", loss)
            with pytest.raises(DivergedError):
                train(cfg, out / rule, progress=False, log=lambda s: None, data=data)
    return out


def _circuit_run(out: Path, neuron: str, schedule: str = "mirror") -> Path:
    from weightmirror.circuits.spec import CircuitSpec
    from weightmirror.sims import circuit

    spec = CircuitSpec.from_dict({
        "layers": [6, 5, 3],
        "rule": {"name": "wm", "lr": 0.1, "decay": 0.1, "mirror_batch_size": 8},
        "neuron": {"kind": neuron},
        "phases": {"schedule": schedule, "duration": 0.2, "record_interval": 0.05},
    })
    circuit.simulate(spec, out, progress=False)
    return out


@pytest.fixture(scope="session")
def circuit_results(tmp_path_factory) -> Path:
    """A real, tiny circuit-mode mirror phase (rate neurons, runtime device)."""
    return _circuit_run(tmp_path_factory.mktemp("circuit") / "wm-rate", "rate")


@pytest.fixture(scope="session")
def spiking_results(tmp_path_factory) -> Path:
    """A real, tiny spiking circuit run (writes spikes.npz)."""
    return _circuit_run(tmp_path_factory.mktemp("circuit") / "wm-spiking", "spiking")


def _check_png_pdf(png: Path) -> None:
    png = Path(png)
    pdf = png.with_suffix(".pdf")
    assert png.is_file() and pdf.is_file(), png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1024
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert pdf.stat().st_size > 1024


def _module(name):
    return next(m for m in figures_make.figure_modules() if m.NAME == name)


# ---------------------------------------------------------------------------
# every figure script
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", TRAINING_FIGURES)
def test_training_figure_from_real_runs(name, training_results, tmp_path):
    result = _module(name).make(discover([training_results]), tmp_path)
    pngs = [p for p in result["made"] if str(p).endswith(".png")]
    assert [Path(p).name for p in pngs] == [f"{name}.png"]
    for p in pngs:
        _check_png_pdf(p)


@pytest.mark.parametrize("name", CIRCUIT_FIGURES)
def test_circuit_figure_from_a_real_circuit_run(name, circuit_results, tmp_path):
    result = _module(name).make(discover([circuit_results]), tmp_path)
    pngs = [p for p in result["made"] if str(p).endswith(".png")]
    assert [Path(p).name for p in pngs] == [f"{name}.png"]
    _check_png_pdf(pngs[0])


def test_spike_raster_from_a_real_spiking_run(spiking_results, tmp_path):
    result = _module("spike_raster").make(discover([spiking_results]), tmp_path)
    _check_png_pdf(result["made"][0])


def test_populations_panels_read_the_runs_own_weights_and_rates(circuit_results, tmp_path):
    """The weight panels' titles give angle(B, Wᵀ) of the files at hand (B set to 2W at the end: 0°), the
    input layer is marked as carrying no error, and the activity panel has one line per population."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from weightmirror import results

    pop = _module("populations")
    run = tmp_path / "run"
    shutil.copytree(circuit_results, run)
    last = dict(np.load(run / "weights_final.npz"))
    last["B2"] = 2 * last["W2"]
    results.save_arrays(run / "weights_final.npz", last)
    first = dict(np.load(run / "weights_initial.npz"))
    fig, axes = plt.subplots(1, 3)
    pop.draw_weights(axes[1], 1, last["W1"], first["B1"], last["B1"], carries_error=False)
    pop.draw_weights(axes[2], 2, last["W2"], first["B2"], last["B2"], carries_error=True)
    assert "no error" in axes[1].get_title() and "no error" not in axes[2].get_title()
    assert axes[2].get_title().endswith("→ 0°")
    (loaded,) = discover([run])
    pop.draw_rates(axes[0], loaded, pop._rate_key(loaded))
    names = {n for row in loaded.metrics for n in (row.get("rates_rms") or {})}
    assert len(axes[0].get_lines()) == len(names) == 6  # y0..y2, delta0..delta2
    plt.close(fig)
    made = pop.make(discover([run]), tmp_path / "figs")["made"]
    _check_png_pdf(made[0])


def test_populations_skips_a_run_without_rates(circuit_results, tmp_path):
    from weightmirror import results

    run = tmp_path / "run"
    shutil.copytree(circuit_results, run)
    rows = results.read_metrics(run / results.METRICS)
    for row in rows:
        for key in ("rates", "rates_rms", "rates_hz"):
            row.pop(key, None)
    (run / results.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SkipFigure, match="no per-population rates"):
        _module("populations").make(discover([run]), tmp_path / "figs")


def test_circuit_diagram_from_a_spec_object(tmp_path):
    pytest.importorskip("weightmirror.circuits.spec")
    from weightmirror.circuits.spec import CircuitSpec
    from weightmirror.figures import circuit_diagram, style

    spec = CircuitSpec.from_dict({"layers": [784, 100, 30, 10], "rule": {"name": "kp"},
                                  "phases": {"schedule": "engaged"}})
    paths = style.save(circuit_diagram.draw(spec), tmp_path, "diagram")
    _check_png_pdf(paths[0])


def test_results_table_labels_ours_and_published(training_results, tmp_path):
    result = _module("results_table").make(discover([training_results]), tmp_path)
    md = (tmp_path / "results_table.md").read_text(encoding="utf-8")
    tex = (tmp_path / "results_table.tex").read_text(encoding="utf-8")
    assert {Path(p).name for p in result["made"]} == {"results_table.md", "results_table.tex"}
    # ours: data set, model, epochs, and the numbers of the runs
    assert "scikit-learn digits" in md and "MLP 64-16-16-10" in md and "2 epochs" in md
    for rule in RULES:
        s = json.loads((training_results / rule / "summary.json").read_text())
        assert f"{s['test_top1_error']:.2f}" in md
    # published: source and the anchors of MISSION.md
    assert "Akrout" in md and "400 epochs" in md and "Published numbers (not ours)" in md
    for number in ("9.20", "13.06", "9.69", "10.02", "9.61", "1.50", "2.20", "89.8 / 40.0", "12.8 / 3.8",
                   "20.0 / 3.6"):
        assert number in md, number
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "9.20" in tex
    assert "\\delta_{\\mathrm{BP}}" in tex and "δ" not in tex


def test_make_all_and_the_command(training_results, circuit_results, tmp_path, capsys):
    from weightmirror.sims.cli import main

    out = tmp_path / "figs"
    rc = main(["figures", "--results", str(training_results), str(circuit_results), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    for name in (*TRAINING_FIGURES, *CIRCUIT_FIGURES, "results_table"):
        assert f"made     {name}" in printed, printed
        assert (out / (f"{name}.md" if name == "results_table" else f"{name}.png")).is_file()
    assert "skipped  spike_raster" in printed and "no spiking circuit run" in printed
    report = figures_make.make_all([training_results], tmp_path / "again")
    assert {Path(p).stem for p in report["made"]} == {*TRAINING_FIGURES, "results_table"}
    assert set(report["skipped"]) == {*CIRCUIT_FIGURES, "spike_raster"}
    for png in report["made"]:
        if png.endswith(".png"):
            _check_png_pdf(Path(png))


# ---------------------------------------------------------------------------
# runs told apart by their label
# ---------------------------------------------------------------------------
def _legend_texts(fig) -> list[str]:
    """Every entry of every legend of ``fig`` (figure legends and axes legends)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def _one_group(paths):
    from weightmirror.figures.inputs import group_training_runs

    groups = group_training_runs(discover(paths))
    assert len(groups) == 1
    return groups[0]


@pytest.mark.parametrize("name", ("feedback_angles", "test_error"))
def test_two_labelled_runs_of_one_rule_get_two_legend_entries(name, wm_pairs):
    import matplotlib.pyplot as plt

    group = _one_group([wm_pairs / "labelled"])
    assert sorted(r.label for r in group) == ["wm-fast", "wm-slow"]
    fig = _module(name).draw(group)
    try:
        texts = _legend_texts(fig)
        assert "wm-fast" in texts and "wm-slow" in texts, texts
        assert len(texts) == len(set(texts)), texts
        assert "WM" not in texts
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", ("feedback_angles", "test_error"))
def test_two_unlabelled_runs_of_one_rule_still_get_two_legend_entries(name, wm_pairs):
    import matplotlib.pyplot as plt

    group = _one_group([wm_pairs / "plain"])
    assert [r.label for r in group] == ["wm", "wm"]
    fig = _module(name).draw(group)
    try:
        texts = _legend_texts(fig)
        wm = [t for t in texts if t.startswith("WM")]
        assert len(wm) == 2 and len(set(wm)) == 2, texts
        assert len(texts) == len(set(texts)), texts
        assert any("a/wm" in t for t in wm) and any("b/wm" in t for t in wm), texts
    finally:
        plt.close(fig)


def test_all_four_runs_in_one_figure_and_their_files(wm_pairs, tmp_path):
    import matplotlib.pyplot as plt

    group = _one_group([wm_pairs])
    for name in ("feedback_angles", "test_error", "delta_angles"):
        fig = _module(name).draw(group)
        try:
            texts = [t for t in _legend_texts(fig) if not t.startswith("$")]  # delta_angles: layer legend
            runs = [t for t in texts if t.startswith(("WM", "wm-"))]
            assert len(runs) == 4 and len(set(runs)) == 4, (name, texts)
        finally:
            plt.close(fig)
    report = figures_make.make_all([wm_pairs], tmp_path / "figs")
    assert {Path(p).stem for p in report["made"]} == {*TRAINING_FIGURES, "results_table"}


def _table_rows(md: str, header_start: str) -> list[str]:
    """The first cell of each row of the Markdown table whose header starts ``| header_start``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip())
    return rows


def test_results_table_rows_are_named_by_label_and_distinct(wm_pairs, tmp_path):
    _module("results_table").make(discover([wm_pairs]), tmp_path)
    md = (tmp_path / "results_table.md").read_text(encoding="utf-8")
    rows = _table_rows(md, "run | ours:")
    assert len(rows) == 4 and len(set(rows)) == 4, rows
    assert {"wm-fast", "wm-slow"} <= set(rows), rows
    assert sorted(r for r in rows if r.startswith("WM")) == ["WM (a/wm)", "WM (b/wm)"], rows
    # an unlabelled run that clashes with no other keeps its rule's label, as before
    _module("results_table").make(discover([wm_pairs / "plain" / "a", wm_pairs / "labelled" / "fast"]),
                                  tmp_path / "two")
    rows = _table_rows((tmp_path / "two" / "results_table.md").read_text(encoding="utf-8"), "run | ours:")
    assert sorted(rows) == ["WM", "wm-fast"], rows


def test_run_labels_rules_of_naming():
    from weightmirror.figures import inputs, style
    from weightmirror.results import Run

    def run(rule, label=None, path=None):
        summary = {"rule": rule, **({"label": label} if label is not None else {})}
        return Run(path=None if path is None else Path(path), kind="train", summary=summary)

    # a run named by its rule shows the rule's own label; a label of its own, as given
    assert inputs.run_labels([run("wm", "wm"), run("usf"), run("kp", "mine")]) == ["WM", "uSF", "mine"]
    # a label naming the run's own rule (``ss`` recorded as rule usf) is the rule
    assert inputs.run_labels([run("usf", "ss")]) == ["uSF"]
    # clashes: the results folder (as many parts as it takes), else numbers
    assert inputs.run_labels([run("wm", path="/r/x/wm"), run("wm", path="/r/y/wm"), run("fa")]) == \
        ["WM (x/wm)", "WM (y/wm)", "FA"]
    assert inputs.run_labels([run("wm", "same", "/r/one"), run("fa", "same", "/r/two")]) == \
        ["same (one)", "same (two)"]
    assert inputs.run_labels([run("wm"), run("wm")]) == ["WM #1", "WM #2"]
    # an unknown rule of an old results folder is shown as it is
    assert inputs.run_labels([run("dfa")]) == ["dfa"]
    assert style.rule_label("dfa") == "dfa" and style.rule_display_name("dfa") == "dfa"
    assert style.rule_label("brsf") == "brSF" and style.rule_display_name("kp") == "Kolen-Pollack"
    # colours and markers stay by rule; a second run of a rule takes another line style
    first, second = style.line_kwargs("wm", 0), style.line_kwargs("wm", 1)
    assert first["color"] == second["color"] and first["marker"] == second["marker"]
    assert first["linestyle"] != second["linestyle"]
    assert inputs.rule_variants([run("wm"), run("fa"), run("wm")]) == [0, 0, 1]


def test_missing_and_tag_are_functions_of_the_run(training_results, circuit_results):
    from weightmirror.figures import inputs
    from weightmirror.results import Run

    train_run, circuit_run = discover([training_results / "wm"])[0], discover([circuit_results])[0]
    assert inputs.missing(train_run, "trained", "summary", "config") is None
    assert "spikes.npz: missing" in inputs.missing(circuit_run, "spikes")
    assert inputs.tag(train_run) == "wm" and inputs.tag(circuit_run) == "wm-rate-mirror"
    assert not hasattr(Run, "missing") and not hasattr(Run, "tag")


def test_circuit_declaration_is_read_with_the_one_toml_reader(tmp_path):
    from weightmirror.figures import circuit_diagram
    from weightmirror.figures.inputs import FigureInputError

    (tmp_path / "config.toml").write_text("layers = [3, 2\n", encoding="utf-8")
    with pytest.raises(FigureInputError, match="config.toml: not valid TOML"):
        circuit_diagram.declaration(tmp_path)
    (tmp_path / "config.toml").write_text('layers = [3, 2]\nrule = {name = "wm"}\n', encoding="utf-8")
    assert circuit_diagram.declaration(tmp_path)["layers"] == [3, 2]
    with pytest.raises(SkipFigure, match="missing"):
        circuit_diagram.declaration(tmp_path / "nowhere")


# ---------------------------------------------------------------------------
# missing and partial results
# ---------------------------------------------------------------------------
def test_missing_path_is_a_clear_error(tmp_path, capsys):
    from weightmirror.sims.cli import main

    missing = tmp_path / "no-such-run"
    with pytest.raises(figures_make.FigureInputError, match="no-such-run: no such results folder"):
        figures_make.make_all([missing], tmp_path / "out")
    assert issubclass(figures_make.FigureInputError, ValueError)
    rc = main(["figures", "--results", str(missing), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "no-such-run: no such results folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(figures_make.FigureInputError, match="no results in it"):
        figures_make.make_all([empty], tmp_path / "out")


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage, expected", [
    ("metrics", "metrics.jsonl: missing"),
    ("summary", "summary.json: missing (the run did not finish)"),
    ("zero_epochs", "no trained epoch (only epoch 0"),
    ("empty_metrics", "metrics.jsonl: empty"),
])
def test_partial_training_run_is_skipped_with_the_reason(damage, expected, training_results, tmp_path):
    run = _copy_run(training_results / "wm", tmp_path / "wm")
    metrics = run / "metrics.jsonl"
    if damage == "metrics":
        metrics.unlink()
    elif damage == "summary":
        (run / "summary.json").unlink()
    elif damage == "zero_epochs":
        metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
        (run / "summary.json").unlink()
    elif damage == "empty_metrics":
        metrics.write_text("")
    report = figures_make.make_all([run], tmp_path / "out")
    made = {Path(p).stem for p in report["made"]}
    # the table needs only summary.json; the curves need metrics.jsonl too
    assert made == ({"results_table"} if damage in ("metrics", "empty_metrics") else set())
    for name in TRAINING_FIGURES:
        assert expected in report["skipped"][name], report["skipped"][name]
        assert str(run) in report["skipped"][name]
    assert expected in report["ignored"][str(run)]


def test_partial_run_beside_good_ones_is_left_out_and_named(training_results, tmp_path):
    folder = tmp_path / "compare"
    shutil.copytree(training_results, folder)
    (folder / "kp" / "metrics.jsonl").unlink()
    report = figures_make.make_all([folder], tmp_path / "out")
    assert {Path(p).stem for p in report["made"]} >= set(TRAINING_FIGURES)
    assert "metrics.jsonl: missing" in report["ignored"][str(folder / "kp")]


def test_circuit_folder_with_only_its_config(circuit_results, tmp_path):
    run = tmp_path / "circuit"
    run.mkdir()
    shutil.copy(circuit_results / "config.toml", run / "config.toml")
    report = figures_make.make_all([run], tmp_path / "out")
    assert [Path(p).stem for p in report["made"]] == ["circuit_diagram"]  # drawn from the declaration
    assert "metrics.jsonl: missing" in report["skipped"]["mirror_phase"]
    assert "no spiking circuit run" in report["skipped"]["spike_raster"]


def test_skip_is_not_an_error_when_nothing_matches(training_results, tmp_path):
    with pytest.raises(SkipFigure, match="no circuit run"):
        _module("mirror_phase").make(discover([training_results]), tmp_path)


# ---------------------------------------------------------------------------
# figures only read: no training, no simulation imported
# ---------------------------------------------------------------------------
def test_figure_modules_import_nothing_that_trains_or_simulates():
    code = (
        "import sys, json\n"
        "from weightmirror.figures import make\n"
        "make.figure_modules()\n"
        "import weightmirror.figures.style, weightmirror.figures.inputs\n"
        "bad = sorted(m for m in sys.modules if m == 'brian2' or m.startswith(('brian2.', "
        "'weightmirror.models', 'weightmirror.sims', 'weightmirror.circuits.brian', 'cupy')))\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------------------
# a run that diverged is drawn as diverged; an angle that is not there is not drawn
# ---------------------------------------------------------------------------
def _diverged_markers(fig):
    """``(axes index, x data, y data)`` of every red ✕ in ``fig``."""
    from weightmirror.figures import style

    return [(i, list(line.get_xdata()), list(line.get_ydata())) for i, ax in enumerate(fig.axes)
            for line in ax.get_lines()
            if line.get_marker() == "x" and line.get_color() == style.DIVERGED_COLOR]


def _line(fig, label, axis=0):
    lines = [line for line in fig.axes[axis].get_lines() if line.get_label() == label]
    assert len(lines) == 1, [line.get_label() for line in fig.axes[axis].get_lines()]
    return lines[0]


@pytest.mark.parametrize("name", TRAINING_FIGURES)
def test_a_diverged_run_ends_at_its_last_finite_epoch_with_a_red_cross(name, diverged_results):
    import matplotlib.pyplot as plt

    group = _one_group([diverged_results])
    wm_run = next(r for r in group if r.rule == "wm")
    assert wm_run.status == "diverged" and wm_run.diverged["epoch"] == 2
    assert [r["epoch"] for r in wm_run.metrics] == [0, 1]
    fig = _module(name).draw(group)
    try:
        texts = _legend_texts(fig)
        assert "WM: diverged at epoch 2" in texts, texts
        assert not any("diverged" in t for t in texts if not t.startswith("WM")), texts  # BP, KP completed
        markers = _diverged_markers(fig)
        assert markers, "no red ✕"
        over_epochs = [m for m in markers if not (name == "delta_angles" and m[0] == 0)]
        assert over_epochs
        for _, xs, ys in over_epochs:  # at the last finite epoch (row 1), on a finite value
            assert all(x == 1 for x in xs) and all(math.isfinite(y) for y in ys), markers
        if name == "feedback_angles":
            assert len(markers) == 3  # one per layer panel
            for axis in range(3):
                wm_line = _line(fig, "WM", axis)
                assert list(wm_line.get_xdata()) == [0, 1]
                assert all(y > 0 for y in wm_line.get_ydata()), "never a flat 0° curve"
                bp_ref = [line for line in fig.axes[axis].get_lines() if line.get_label().startswith("BP")]
                assert len(bp_ref) == 1  # the completed BP run stays the reference line
        elif name == "test_error":
            assert list(_line(fig, "WM").get_xdata()) == [0, 1]
            assert list(_line(fig, "BP").get_xdata()) == [0, 1, 2]
        else:  # delta_angles: no bar after the last epoch, the ✕ and the words in its places
            bar_texts = [t.get_text() for t in fig.axes[0].texts]
            assert bar_texts.count("diverged at epoch 2") == 2, bar_texts
            assert "WM" not in [c.get_label() for c in fig.axes[0].containers]  # bars: FA/KP only
            in_bars = [m for m in markers if m[0] == 0]
            assert len(in_bars) == 1 and len(in_bars[0][1]) == 2  # one ✕ per hidden layer's place
            assert len(over_epochs) == 2 and all(i == 1 for i, _, _ in over_epochs)  # δ₁, δ₂ curves
    finally:
        plt.close(fig)


def test_the_results_table_says_diverged_at_epoch_e(diverged_results, tmp_path):
    result = _module("results_table").make(discover([diverged_results]), tmp_path)
    assert {Path(p).name for p in result["made"]} == {"results_table.md", "results_table.tex"}
    md = (tmp_path / "results_table.md").read_text(encoding="utf-8")
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| rule | ours:"))
    rows = {}
    for line in lines[start + 2:]:  # our table only (the published one has a WM row too)
        if not line.startswith("|"):
            break
        rows[line.split("|")[1].strip()] = line
    assert set(rows) == {"BP", "WM", "KP"}, rows
    cells = [c.strip() for c in rows["WM"].split("|")[2:5]]
    assert cells == ["diverged at epoch 2"] * 3, rows["WM"]
    s = json.loads((diverged_results / "wm" / "summary.json").read_text())
    assert f"{s['test_top1_error']:.2f}" not in rows["WM"]
    assert "diverged at epoch 2" not in rows["BP"] and "diverged at epoch 2" not in rows["KP"]
    assert "Diverged (WM)" in md and "2 epochs" in md
    assert "diverged at epoch 2" in (tmp_path / "results_table.tex").read_text(encoding="utf-8")


def test_make_all_draws_a_diverged_run_and_ignores_nothing(diverged_results, tmp_path):
    report = figures_make.make_all([diverged_results], tmp_path / "figs")
    assert {Path(p).stem for p in report["made"]} == {*TRAINING_FIGURES, "results_table"}
    assert str(diverged_results / "wm") not in report["ignored"], report["ignored"]


def test_a_run_that_diverged_in_epoch_1_is_still_drawn(diverged_results, tmp_path):
    """Only its epoch-0 row: not skipped as "no trained epoch", a ✕ at epoch 0 and the note."""
    import matplotlib.pyplot as plt

    folder = tmp_path / "cmp"
    shutil.copytree(diverged_results, folder)
    metrics = folder / "wm" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    summary = json.loads((folder / "wm" / "summary.json").read_text())
    summary["diverged"]["epoch"], summary["epochs"] = 1, 0
    (folder / "wm" / "summary.json").write_text(json.dumps(summary))
    report = figures_make.make_all([folder], tmp_path / "figs")
    assert str(folder / "wm") not in report["ignored"], report["ignored"]
    fig = _module("feedback_angles").draw(_one_group([folder]))
    try:
        assert "WM: diverged at epoch 1" in _legend_texts(fig)
        assert all(xs == [0] for _, xs, _ in _diverged_markers(fig))
        assert fig.axes[0].get_xlim()[1] >= 2  # the axis spans the epochs the runs were set to train
    finally:
        plt.close(fig)


def test_a_summary_without_status_counts_as_completed(training_results, tmp_path):
    """Older results folders: no ``status`` in summary.json; ``completed: true`` is a completed run."""
    import matplotlib.pyplot as plt

    folder = tmp_path / "old"
    shutil.copytree(training_results, folder)
    for rule in RULES:
        path = folder / rule / "summary.json"
        summary = json.loads(path.read_text())
        assert summary.pop("status") == "completed" and summary["completed"] is True
        path.write_text(json.dumps(summary))
    runs = discover([folder])
    assert {r.status for r in runs} == {"completed"}
    for name in TRAINING_FIGURES:
        fig = _module(name).draw(_one_group([folder]))
        try:
            assert not _diverged_markers(fig)
            assert not [t for t in _legend_texts(fig) if "diverged" in t]
        finally:
            plt.close(fig)
    _module("results_table").make(runs, tmp_path / "table")
    assert "diverged" not in (tmp_path / "table" / "results_table.md").read_text(encoding="utf-8")


def test_kolen_pollack_silent_start_has_no_angle_and_its_curve_starts_at_epoch_1(training_results):
    """KP's B starts from a mirror phase, but the input layer's B (which carries no error) is
    not mirrored and starts at zero: no direction, so no angle at epoch 0 (null, never 90° or
    0°), and that layer's curve starts at epoch 1; the others start at epoch 0, near 0°."""
    import matplotlib.pyplot as plt

    kp = discover([training_results / "kp"])[0]
    first = kp.metrics[0]["angles_deg"]
    assert first[0] is None and all(a is not None and a < 5 for a in first[1:])
    assert all(a is not None and 0 < a < 180 for r in kp.metrics[1:] for a in r["angles_deg"])
    fig = _module("feedback_angles").draw(_one_group([training_results]))
    try:
        assert list(_line(fig, "KP", 0).get_xdata()) == [1, 2]
        for axis in (1, 2):
            assert list(_line(fig, "KP", axis).get_xdata()) == [0, 1, 2]
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------
# several seeds of one setting: one curve (mean ± sd), one table row
# ---------------------------------------------------------------------------
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def seeds_results(tmp_path_factory) -> Path:
    """``weightmirror compare --rules bp,wm --seeds 0,1,2``: OUT/<rule>/seed-<s>/ and OUT/comparison.json."""
    from weightmirror.sims.cli import main

    out = tmp_path_factory.mktemp("seeds") / "cmp"
    assert main(["compare", "--rules", "bp,wm", "--seeds", ",".join(map(str, SEEDS)), "--epochs", "2",
                 "--batch-size", "64", "--quiet", "--out", str(out)]) == 0
    assert (out / "comparison.json").is_file()
    return out


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _mean_sd_by_epoch(folders, key, layer=None):
    """``{epoch: (mean, sample sd)}`` of ``key`` (layer ``layer``) over the folders' metrics, read here."""
    import numpy as np

    values: dict = {}
    for folder in folders:
        for row in _rows(folder):
            v = row.get(key)
            if v is not None and layer is not None:
                v = v[layer]
            if v is not None:
                values.setdefault(row["epoch"], []).append(v)
    return {e: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan)
            for e, v in sorted(values.items())}


def _band(ax, label):
    from matplotlib.collections import PolyCollection

    bands = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_gid() == f"band:{label}"]
    assert len(bands) == 1, [c.get_gid() for c in ax.collections]
    return bands[0]


def _check_band(ax, label, expected):
    """The ±1 sd band of ``label`` spans mean − sd .. mean + sd at every epoch."""
    import numpy as np

    verts = np.concatenate([p.vertices for p in _band(ax, label).get_paths()])
    for epoch, (mean, sd) in expected.items():
        ys = verts[np.isclose(verts[:, 0], epoch), 1]
        assert ys.size, (label, epoch)
        assert ys.min() == pytest.approx(mean - sd, abs=1e-6) and ys.max() == pytest.approx(mean + sd, abs=1e-6), \
            (label, epoch, ys, mean, sd)


def test_seed_folders_are_one_series_per_label(seeds_results):
    from weightmirror.figures.inputs import series_labels, training_series

    group = _one_group([seeds_results])
    assert len(group) == 6
    series = training_series(group)
    assert [(s.rule, s.seeds) for s in series] == [("bp", list(SEEDS)), ("wm", list(SEEDS))]
    assert series_labels(series) == ["BP (3 seeds)", "WM (3 seeds)"]


def test_another_rules_section_does_not_split_the_seeds(seeds_results, tmp_path):
    """A BP seed whose config differs only in [wm] (e.g. a WM default added by a later release)
    stays in BP's series; a WM seed that differs in [wm] does not stay in WM's."""
    import re

    from weightmirror.figures.inputs import training_series

    copy = tmp_path / "cmp"
    shutil.copytree(seeds_results, copy)
    for rule in ("bp", "wm"):
        path = copy / rule / "seed-1" / "config.toml"
        text = path.read_text()
        changed = re.sub(r"(\[wm\][^\[]*?\nsigma = )1\.0", r"\g<1>0.5", text)
        assert changed != text
        path.write_text(changed)
    series = training_series(_one_group([copy]))
    assert sorted((s.rule, len(s.runs)) for s in series) == [("bp", 3), ("wm", 1), ("wm", 2)]


def test_a_key_added_empty_by_a_later_release_does_not_split_the_seeds(seeds_results, tmp_path):
    """One seed's config lacks ``init_from`` (written before the key existed), the others say
    ``init_from = ""`` (not set): one series; a seed that did start from another run is its own."""
    from weightmirror.figures.inputs import training_series

    copy = tmp_path / "cmp"
    shutil.copytree(seeds_results, copy)
    for seed, value in (("seed-0", None), ("seed-1", '""'), ("seed-2", '""')):
        path = copy / "wm" / seed / "config.toml"
        lines = [l for l in path.read_text().splitlines() if not l.startswith("init_from")]
        if value is not None:
            lines.insert(1, f"init_from = {value}")
        path.write_text("\n".join(lines) + "\n")
    assert [len(s.runs) for s in training_series(_one_group([copy])) if s.rule == "wm"] == [3]
    path = copy / "wm" / "seed-2" / "config.toml"
    path.write_text(path.read_text().replace('init_from = ""', 'init_from = "runs/x"'))
    assert sorted(len(s.runs) for s in training_series(_one_group([copy])) if s.rule == "wm") == [1, 2]


def test_feedback_angles_draws_the_mean_over_seeds_with_a_band(seeds_results):
    import matplotlib.pyplot as plt

    folders = [seeds_results / "wm" / f"seed-{s}" for s in SEEDS]
    fig = _module("feedback_angles").draw(_one_group([seeds_results]))
    try:
        texts = _legend_texts(fig)
        assert texts.count("WM (3 seeds)") == 1, texts
        assert not [t for t in texts if "seed-" in t or t == "WM"], texts  # no curve per seed
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert len(panels) == 3
        for layer, ax in enumerate(panels):
            wm = [line for line in ax.get_lines() if line.get_label().startswith("WM")]
            assert [line.get_label() for line in wm] == ["WM (3 seeds)"]  # exactly one WM line per panel
            expected = _mean_sd_by_epoch(folders, "angles_deg", layer)
            assert list(wm[0].get_xdata()) == list(expected)
            assert list(wm[0].get_ydata()) == pytest.approx([m for m, _ in expected.values()], abs=1e-9)
            _check_band(ax, "WM (3 seeds)", expected)
            # BP (three seeds too) stays the 0° reference line, not a curve of its own
            assert [line.get_label() for line in ax.get_lines() if line.get_label().startswith("BP")] == \
                ["BP ($B = W^T$, 0°)"]
    finally:
        plt.close(fig)


def test_the_input_layer_panel_says_its_b_carries_no_error(seeds_results, tmp_path):
    import matplotlib.pyplot as plt

    summary = json.loads((seeds_results / "wm" / "seed-0" / "summary.json").read_text())
    assert summary["feedback_used"] == [False, True, True]
    fig = _module("feedback_angles").draw(_one_group([seeds_results]))
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
        assert "B carries no error" in titles[0] and "not learnt by WM" in titles[0], titles
        assert "shown for reference" in titles[0]
        assert not any("no error" in t for t in titles[1:]), titles
        faces = [ax.get_facecolor() for ax in fig.axes if ax.get_visible()]
        assert faces[0] != faces[1] and faces[1] == faces[2]  # the reference panel is greyed
    finally:
        plt.close(fig)
    # older summaries without feedback_used: an MLP's first weight layer carries no error all the same
    old = tmp_path / "old"
    shutil.copytree(seeds_results, old)
    for path in old.glob("*/seed-*/summary.json"):
        s = json.loads(path.read_text())
        del s["feedback_used"]
        path.write_text(json.dumps(s))
    fig = _module("feedback_angles").draw(_one_group([old]))
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
        assert "B carries no error" in titles[0] and not any("no error" in t for t in titles[1:]), titles
    finally:
        plt.close(fig)


def test_test_error_draws_the_mean_over_seeds_and_the_validation_error(seeds_results):
    import matplotlib.pyplot as plt

    folders = [seeds_results / "wm" / f"seed-{s}" for s in SEEDS]
    fig = _module("test_error").draw(_one_group([seeds_results]))
    try:
        assert "WM (3 seeds)" in _legend_texts(fig) and "BP (3 seeds)" in _legend_texts(fig)
        ylabels = [ax.get_ylabel() for ax in fig.axes]
        assert ylabels[:2] == ["test top-1 error (%)", "validation top-1 error (%)"], ylabels
        for ax, key in zip(fig.axes, ("test_top1_error", "val_top1_error", "train_loss")):
            expected = _mean_sd_by_epoch(folders, key)
            line = _line(fig, "WM (3 seeds)", fig.axes.index(ax))
            assert list(line.get_xdata()) == list(expected)
            assert list(line.get_ydata()) == pytest.approx([m for m, _ in expected.values()], abs=1e-9)
            if key != "train_loss":  # (a log axis keeps the band above 0; errors stay well above)
                _check_band(ax, "WM (3 seeds)", expected)
    finally:
        plt.close(fig)


def test_delta_angles_bars_are_means_with_sd_error_bars(seeds_results):
    import matplotlib.pyplot as plt
    import numpy as np

    finals = [json.loads((seeds_results / "wm" / f"seed-{s}" / "summary.json").read_text())["delta_angles_deg"]
              for s in SEEDS]
    fig = _module("delta_angles").draw(_one_group([seeds_results]))
    try:
        bars = [c for c in fig.axes[0].containers if c.get_label() == "WM (3 seeds)"]
        assert len(bars) == 1
        heights = [patch.get_height() for patch in bars[0].patches]
        assert heights == pytest.approx([np.mean([f[l] for f in finals]) for l in range(2)], abs=1e-9)
        assert bars[0].errorbar is not None, "no error bars"
        segments = bars[0].errorbar.lines[2][0].get_segments()
        spans = [seg[1][1] - seg[0][1] for seg in segments]
        assert spans == pytest.approx([2 * np.std([f[l] for f in finals], ddof=1) for l in range(2)], abs=1e-9)
        assert "WM (3 seeds)" in _legend_texts(fig)
    finally:
        plt.close(fig)


def _our_rows(md: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and rows (first cell -> cells) of our training table."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| rule | ours:"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return header, rows


def test_results_table_mean_sd_seed_count_and_p_from_comparison_json(seeds_results, tmp_path):
    import numpy as np

    _module("results_table").make(discover([seeds_results]), tmp_path)
    md = (tmp_path / "results_table.md").read_text(encoding="utf-8")
    header, rows = _our_rows(md)
    assert set(rows) == {"BP", "WM"}, rows
    col = {h: i for i, h in enumerate(header)}
    errors = [json.loads((seeds_results / "wm" / f"seed-{s}" / "summary.json").read_text())["test_top1_error"]
              for s in SEEDS]
    wm = rows["WM"]
    assert wm[col["ours: test top-1 error (%)"]] == f"{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f}"
    assert wm[col["ours: seeds (n)"]] == "3"
    comparison = json.loads((seeds_results / "comparison.json").read_text())
    p = comparison["runs"]["wm"]["vs_reference"]["paired_p"]
    expected_p = "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")
    assert wm[col["paired p vs BP"]] == expected_p
    assert rows["BP"][col["paired p vs BP"]] == "reference"
    assert "comparison.json" in md
    # the angle columns mark the input layer, and a note says why
    angle_header = next(h for h in header if h.startswith("ours: angle(B"))
    assert "1*" in angle_header and "2*" not in angle_header
    assert "Layer 1*: the input layer's B carries no error" in md
    tex = (tmp_path / "results_table.tex").read_text(encoding="utf-8")
    assert "$\\pm$" in tex and "±" not in tex
    # without comparison.json: nothing computed, no p column
    bare = tmp_path / "bare"
    shutil.copytree(seeds_results, bare)
    (bare / "comparison.json").unlink()
    _module("results_table").make(discover([bare]), tmp_path / "t2")
    header, rows = _our_rows((tmp_path / "t2" / "results_table.md").read_text(encoding="utf-8"))
    assert "paired p vs BP" not in header
    assert rows["WM"][header.index("ours: test top-1 error (%)")] == wm[col["ours: test top-1 error (%)"]]


def test_results_table_quotes_folders_as_they_were_named(seeds_results, tmp_path, monkeypatch):
    """Results given by a relative path are quoted relative: no absolute path of this machine in the table."""
    shutil.copytree(seeds_results, tmp_path / "work" / "cmp")
    monkeypatch.chdir(tmp_path / "work")
    _module("results_table").make(discover([Path("cmp")]), Path("out"))
    for name in ("results_table.md", "results_table.tex"):
        text = (tmp_path / "work" / "out" / name).read_text(encoding="utf-8")
        assert "from cmp" in text and "cmp/comparison.json" in text
        assert str(tmp_path) not in text


def test_a_diverged_seed_stops_and_the_mean_goes_on_over_the_others(seeds_results, tmp_path):
    """WM seed 1 diverged in epoch 2 (its rows 0 and 1 kept): the mean at epoch 2 is over seeds 0 and 2."""
    import matplotlib.pyplot as plt

    folder = tmp_path / "cmp"
    shutil.copytree(seeds_results, folder)
    bad = folder / "wm" / "seed-1"
    (bad / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(bad)[:2]))
    summary = json.loads((bad / "summary.json").read_text())
    summary.update(status="diverged", completed=False, diverged={"epoch": 2, "step": 3, "what": "loss"})
    (bad / "summary.json").write_text(json.dumps(summary))
    label = "WM (3 seeds, 1 diverged at epoch 2)"
    folders = [folder / "wm" / f"seed-{s}" for s in SEEDS]
    for name in TRAINING_FIGURES:
        fig = _module(name).draw(_one_group([folder]))
        try:
            texts = _legend_texts(fig)
            assert label in texts, (name, texts)
            assert _diverged_markers(fig), name
            if name == "feedback_angles":
                for layer in range(3):
                    expected = _mean_sd_by_epoch(folders, "angles_deg", layer)
                    line = _line(fig, label, layer)
                    assert list(line.get_ydata()) == pytest.approx([m for m, _ in expected.values()], abs=1e-9)
                    assert all(xs == [1] for i, xs, _ in _diverged_markers(fig) if i == layer)
                    # epoch 2: over the two seeds still running
                    both = [_rows(f)[2]["angles_deg"][layer] for f in folders if f != bad]
                    assert line.get_ydata()[2] == pytest.approx(sum(both) / 2)
        finally:
            plt.close(fig)
    _module("results_table").make(discover([folder]), tmp_path / "table")
    md = (tmp_path / "table" / "results_table.md").read_text(encoding="utf-8")
    header, rows = _our_rows(md)
    assert rows["WM"][header.index("ours: seeds (n)")] == "2 (1 of 3 diverged at epoch 2)"
    assert "seed 1 at epoch 2" in md
    # comparison.json was written before seed 1 "diverged": stale for WM, so its p is not used
    assert rows["WM"][header.index("paired p vs BP")] == "–"


def test_same_label_different_setting_is_not_averaged(wm_pairs, seeds_results, tmp_path):
    """plain/a/wm and plain/b/wm: one label (wm), different seeds AND a different WM learning rate:
    two curves, each its own run's numbers; while two seeds of one setting are one curve."""
    import matplotlib.pyplot as plt

    from weightmirror.figures.inputs import training_series

    group = _one_group([wm_pairs / "plain"])
    assert [r.label for r in group] == ["wm", "wm"] and sorted(r.summary["seed"] for r in group) == [0, 1]
    assert [len(s.runs) for s in training_series(group)] == [1, 1]
    fig = _module("feedback_angles").draw(group)
    try:
        texts = _legend_texts(fig)
        assert not any("seeds" in t for t in texts), texts
        for run in group:
            label = next(t for t in texts if t.endswith(f"{Path(run.path).parent.name}/wm)"))
            expected = [row["angles_deg"][1] for row in _rows(run.path)]
            assert list(_line(fig, label, 1).get_ydata()) == pytest.approx(expected)
    finally:
        plt.close(fig)
    # the same two folders, but b made a second seed of a's setting (its config but the seed): one curve
    same = tmp_path / "same"
    shutil.copytree(wm_pairs / "plain", same)
    config_a = (same / "a" / "wm" / "config.toml").read_text()
    assert "\nseed = 0\n" in config_a
    (same / "b" / "wm" / "config.toml").write_text(config_a.replace("\nseed = 0\n", "\nseed = 1\n"))
    assert [len(s.runs) for s in training_series(_one_group([same]))] == [2]
