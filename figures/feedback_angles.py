"""Angle(B, Wᵀ) per layer over training, one panel per weight layer.

Input: training runs: ``metrics.jsonl`` key ``angles_deg`` (one value per
weight layer, bottom-up) per epoch. BP is drawn as the 0° reference line
(``B = Wᵀ`` exactly), whether or not a BP run is among the results. A run
that diverged (``summary.json`` ``status``) is drawn up to its last finite
epoch and ends there in a red ✕ (a BP run too); epochs without an angle
(``null``: Kolen-Pollack's silent initial B) are left out, so such a curve
starts at its first finite point.
"""
from __future__ import annotations

import math
from pathlib import Path

from . import style
from .inputs import (SkipFigure, diverged_label, diverged_span, group_title, legend_title,
                     make_per_training_group, rule_variants, run_labels)

NAME = "feedback_angles"
NEEDS = "training runs with metrics.jsonl (angles_deg, at least one trained epoch) and summary.json"


def _layer_title(l: int, shapes) -> str:
    if shapes and l < len(shapes):
        s = shapes[l]
        dims = "×".join(str(n) for n in s)
        return f"layer {l + 1}  ($W_{{{l + 1}}}$: {dims})"
    return f"layer {l + 1}"


def draw(group, title: str | None = None):
    n = max(r.n_layers for r in group)
    if n == 0:
        raise SkipFigure("no angles_deg in the metrics")
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = style.figure(rows, cols, figsize=(2.7 * cols + 0.6, 2.5 * rows + 0.5), squeeze=False,
                             sharey=True)
    shapes = group[0].layer_shapes
    drawn = [(run, label, variant) for run, label, variant in zip(group, run_labels(group), rule_variants(group))
             if run.rule != "bp" or run.status == "diverged"]  # the reference line stands for BP
    top = 90.0
    for l in range(n):
        ax = axes[l // cols][l % cols]
        ax.axhline(0.0, color=style.rule_color("bp"), linestyle="--", linewidth=1.2,
                   label="BP ($B = W^T$, 0°)")
        for run, label, variant in drawn:
            xs, ys = [], []
            for e, a in zip(*run.series("angles_deg")):
                if l < len(a) and a[l] is not None:
                    xs.append(e)
                    ys.append(a[l])
            if not xs:
                continue
            top = max(top, max(ys))
            ax.plot(xs, ys, label=label, **style.line_kwargs(run.rule, variant))
            if run.status == "diverged":  # ends at its last finite epoch
                style.mark_diverged(ax, xs[-1], ys[-1], diverged_label(label, run))
        ax.set_title(_layer_title(l, shapes))
        ax.set_xlabel("epoch (0 = before training)")
        if l % cols == 0:
            ax.set_ylabel("angle($B$, $W^T$) (degrees)")
        style.epoch_span(ax, diverged_span(group))
        ax.xaxis.get_major_locator().set_params(integer=True)
    for l in range(n, rows * cols):
        axes[l // cols][l % cols].set_visible(False)
    axes[0][0].set_ylim(-3, top + 5)
    handles, labels = axes[0][0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen.keys()), loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False, title=legend_title(group))
    fig.suptitle("angle between feedback $B$ and $W^T$ per layer — " + (title or group_title(group)))
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    return make_per_training_group(runs, out_dir, NAME, draw)
