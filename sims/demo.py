"""The main job: the whole simulator at work on the embedded digits data.

``weightmirror demo --out DIR`` (no download, no system data):

1. circuit mode: a short mirror phase of a small weight-mirror circuit in
   Brian2 (rate neurons, and a spiking variant), beside the rate-mode
   prediction, and a spiking circuit alternating mirror and engaged blocks on
   digits -> ``DIR/circuit-rate/``, ``DIR/circuit-spiking/``,
   ``DIR/circuit-spiking-alternate/``;
2. rate mode: every rule (BP, FA, uSF, brSF, frSF, WM, KP) trains the same
   MLP on scikit-learn's digits with the same schedule -> ``DIR/training/<rule>/``;
3. every figure those results allow -> ``DIR/figures/``;
4. a printed summary: the comparison table and where the figures are.

It takes a few minutes on two cores; ``--quick`` is a smaller run for tests.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import config
from .report import format_table, marked_angles
from .training import RunExistsError, load_data, train

DEMO_RULES = ("bp", "fa", "usf", "brsf", "frsf", "wm", "kp")

#: The digits MLP 64-128-128-10 with one schedule for every rule, and every
#: rule with its default settings (no per-run tuning).
DEMO_TRAINING = {
    "data": "digits",
    "model": "mlp",
    "epochs": 20,
    "batch_size": 32,
    "model_options": {"hidden": [128, 128], "activation": "relu"},
    "optim": {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine"},
}


def training_configs(quick: bool) -> dict[str, config.TrainConfig]:
    base = dict(DEMO_TRAINING)
    if quick:
        base = {**base, "epochs": 3, "model_options": {"hidden": [32, 32], "activation": "relu"}}
    return {rule: config.resolve(base, {"rule": rule}) for rule in DEMO_RULES}


def circuit_specs(quick: bool) -> dict:
    """The demo's circuits: a weight-mirror circuit 64-32-10 in mirror mode,
    with rate neurons and with Poisson spiking neurons (Brian2, runtime device)."""
    from weightmirror.circuits.rules import WeightMirror
    from weightmirror.circuits.spec import CircuitSpec, NeuronModel, Phases

    duration = 1.0 if quick else 4.0
    specs = {}
    for kind in ("rate", "spiking"):
        specs[kind] = CircuitSpec(
            layers=(64, 32, 10),
            rule=WeightMirror(lr=0.05, decay=0.05, mirror_batch_size=8),
            neuron=NeuronModel(kind=kind),
            phases=Phases(schedule="mirror", duration=duration, record_interval=0.1),
            device="runtime",
        )
    # spiking neurons in both modes (for the raster): mirror and engaged blocks in turn
    specs["spiking-alternate"] = CircuitSpec(
        layers=(64, 16, 10),
        rule=WeightMirror(lr=0.05, decay=0.05, mirror_batch_size=8),
        neuron=NeuronModel(kind="spiking"),
        phases=Phases(schedule="alternate", duration=0.4 if quick else 0.8, mirror_duration=0.2,
                      engaged_duration=0.2, record_interval=0.1),
        device="runtime",
    )
    return specs


def _circuit_step(out: Path, quick: bool, progress: bool, log) -> list[Path]:
    """Short circuit-mode mirror phases; returns the folders written."""
    from .circuit import simulate

    written = []
    for kind, spec in circuit_specs(quick).items():
        folder = out / f"circuit-{kind}"
        summary = simulate(spec, folder, progress=progress).summary
        log(f"   {kind:18s}: angle(B,W^T) after {summary['simulated_seconds']:.1f} s simulated "
            + " / ".join(f"{a:4.1f}" for a in summary["angles_deg"]) + " deg")
        written.append(folder)
    return written


def run(out_dir: str | Path, quick: bool = False, progress: bool = True, log=print) -> int:
    out = Path(out_dir)
    if (out / "training").exists() or (out / "circuit-rate").exists():
        raise RunExistsError(f"{out} already holds a demo run; give another --out or remove it")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)

    log("== 1/3 circuit mode (Brian2): the mirror phase in a small weight-mirror circuit")
    circuit_dirs = _circuit_step(out, quick, progress, log)

    log("== 2/3 rate mode: every rule on scikit-learn's digits, one schedule")
    configs = training_configs(quick)
    data = load_data(next(iter(configs.values())))
    summaries = []
    for rule, cfg in configs.items():
        summaries.append(train(cfg, out / "training" / rule, progress=progress, data=data,
                               log=lambda s: None).summary)
        s = summaries[-1]
        log(f"   {rule:5s} test error {s['test_top1_error']:5.2f}%   angle(B,W^T) "
            + marked_angles(s["angles_deg"], s.get("feedback_used")) + " deg")

    log("== 3/3 figures from the saved results")
    figures_dir = out / "figures"
    made, skipped = [], {}
    try:
        from weightmirror.figures.make import make_all
    except ImportError as exc:
        log(f"figures skipped: {exc}")
    else:
        report = make_all([*circuit_dirs, out / "training"], figures_dir)
        made, skipped = report["made"], report["skipped"]

    log("")
    log(format_table(summaries))
    log("")
    log(f"results:  {out}/training/<rule>/ (config.toml, metrics.jsonl, summary.json, checkpoint.npz)")
    if circuit_dirs:
        log(f"circuit:  {', '.join(str(d) for d in circuit_dirs)}")
    if made:
        log(f"figures:  {figures_dir}/ ({len(made)} made: {', '.join(Path(m).stem for m in made)})")
    for name, why in skipped.items():
        log(f"skipped figure {name}: {why}")
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0
