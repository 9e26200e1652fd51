"""Angle between each rule's δ and backprop's δ per layer: final epoch (bars) and over epochs.

Input: training runs: ``metrics.jsonl`` key ``delta_angles_deg`` (per weight
layer, bottom-up; computed on the same batch for the rule and for backprop).
The top layer's δ is the output error, the same for every rule (0°), so the
figure shows the layers below it. BP is 0° by definition and is not drawn.
A run that diverged has no final value: in the bars panel its places hold a
red ✕ and ``diverged at epoch E``; its curves end at its last finite epoch
in a red ✕. A layer without an angle (``null``) has no bar, only ``n/a``.

Several seeds of one setting (``weightmirror compare --seeds``): a bar is the
mean over the seeds that completed, its error bar ±1 sd, its name
``WM (5 seeds)`` (``WM (5 seeds, 1 diverged at epoch 3)``); the curves are
the mean over the seeds that reached each epoch with a ±1 sd band, a diverged
seed's own curve thin, ending in a red ✕.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import style
from .inputs import (SkipFigure, diverged_label, diverged_span, group_title, legend_title,
                     make_per_training_group, mean_sd, mean_sd_over_seeds, run_epochs, series_labels,
                     series_variants, training_series)

NAME = "delta_angles"
NEEDS = "training runs (not BP) of a network with two or more weight layers, with delta_angles_deg"
#: bars of a second, third ... run of one rule (same colour)
HATCHES = ("////", "....", "xxxx", "\\\\")


def _value(v):
    return math.nan if v is None else float(v)


def _final(run) -> list:
    return run.summary.get("delta_angles_deg") or run.epochs_trained()[-1].get("delta_angles_deg") or []


def draw(group, title: str | None = None):
    # names as in the other figures of the group (BP's runs included)
    series = training_series(group)
    named = [(s, lab, v) for s, lab, v in zip(series, series_labels(series), series_variants(series))
             if s.rule != "bp"]
    rules = [s for s, _, _ in named]
    labels, variants = [lab for _, lab, _ in named], [v for _, _, v in named]
    several = any(s.is_seeds for s in rules)
    n = max(r.n_layers for r in group)
    hidden = n - 1
    if not rules:
        raise SkipFigure("only BP runs (its δ is backprop's: 0° by definition)")
    if hidden < 1:
        raise SkipFigure("one weight layer: its δ is the output error, the same for every rule")
    fig, (ax, ax2) = style.figure(1, 2, figsize=(9.0, 3.4) if not several else (10.0, 3.8),
                                  gridspec_kw={"width_ratios": [1.1, 1]})
    # final epoch: grouped bars (several seeds: the mean over the completed seeds, error bar ±1 sd)
    width = 0.8 / len(rules)
    x = np.arange(hidden)
    for k, s in enumerate(rules):
        pos = x - 0.4 + width * (k + 0.5)
        run = s.run
        if not s.completed:  # no value after the last epoch: a red ✕ in its places
            ax.plot(pos, np.full(hidden, 2.0), label=labels[k] if s.is_seeds else diverged_label(labels[k], run),
                    **style.DIVERGED_MARKER)
            for p in pos:
                ax.text(p, 6, s.diverged_text() if s.is_seeds else run.diverged_text(), ha="center",
                        va="bottom", fontsize=6, rotation=90, color=style.DIVERGED_COLOR)
            continue
        finals = [_final(r) for r in s.completed]
        stats = [mean_sd(f[l] if l < len(f) else None for f in finals) for l in range(hidden)]
        vals = [m for _, m, _ in stats]
        sds = [d if math.isfinite(d) else 0.0 for _, _, d in stats]
        bar_kwargs = dict(width=width * 0.95, color=style.rule_color(s.rule), label=labels[k], edgecolor="white",
                          linewidth=0.3, hatch=HATCHES[(variants[k] - 1) % len(HATCHES)] if variants[k] else None)
        if s.is_seeds:
            bar_kwargs.update(yerr=sds, error_kw={"ecolor": "0.15", "elinewidth": 0.9, "capsize": 2.5,
                                                  "capthick": 0.9})
        ax.bar(pos, np.nan_to_num(vals), **bar_kwargs)
        for p, v, d in zip(pos, vals, sds):
            ax.text(p, (0 if math.isnan(v) else v + (d if s.is_seeds else 0)) + 1,
                    "n/a" if math.isnan(v) else f"{v:.0f}",
                    ha="center", va="bottom", fontsize=6, rotation=90 if len(rules) > 4 else 0)
    ax.set_xticks(x, [f"$\\delta_{{{l + 1}}}$ (layer {l + 1})" for l in range(hidden)])
    ax.set_ylabel("angle($\\delta$, $\\delta_{BP}$) (degrees)")
    epochs = sorted({run_epochs(r) for s in rules for r in s.runs})
    ax.set_title(f"after the last epoch ({'/'.join(map(str, epochs))})"
                 + ("\nbars: mean over the completed seeds, error bars: ±1 sd" if several else ""))
    ax.set_ylim(0, max(90.0, ax.get_ylim()[1]) + 8)
    ax.grid(axis="x", visible=False)
    # over epochs: one line per rule and layer (layer by line style); several seeds: mean, ±1 sd band
    styles = ["-", "--", ":", "-."]
    top = 0.0
    for s, label, variant in zip(rules, labels, variants):
        for l in range(hidden):
            kwargs = dict(color=style.rule_color(s.rule), linestyle=styles[l % len(styles)],
                          marker=style.RULE_MARKERS.get(s.rule), markersize=3,
                          fillstyle="none" if variant else "full")
            per_run = []
            for run in s.runs:
                xs, ys = [], []
                for e, d in zip(*run.series("delta_angles_deg")):
                    if l < len(d):
                        xs.append(e)
                        ys.append(_value(d[l]))
                per_run.append((xs, ys))
            if not s.is_seeds:
                xs, ys = per_run[0]
                ax2.plot(xs, ys, **kwargs)
            else:
                xs, mean, sd, _ = mean_sd_over_seeds(per_run)
                if xs:
                    style.plot_mean_band(ax2, xs, mean, sd, f"_{label} δ{l + 1}", kwargs, alpha=0.12)
                    top = max(top, *(m + (d if math.isfinite(d) else 0) for m, d in zip(mean, sd)))
            for run, (xs, ys) in zip(s.runs, per_run):
                if run.status == "diverged" and xs:  # ends at its last finite epoch
                    finite = [i for i, y in enumerate(ys) if not math.isnan(y)]
                    if finite:
                        if s.is_seeds:
                            style.plot_seed_curve(ax2, xs, ys, kwargs)
                        style.mark_diverged(ax2, xs[finite[-1]], ys[finite[-1]])
    ax2.set_xlabel("epoch (0 = before training)")
    ax2.set_ylabel("angle($\\delta$, $\\delta_{BP}$) (degrees)")
    ax2.set_title("over training" + ("\nline: mean over seeds, band: ±1 sd" if several else ""))
    style.epoch_span(ax2, diverged_span(group))
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_ylim(0, max(105.0, ax2.get_ylim()[1] + 15, top + 15))
    from matplotlib.lines import Line2D

    layer_handles = [Line2D([], [], color="0.3", linestyle=styles[l % len(styles)],
                            label=f"$\\delta_{{{l + 1}}}$") for l in range(hidden)]
    ax2.legend(handles=layer_handles, frameon=False, fontsize=7, loc="upper right", ncol=hidden,
               title="line style = layer", title_fontsize=7)
    if several:  # long names: the rules' legend below the panels
        handles, texts = ax.get_legend_handles_labels()
        if any(r.status == "diverged" for s in rules if s.is_seeds for r in s.runs):
            handles.append(style.diverged_seed_handle())
            texts.append(style.DIVERGED_SEED_TEXT)
        fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(texts) if len(texts) <= 5 else -(-len(texts) // 2),
                   frameon=False, title=legend_title(rules), fontsize=7)
    else:
        ax.legend(frameon=False, title=legend_title(rules), ncol=2, fontsize=7, loc="upper right")
    fig.suptitle("angle between each rule's δ and backprop's δ on the same batch "
                 "(top layer: 0° for every rule; BP: 0°)\n" + (title or group_title(group)))
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    return make_per_training_group(runs, out_dir, NAME, draw)
