"""Test error (%) against epoch for every run (and the training loss): the figure ``test_error``.

Input: training runs (``weightmirror train`` / ``compare``): ``metrics.jsonl``
keys ``epoch``, ``test_top1_error``, ``train_loss``; ``summary.json`` for the
rule, data set and model. One figure per group of comparable runs (same data
set, model and layer shapes).
"""
from __future__ import annotations

from pathlib import Path

from . import style
from .inputs import group_title, make_per_training_group, legend_title, rule_variants, run_labels

NAME = "test_error"
NEEDS = "training runs with metrics.jsonl (at least one trained epoch) and summary.json"


def draw(group, title: str | None = None):
    fig, (ax, ax2) = style.figure(1, 2, figsize=(8.2, 3.3))
    for run, label, variant in zip(group, run_labels(group), rule_variants(group)):
        kwargs = style.line_kwargs(run.rule, variant)
        xs, ys = run.series("test_top1_error")
        ax.plot(xs, ys, label=label, **kwargs)
        xs, ys = run.series("train_loss")
        ax2.plot(xs, ys, label=label, **kwargs)
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("test top-1 error (%)")
    ax.set_title("test top-1 error (log scale)")
    ax.set_yscale("log")
    style.log_percent_axis(ax.yaxis)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss (cross-entropy, epoch mean)")
    ax2.set_title("training loss")
    ax2.set_yscale("log")
    for a in (ax, ax2):
        a.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(title=legend_title(group), ncol=2, frameon=False)
    fig.suptitle(title or group_title(group))
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    return make_per_training_group(runs, out_dir, NAME, draw)
