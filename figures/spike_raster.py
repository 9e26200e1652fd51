"""Spike rasters of a few neurons per population, in mirror and in engaged mode.

Input: spiking ``weightmirror circuit`` runs: ``spikes.npz`` with
``<population>_i`` (neuron index) and ``<population>_t`` (spike time, s) for
the recorded neurons of each population (``y0..yL``, ``delta0..deltaL``, and
under Dale's law the inhibitory interneurons ``inh_y<l>``, ``inh_delta<l>``),
and the run's ``config.toml`` for its phase schedule. One panel per mode: a
window of the first block of that mode, from the first spiking run that has
it (an alternating run serves both). Each band is labelled with its
population, E or I under Dale's law, the recorded neurons' indices, and, at
the right, their mean firing rate in the window.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from weightmirror import results
from weightmirror.circuits.spec import SPIKING_KINDS

from . import style
from .inputs import SkipFigure, missing, no_runs_reason, own_label
from .mirror_phase import segments

NAME = "spike_raster"
NEEDS = "a spiking circuit run with spikes.npz (and config.toml)"
WINDOW = 0.2  # seconds of each mode shown at most
MAX_NEURONS = 8  # per population


def population_key(name: str) -> tuple:
    """Sort key of a population name: forward ``y_l`` before feedback ``δ_l``, by layer, each
    population before its inhibitory relay ``inh_*`` (others last); ``(kind, layer, relay, name)``."""
    m = re.fullmatch(r"(inh_)?(y|delta)(\d+)", name)
    if not m:
        return (2, 0, 0, name)
    return (0 if m.group(2) == "y" else 1, int(m.group(3)), 1 if m.group(1) else 0, name)


def _populations(arrays: dict) -> list[str]:
    names = {k[:-2] for k in arrays if k.endswith("_i") and f"{k[:-2]}_t" in arrays}
    return sorted(names, key=population_key)


def population_label(name: str, dale: bool = False) -> str:
    m = re.fullmatch(r"(inh_)?(y|delta)(\d+)", name)
    if not m:
        return name
    unit = f"$y_{{{m.group(3)}}}$" if m.group(2) == "y" else f"$\\delta_{{{m.group(3)}}}$"
    if m.group(1):
        return f"inh. relay of {unit} (I)"
    return f"{unit} (E)" if dale else unit


def panel(ax, arrays: dict, t0: float, t1: float, dale: bool = False) -> None:
    pops = _populations(arrays)
    row = 0
    ticks, labels = [], []
    for name in pops:
        i = np.asarray(arrays[f"{name}_i"])
        t = np.asarray(arrays[f"{name}_t"], dtype=float)
        n = min(int(i.max()) + 1 if i.size else 0, MAX_NEURONS)
        if n == 0:
            continue
        inhibitory = name.startswith("inh_")
        color = "0.35" if inhibitory else (style.FEEDBACK_COLOR if name.startswith("delta") else style.FORWARD_COLOR)
        sel = (t >= t0) & (t < t1) & (i < n)
        ax.scatter(t[sel], row + i[sel], marker="|", s=14, linewidths=0.8, color=color)
        ticks.append(row + (n - 1) / 2)
        labels.append(f"{population_label(name, dale)}\nneurons 0–{n - 1}")
        rate = int(sel.sum()) / (n * (t1 - t0)) if t1 > t0 else float("nan")
        ax.annotate(f"{rate:.0f} Hz", xy=(1.0, row + (n - 1) / 2), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=7, color=color)
        row += n + 1
        ax.axhline(row - 1, color="0.85", linewidth=0.5)
    ax.set_yticks(ticks, labels)
    ax.set_ylim(-1, max(row - 1, 1))
    ax.set_xlim(t0, t1)
    ax.set_xlabel("simulated time (s)")
    ax.grid(False)


def make(runs, out_dir: Path) -> dict:
    spiking = [r for r in runs if r.kind == "circuit" and r.neuron in SPIKING_KINDS]
    if not spiking:
        raise SkipFigure("no spiking circuit run among the results (weightmirror circuit --neuron spiking)")
    why = {str(r.path): missing(r, "config", "spikes") for r in spiking if missing(r, "config", "spikes")}
    circuits = [r for r in spiking if str(r.path) not in why]
    if not circuits:
        raise SkipFigure(no_runs_reason("circuit", why, "with spikes"))
    chosen = {}
    for mode in ("mirror", "engaged"):
        for run in circuits:
            segs = [(a, b) for p, a, b in segments(run) if p == mode]
            if segs:
                a, b = segs[0]
                chosen[mode] = (run, a, min(b, a + WINDOW))
                break
    if not chosen:
        raise SkipFigure("the spiking runs' schedules have neither a mirror nor an engaged block")
    fig, axes = style.figure(1, len(chosen), figsize=(5.2 * len(chosen) + 0.8, 5.0), squeeze=False)
    for ax, (mode, (run, a, b)) in zip(axes[0], chosen.items()):
        try:
            arrays = run.load_arrays("spikes")
        except results.ResultsError as exc:
            raise SkipFigure(str(exc)) from None
        panel(ax, arrays, a, b, dale=bool((run.config or {}).get("dale")))
        layers = "-".join(map(str, (run.config or {}).get("layers", [])))
        name = f"run {own_label(run)}, " if own_label(run) else ""
        ax.set_title(f"{mode} mode, {b - a:g} s from t = {a:g} s\n{name}rule {run.rule}, layers {layers}, "
                     f"from {run.path.name}/", fontsize=8)
    absent = [m for m in ("mirror", "engaged") if m not in chosen]
    note = f" (no spiking run in {absent[0]} mode among the results)" if absent else ""
    fig.suptitle(f"spikes of up to {MAX_NEURONS} recorded neurons per population\n(blue: forward $y_l$, red: "
                 f"feedback $\\delta_l$, grey: inhibitory interneurons;\nright: mean rate in the window)"
                 + (f"\n{note.strip()}" if note else ""), fontsize=8)
    fig.tight_layout()
    made = style.save(fig, out_dir, NAME)
    return {"made": made, "ignored": why}
