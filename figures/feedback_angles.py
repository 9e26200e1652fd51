"""Angle(B, Wᵀ) per layer over training, one panel per weight layer.

Input: training runs: ``metrics.jsonl`` key ``angles_deg`` (one value per
weight layer, bottom-up) per epoch. BP is drawn as the 0° reference line
(``B = Wᵀ`` exactly), whether or not a BP run is among the results. A run
that diverged (``summary.json`` ``status``) is drawn up to its last finite
epoch and ends there in a red ✕ (a BP run too); epochs without an angle
(``null``: Kolen-Pollack's silent initial B) are left out, so such a curve
starts at its first finite point.

Several seeds of one setting (``weightmirror compare --seeds``: same label,
same configuration but the seed) are one curve: the mean over the seeds that
reached each epoch, with a ±1 sd band, named ``WM (5 seeds)``; a seed that
diverged is drawn thin up to its last finite epoch, ends in a red ✕, and is
counted in the name (``WM (5 seeds, 1 diverged at epoch 3)``). Runs of one
label that differ in more than the seed stay apart.

The panel of a layer whose B carries no error (``summary.json``
``feedback_used``: the input layer's, which passes no error down) is greyed
and says so: its angle is shown for reference, it plays no part in learning.
"""
from __future__ import annotations

import math
from pathlib import Path

from . import style
from .inputs import (SkipFigure, diverged_label, diverged_span, group_title, layer_series, legend_title,
                     make_per_training_group, mean_sd_over_seeds, series_labels, series_variants,
                     training_series, unused_layers, unused_note)

NAME = "feedback_angles"
NEEDS = "training runs with metrics.jsonl (angles_deg, at least one trained epoch) and summary.json"


def _layer_title(l: int, shapes) -> str:
    if shapes and l < len(shapes):
        s = shapes[l]
        dims = "×".join(str(n) for n in s)
        return f"layer {l + 1}  ($W_{{{l + 1}}}$: {dims})"
    return f"layer {l + 1}"


def _top(mean, sd) -> float:
    return max(m + (d if math.isfinite(d) else 0.0) for m, d in zip(mean, sd))


def draw(group, title: str | None = None):
    n = max(r.n_layers for r in group)
    if n == 0:
        raise SkipFigure("no angles_deg in the metrics")
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    # no shared y axis: the input layer's panel (its B carries no error, often at 90°) must not
    # squash the panels of the layers that learn (WM and KP within a few degrees)
    fig, axes = style.figure(rows, cols, figsize=(2.7 * cols + 0.6, 2.5 * rows + 0.5), squeeze=False)
    shapes = group[0].layer_shapes
    series = training_series(group)
    several = any(s.is_seeds for s in series)
    drawn = [(s, label, variant) for s, label, variant in zip(series, series_labels(series), series_variants(series))
             if s.rule != "bp" or s.diverged_runs]  # the reference line stands for BP
    unused = set(unused_layers(group))
    # legend: one entry per text, in the order first drawn; its handle from a panel drawn in full
    # (not from the greyed reference panel) where there is one
    order: list[str] = []
    handles: dict[str, object] = {}

    def remember(text, handle, reference):
        if text not in order:
            order.append(text)
        if text not in handles or (not reference and handles[text][1]):
            handles[text] = (handle, reference)

    tops = {True: 0.0, False: 0.0}  # the highest point drawn in the reference panel(s) and in the others
    for l in range(n):
        ax = axes[l // cols][l % cols]
        reference = l in unused
        top = 0.0
        ref = ax.axhline(0.0, color=style.rule_color("bp"), linestyle="--", linewidth=1.2,
                         label="BP ($B = W^T$, 0°)")
        remember(ref.get_label(), ref, reference)
        for s, label, variant in drawn:
            kwargs = style.line_kwargs(s.rule, variant)
            if not s.is_seeds:
                run = s.run
                xs, ys = layer_series(run, "angles_deg", l)
                if not xs:
                    continue
                top = max(top, max(ys))
                remember(label, ax.plot(xs, ys, label=label, **kwargs)[0], reference)
                if run.status == "diverged":  # ends at its last finite epoch
                    mark = style.mark_diverged(ax, xs[-1], ys[-1], diverged_label(label, run))
                    remember(mark.get_label(), mark, reference)
                continue
            # several seeds: the mean over the seeds still running at each epoch, ±1 sd
            per_run = [layer_series(r, "angles_deg", l) for r in s.runs]
            xs, mean, sd, _ = mean_sd_over_seeds(per_run)
            if not xs:
                continue
            line, band = style.plot_mean_band(ax, xs, mean, sd, label, kwargs)
            remember(label, style.seed_handle(line, band), reference)
            top = max(top, _top(mean, sd))
            for r, (rx, ry) in zip(s.runs, per_run):
                if r.status == "diverged" and rx:  # its own curve, ending where it diverged
                    style.plot_seed_curve(ax, rx, ry, kwargs)
                    style.mark_diverged(ax, rx[-1], ry[-1])
                    remember(style.DIVERGED_SEED_TEXT, style.diverged_seed_handle(), reference)
                    top = max(top, max(ry))
        tops[reference] = max(tops[reference], top)
        ax.set_title(_layer_title(l, shapes))
        ax.set_xlabel("epoch (0 = before training)")
        if l % cols == 0:
            ax.set_ylabel("angle($B$, $W^T$) (degrees)")
        style.epoch_span(ax, diverged_span(group))
        ax.xaxis.get_major_locator().set_params(integer=True)
        if reference:  # the input layer: its angle says nothing about learning
            style.reference_panel(ax, unused_note(group, sep="\n"))
    for l in range(n, rows * cols):
        axes[l // cols][l % cols].set_visible(False)
    for l in range(n):  # the panels of one kind share their scale, from 0 up to what they show
        reference = l in unused
        high = max(tops[reference], 10.0)
        axes[l // cols][l % cols].set_ylim(-0.03 * high - 0.5, high * 1.08 + 0.5)
    legend_name = legend_title(series)
    if several:
        legend_name += "\nline: mean over seeds\nband: ±1 sd"
    if style.DIVERGED_SEED_TEXT in order:  # the key to the ✕ last
        order.remove(style.DIVERGED_SEED_TEXT)
        order.append(style.DIVERGED_SEED_TEXT)
    fig.legend([handles[t][0] for t in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False, title=legend_name)
    fig.suptitle("angle between feedback $B$ and $W^T$ per layer — " + (title or group_title(group)))
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    return make_per_training_group(runs, out_dir, NAME, draw)
