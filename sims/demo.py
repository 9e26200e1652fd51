"""The main job: the whole simulator at work on the embedded digits data.

``weightmirror demo --out DIR`` (no download, no system data):

1. circuit mode: a short mirror phase of a small weight-mirror circuit in
   Brian2 (rate neurons, and a spiking variant), beside the rate-mode
   prediction -> ``DIR/circuit-rate/``, ``DIR/circuit-spiking/``;
2. rate mode: every rule (BP, FA, uSF, brSF, frSF, WM, KP) trains the same
   MLP on scikit-learn's digits with the same schedule -> ``DIR/training/<rule>/``;
3. every figure those results allow -> ``DIR/figures/``;
4. a printed summary: the comparison table and where the figures are.

It takes a few minutes on two cores; ``--quick`` is a smaller run for tests.
"""
from __future__ import annotations

import time
from pathlib import Path

from sims import config
from sims.train import RunExistsError, load_data, train

DEMO_RULES = ("bp", "fa", "usf", "brsf", "frsf", "wm", "kp")

#: The digits MLP 64-128-128-10 with one schedule for every rule.
DEMO_TRAINING = {
    "data": "digits",
    "model": "mlp",
    "epochs": 20,
    "batch_size": 32,
    "model_options": {"hidden": [128, 128], "activation": "relu"},
    "optim": {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine"},
    # digits gives 44 steps per epoch: the mirror tracks W on a faster clock
    "wm": {"lr": 0.01, "decay": 0.01, "mirror_batch_size": 32, "initial_mirror_steps": 300,
           "initial_decay": 0.02},
    "kp": {"weight_decay": 0.3},
}


def training_configs(quick: bool) -> dict[str, dict]:
    base = dict(DEMO_TRAINING)
    if quick:
        base = {**base, "epochs": 3, "model_options": {"hidden": [32, 32], "activation": "relu"}}
    return {rule: config.resolve(base, {"rule": rule}) for rule in DEMO_RULES}


def _circuit_step(out: Path, quick: bool, progress: bool, log) -> list[Path]:
    """Short circuit-mode mirror phases; returns the folders written."""
    try:
        from sims import circuit
    except ImportError as exc:  # circuit mode missing from this install
        log(f"circuit mode skipped: {exc}")
        return []
    written = []
    for neuron in ("rate", "spiking"):
        folder = out / f"circuit-{neuron}"
        spec = circuit.demo_spec(neuron=neuron, quick=quick)
        circuit.run_circuit(spec, folder, progress=progress)
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
                               log=lambda s: None))
        s = summaries[-1]
        log(f"   {rule:5s} test error {s['test_top1_error']:5.2f}%   angle(B,W^T) "
            + " / ".join(f"{a:4.1f}" for a in s["angles_deg"]) + " deg")

    log("== 3/3 figures from the saved results")
    figures_dir = out / "figures"
    made, skipped = [], {}
    try:
        from figures.make import make_all
    except ImportError as exc:
        log(f"figures skipped: {exc}")
    else:
        report = make_all([*circuit_dirs, out / "training"], figures_dir)
        made, skipped = report["made"], report["skipped"]

    from sims.cli import format_table

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
