"""Per-population activity and the distributions of the circuit's synaptic weights.

Input: a ``weightmirror circuit`` run: ``metrics.jsonl`` rows with
``rates_hz`` (spiking units: the population's mean firing rate over each
interval) or ``rates`` / ``rates_rms`` (rate units: the mean and the root mean
square of the units' outputs, dimensionless), and ``weights_initial.npz`` /
``weights_final.npz`` (``W1, B1, ...``; under Dale's law the effective
signed matrices). One row of panels for the first circuit run that has both:

- left, each population's activity against simulated time (forward ``y_l``
  blue, feedback ``δ_l`` red, darker for deeper layers; mirror and engaged
  blocks shaded);
- then one panel per weight layer: histograms of the forward weights ``W_l``
  at the end and of the feedback weights ``B_l`` at the start and at the end,
  with angle(B, Wᵀ) at both ends in the title; the input layer's ``B_1``,
  which carries no error to any synapse, is marked so.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from weightmirror import results
from weightmirror.circuits.rules import angle_degrees

from . import style
from .inputs import SkipFigure, missing, own_label
from .mirror_phase import segments, shade_phases
from .spike_raster import population_key, population_label

NAME = "populations"
NEEDS = "a circuit run with rates in metrics.jsonl and weights_initial.npz, weights_final.npz"
MAX_LAYERS = 4  # weight-layer panels drawn at most (the last ones, whose B carries an error)


def _rate_key(run) -> str | None:
    for row in run.metrics or []:
        for key in ("rates_hz", "rates_rms", "rates"):
            if row.get(key):
                return key
    return None


def draw_rates(ax, run, key: str) -> None:
    rows = [r for r in run.metrics if r.get(key)]
    dale = bool((run.config or {}).get("dale"))
    names = sorted({n for r in rows for n in r[key]}, key=population_key)
    depth = max((population_key(n)[1] for n in names), default=0) or 1
    for name in names:
        order = population_key(name)
        base = style.FEEDBACK_COLOR if order[0] == 1 else style.FORWARD_COLOR
        if order[2]:
            base = "0.45"
        t = [r["t"] for r in rows if r[key].get(name) is not None]
        v = [r[key][name] for r in rows if r[key].get(name) is not None]
        shade = 0.35 + 0.65 * order[1] / depth
        ax.plot(t, v, color=base, alpha=shade, marker="o", markersize=3, label=population_label(name, dale),
                linestyle="--" if order[2] else "-")
    shade_phases(ax, segments(run))
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel({"rates_hz": "mean firing rate (Hz)", "rates_rms": "rms output (rate units, a.u.)",
                   "rates": "mean output (rate units, a.u.)"}[key])
    ax.set_ylim(bottom=0 if key != "rates" else None)
    ax.legend(frameon=False, fontsize=7, ncol=2 if len(names) > 6 else 1)
    ax.set_title("activity per population", fontsize=9)


def draw_weights(ax, l: int, W, B0, B1, carries_error: bool) -> None:
    values = np.concatenate([W.ravel(), B0.ravel(), B1.ravel()])
    lo, hi = np.percentile(values, [0.5, 99.5])
    bins = np.linspace(lo, hi, 41)
    ax.hist(W.ravel(), bins=bins, density=True, histtype="stepfilled", color=style.FORWARD_COLOR, alpha=0.35,
            label=f"$W_{{{l}}}$ (end)")
    ax.hist(B0.ravel(), bins=bins, density=True, histtype="step", color="0.45", linestyle="--",
            label=f"$B_{{{l}}}$ (start)")
    ax.hist(B1.ravel(), bins=bins, density=True, histtype="step", color=style.FEEDBACK_COLOR, linewidth=1.6,
            label=f"$B_{{{l}}}$ (end)")
    a0, a1 = angle_degrees(B0, W), angle_degrees(B1, W)
    note = "" if carries_error else "\n(input layer: its B carries no error)"
    ax.set_title(f"layer {l}, {W.shape[1]} → {W.shape[0]}: angle(B, Wᵀ) {a0:.0f}° → {a1:.0f}°{note}", fontsize=8)
    ax.set_xlabel("synaptic weight (units of the rate code)")
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize=7)


def make(runs, out_dir: Path) -> dict:
    circuits = [r for r in runs if r.kind == "circuit"]
    if not circuits:
        raise SkipFigure("no circuit run among the results (weightmirror circuit)")
    why, chosen = {}, None
    for run in circuits:
        reason = missing(run, "config", "intervals")
        if reason is None and _rate_key(run) is None:
            reason = f"{run.path}/metrics.jsonl: no per-population rates recorded"
        if reason is None:
            try:
                first, last = run.load_arrays("weights_initial"), run.load_arrays("weights_final")
            except results.ResultsError as exc:
                reason = str(exc)
        if reason is not None:
            why[str(run.path)] = reason
            continue
        chosen = (run, first, last)
        break
    if chosen is None:
        raise SkipFigure("no circuit run with rates and weights: " + "; ".join(why.values()))
    run, first, last = chosen
    n = sum(1 for k in last if re.fullmatch(r"W\d+", k))
    layers = list(range(max(1, n - MAX_LAYERS + 1), n + 1))
    fig, axes = style.figure(1, 1 + len(layers), figsize=(4.6 * (1 + len(layers)), 4.2), squeeze=False)
    draw_rates(axes[0][0], run, _rate_key(run))
    for ax, l in zip(axes[0][1:], layers):
        draw_weights(ax, l, np.asarray(last[f"W{l}"]), np.asarray(first[f"B{l}"]), np.asarray(last[f"B{l}"]),
                     carries_error=l > 1)
    cfg = run.config or {}
    name = f"run {own_label(run)}, " if own_label(run) else ""
    fig.suptitle(f"{name}rule {run.rule}, {run.neuron} units, layers {'-'.join(map(str, cfg.get('layers', [])))}"
                 f"{', Dale' if cfg.get('dale') else ''}, {run.schedule}; from {run.path.name if run.path else 'memory'}/",
                 fontsize=9)
    fig.tight_layout()
    made = style.save(fig, out_dir, NAME)
    return {"made": made, "ignored": why}
