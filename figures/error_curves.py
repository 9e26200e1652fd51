"""Test error (%) against epoch for every run (and the training loss): the figure ``test_error``.

Input: training runs (``weightmirror train`` / ``compare``): ``metrics.jsonl``
keys ``epoch``, ``test_top1_error``, ``train_loss``; ``summary.json`` for the
rule, data set and model. One figure per group of comparable runs (same data
set, model and layer shapes). A run that diverged ends at its last finite
epoch in a red ✕, named ``<run>: diverged at epoch E`` in the legend.
"""
from __future__ import annotations

from pathlib import Path

from . import style
from .inputs import (diverged_label, diverged_span, group_title, legend_title, make_per_training_group,
                     rule_variants, run_labels)

NAME = "test_error"
NEEDS = "training runs with metrics.jsonl (at least one trained epoch) and summary.json"


def draw(group, title: str | None = None):
    fig, (ax, ax2) = style.figure(1, 2, figsize=(8.2, 3.3))
    for run, label, variant in zip(group, run_labels(group), rule_variants(group)):
        kwargs = style.line_kwargs(run.rule, variant)
        diverged = run.status == "diverged"
        xs, ys = run.series("test_top1_error")
        ax.plot(xs, ys, label=label, **kwargs)
        if diverged and xs:
            style.mark_diverged(ax, xs[-1], ys[-1], diverged_label(label, run))
        xs, ys = run.series("train_loss")
        ax2.plot(xs, ys, label=label, **kwargs)
        if diverged and xs:
            style.mark_diverged(ax2, xs[-1], ys[-1])
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("test top-1 error (%)")
    ax.set_title("test top-1 error (log scale)")
    ax.set_yscale("log")
    style.log_percent_axis(ax.yaxis)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss (cross-entropy, epoch mean)")
    ax2.set_title("training loss")
    ax2.set_yscale("log")
    style.epoch_span(ax, diverged_span(group))
    style.epoch_span(ax2, diverged_span(group), first=1)
    for a in (ax, ax2):
        a.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(title=legend_title(group), ncol=2, frameon=False)
    fig.suptitle(title or group_title(group))
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    return make_per_training_group(runs, out_dir, NAME, draw)
