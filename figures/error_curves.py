"""Test error (%) against epoch for every run (and the training loss): the figure ``test_error``.

Input: training runs (``weightmirror train`` / ``compare``): ``metrics.jsonl``
keys ``epoch``, ``test_top1_error``, ``train_loss``; ``summary.json`` for the
rule, data set and model. One figure per group of comparable runs (same data
set, model and layer shapes). A run that diverged ends at its last finite
epoch in a red ✕, named ``<run>: diverged at epoch E`` in the legend.

Several seeds of one setting (``weightmirror compare --seeds``) are one curve
per panel: the mean over the seeds that reached each epoch with a ±1 sd band,
named ``WM (5 seeds)`` (``WM (5 seeds, 1 diverged at epoch 3)``: the seed's
own curve, thin, ends in a red ✕); such a figure has a third panel, the
validation error (``val_top1_error``), where the runs recorded one, and its
legend below the panels. On these log axes a band whose lower edge would
fall to 0 or below (sd ≥ mean) is cut at 1/20 of the mean. A group of single
runs is drawn as before.
"""
from __future__ import annotations

from pathlib import Path

from . import style
from .inputs import (diverged_label, diverged_span, group_title, legend_title, make_per_training_group,
                     mean_sd_over_seeds, rule_variants, run_labels, series_labels, series_variants,
                     training_series)

NAME = "test_error"
NEEDS = "training runs with metrics.jsonl (at least one trained epoch) and summary.json"


def draw(group, title: str | None = None):
    series = training_series(group)
    if any(s.is_seeds for s in series):
        return draw_seeds(group, series, title)
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
    _error_axis(ax, "test")
    _loss_axis(ax2)
    style.epoch_span(ax, diverged_span(group))
    style.epoch_span(ax2, diverged_span(group), first=1)
    for a in (ax, ax2):
        a.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(title=legend_title(group), ncol=2, frameon=False)
    fig.suptitle(title or group_title(group))
    fig.tight_layout()
    return fig


def _error_axis(ax, which: str) -> None:
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel(f"{which} top-1 error (%)")
    ax.set_title(f"{'test' if which == 'test' else 'validation'} top-1 error (log scale)")
    ax.set_yscale("log")
    style.log_percent_axis(ax.yaxis)


def _loss_axis(ax) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy, epoch mean)")
    ax.set_title("training loss")
    ax.set_yscale("log")


def draw_seeds(group, series, title: str | None = None):
    """Several seeds of a setting: mean ± 1 sd per series, and a validation panel where the runs have one."""
    keys = ["test_top1_error"]
    if any(r.series("val_top1_error")[0] for r in group):
        keys.append("val_top1_error")
    keys.append("train_loss")
    fig, axes = style.figure(1, len(keys), figsize=(3.9 * len(keys), 3.5), squeeze=False)
    axes = list(axes[0])
    order: list[str] = []
    handles: dict[str, object] = {}
    for s, label, variant in zip(series, series_labels(series), series_variants(series)):
        kwargs = style.line_kwargs(s.rule, variant)
        for k, (ax, key) in enumerate(zip(axes, keys)):
            if not s.is_seeds:
                run = s.run
                xs, ys = run.series(key)
                line = ax.plot(xs, ys, label=label, **kwargs)[0]
                if k == 0:
                    order.append(label)
                    handles[label] = line
                if run.status == "diverged" and xs:
                    text = diverged_label(label, run)
                    mark = style.mark_diverged(ax, xs[-1], ys[-1], text if k == 0 else None)
                    if k == 0:
                        order.append(text)
                        handles[text] = mark
                continue
            per_run = [r.series(key) for r in s.runs]
            xs, mean, sd, _ = mean_sd_over_seeds(per_run)
            if not xs:
                continue
            line, band = style.plot_mean_band(ax, xs, mean, sd, label, kwargs, positive=True)
            if label not in handles:
                order.append(label)
                handles[label] = style.seed_handle(line, band)
            for r, (rx, ry) in zip(s.runs, per_run):
                if r.status == "diverged" and rx:  # its own curve, ending where it diverged
                    style.plot_seed_curve(ax, rx, ry, kwargs)
                    style.mark_diverged(ax, rx[-1], ry[-1])
                    handles.setdefault(style.DIVERGED_SEED_TEXT, style.diverged_seed_handle())
    if style.DIVERGED_SEED_TEXT in handles:
        order.append(style.DIVERGED_SEED_TEXT)
    for ax, key in zip(axes, keys):
        if key == "train_loss":
            _loss_axis(ax)
            style.epoch_span(ax, diverged_span(group), first=1)
        else:
            _error_axis(ax, "test" if key == "test_top1_error" else "validation")
            style.epoch_span(ax, diverged_span(group))
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend([handles[t] for t in order], order, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=len(order) if len(order) <= 5 else -(-len(order) // 2), frameon=False,
               title=legend_title(series) + " — line: mean over seeds, band: ±1 sd")
    fig.suptitle(title or group_title(group))
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    return make_per_training_group(runs, out_dir, NAME, draw)
