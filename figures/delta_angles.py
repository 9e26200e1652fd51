"""Angle between each rule's δ and backprop's δ per layer: final epoch (bars) and over epochs.

Input: training runs: ``metrics.jsonl`` key ``delta_angles_deg`` (per weight
layer, bottom-up; computed on the same batch for the rule and for backprop).
The top layer's δ is the output error, the same for every rule (0°), so the
figure shows the layers below it. BP is 0° by definition and is not drawn.
A run that diverged has no final value: in the bars panel its places hold a
red ✕ and ``diverged at epoch E``; its curves end at its last finite epoch
in a red ✕. A layer without an angle (``null``) has no bar, only ``n/a``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import style
from .inputs import (SkipFigure, diverged_label, diverged_span, group_title, legend_title,
                     make_per_training_group, rule_variants, run_epochs, run_labels)

NAME = "delta_angles"
NEEDS = "training runs (not BP) of a network with two or more weight layers, with delta_angles_deg"
#: bars of a second, third ... run of one rule (same colour)
HATCHES = ("////", "....", "xxxx", "\\\\")


def _value(v):
    return math.nan if v is None else float(v)


def draw(group, title: str | None = None):
    # names as in the other figures of the group (BP's runs included)
    named = [(r, lab, v) for r, lab, v in zip(group, run_labels(group), rule_variants(group)) if r.rule != "bp"]
    rules = [r for r, _, _ in named]
    labels, variants = [lab for _, lab, _ in named], [v for _, _, v in named]
    n = max(r.n_layers for r in group)
    hidden = n - 1
    if not rules:
        raise SkipFigure("only BP runs (its δ is backprop's: 0° by definition)")
    if hidden < 1:
        raise SkipFigure("one weight layer: its δ is the output error, the same for every rule")
    fig, (ax, ax2) = style.figure(1, 2, figsize=(9.0, 3.4), gridspec_kw={"width_ratios": [1.1, 1]})
    # final epoch: grouped bars
    width = 0.8 / len(rules)
    x = np.arange(hidden)
    for k, run in enumerate(rules):
        pos = x - 0.4 + width * (k + 0.5)
        if run.status == "diverged":  # no value after the last epoch: a red ✕ in its places
            ax.plot(pos, np.full(hidden, 2.0), label=diverged_label(labels[k], run), **style.DIVERGED_MARKER)
            for p in pos:
                ax.text(p, 6, run.diverged_text(), ha="center", va="bottom", fontsize=6, rotation=90,
                        color=style.DIVERGED_COLOR)
            continue
        final = run.summary.get("delta_angles_deg") or run.epochs_trained()[-1].get("delta_angles_deg") or []
        vals = [_value(final[l]) if l < len(final) else math.nan for l in range(hidden)]
        ax.bar(pos, np.nan_to_num(vals), width=width * 0.95, color=style.rule_color(run.rule),
               label=labels[k], edgecolor="white", linewidth=0.3,
               hatch=HATCHES[(variants[k] - 1) % len(HATCHES)] if variants[k] else None)
        for p, v in zip(pos, vals):
            ax.text(p, (0 if math.isnan(v) else v) + 1, "n/a" if math.isnan(v) else f"{v:.0f}",
                    ha="center", va="bottom", fontsize=6, rotation=90 if len(rules) > 4 else 0)
    ax.set_xticks(x, [f"$\\delta_{{{l + 1}}}$ (layer {l + 1})" for l in range(hidden)])
    ax.set_ylabel("angle($\\delta$, $\\delta_{BP}$) (degrees)")
    epochs = sorted({run_epochs(r) for r in rules})
    ax.set_title(f"after the last epoch ({'/'.join(map(str, epochs))})")
    ax.set_ylim(0, max(90.0, ax.get_ylim()[1]) + 8)
    ax.grid(axis="x", visible=False)
    # over epochs: one line per rule and layer (layer by line width)
    styles = ["-", "--", ":", "-."]
    for run, variant in zip(rules, variants):
        for l in range(hidden):
            xs, ys = [], []
            for e, d in zip(*run.series("delta_angles_deg")):
                if l < len(d):
                    xs.append(e)
                    ys.append(_value(d[l]))
            ax2.plot(xs, ys, color=style.rule_color(run.rule), linestyle=styles[l % len(styles)],
                     marker=style.RULE_MARKERS.get(run.rule), markersize=3,
                     fillstyle="none" if variant else "full")
            if run.status == "diverged" and xs:  # ends at its last finite epoch
                finite = [i for i, y in enumerate(ys) if not math.isnan(y)]
                if finite:
                    style.mark_diverged(ax2, xs[finite[-1]], ys[finite[-1]])
    ax2.set_xlabel("epoch (0 = before training)")
    ax2.set_ylabel("angle($\\delta$, $\\delta_{BP}$) (degrees)")
    ax2.set_title("over training")
    style.epoch_span(ax2, diverged_span(group))
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_ylim(0, max(105.0, ax2.get_ylim()[1] + 15))
    from matplotlib.lines import Line2D

    layer_handles = [Line2D([], [], color="0.3", linestyle=styles[l % len(styles)],
                            label=f"$\\delta_{{{l + 1}}}$") for l in range(hidden)]
    ax2.legend(handles=layer_handles, frameon=False, fontsize=7, loc="upper right", ncol=hidden,
               title="line style = layer", title_fontsize=7)
    ax.legend(frameon=False, title=legend_title(rules), ncol=2, fontsize=7, loc="upper right")
    fig.suptitle("angle between each rule's δ and backprop's δ on the same batch "
                 "(top layer: 0° for every rule; BP: 0°)\n" + (title or group_title(group)))
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    return make_per_training_group(runs, out_dir, NAME, draw)
