"""The mirror phase in circuit mode: angle(B, Wᵀ) per layer against simulated time.

Input: a ``weightmirror circuit`` run with a mirror phase (schedule
``mirror`` or ``alternate``): ``metrics.jsonl`` keys ``t`` (simulated
seconds), ``phase``, ``angles_deg`` (per weight layer) and, where the run
wrote it, ``predicted_angles_deg`` (the rate-mode weight mirror on the same
initial weights and number of noise samples), drawn dashed, and for a spiking
mirror ``noise_aware_angles_deg`` (the closed form with the spike noise), drawn
dotted, with ``noise_aware_band_deg`` (the 10-90 % range of the angle that the same
closed form expects over realisations) as a grey band, and where a pilot ran
(``mirror_pilot``) ``pilot_angles_deg``, the prediction from the moments the
pilot measured in the circuit, as a wide pale line. Engaged blocks of an
alternating schedule are shaded.
"""
from __future__ import annotations

import math
from pathlib import Path

from . import style
from .inputs import SkipFigure, no_runs_reason, own_label, unique_names, usable

NAME = "mirror_phase"
NEEDS = "a circuit run with a mirror phase (metrics.jsonl with t, angles_deg; summary.json)"


def segments(run) -> list[tuple[str, float, float]]:
    """``(phase, start, stop)`` blocks of the run, from its declaration (else from its rows)."""
    phases = (run.config or {}).get("phases")
    if phases:
        try:
            from weightmirror.circuits.spec import Phases  # the declaration's own schedule (no Brian2 import)

            return Phases(**phases).segments()
        except Exception:  # an older or foreign config: fall back on the rows
            pass
    out, t0 = [], 0.0
    for row in run.metrics or []:
        if row.get("phase") in (None, "initial"):
            continue
        if out and out[-1][0] == row["phase"]:
            out[-1] = (row["phase"], out[-1][1], row["t"])
        else:
            out.append((row["phase"], t0, row["t"]))
        t0 = row["t"]
    return out


def shade_phases(ax, segs, legend: bool = False) -> None:
    kinds = {p for p, _, _ in segs}
    if len(kinds) < 2:
        return
    done = set()
    for phase, a, b in segs:
        color = style.MIRROR_SHADE if phase == "mirror" else style.ENGAGED_SHADE
        ax.axvspan(a, b, color=color, alpha=0.6, zorder=0, linewidth=0,
                   label=f"{phase} mode" if legend and phase not in done else None)
        done.add(phase)


def draw(run):
    rows = [r for r in run.metrics if r.get("angles_deg")]
    n = max(len(r["angles_deg"]) for r in rows)
    t = [r["t"] for r in rows]
    fig, axes = style.figure(1, n, figsize=(3.1 * n + 0.4, 3.0), squeeze=False)
    axes = axes[0]
    segs = segments(run)
    color = style.rule_color(run.rule)
    has_pred = any(r.get("predicted_angles_deg") for r in rows)
    for l, ax in enumerate(axes):
        shade_phases(ax, segs, legend=(l == 0))
        ys = [r["angles_deg"][l] if l < len(r["angles_deg"]) and r["angles_deg"][l] is not None else math.nan
              for r in rows]
        ax.plot(t, ys, color=color, marker="o", markersize=3,
                label=f"circuit ({run.neuron} neurons, Brian2)")
        for key, style_kw in (("predicted_angles_deg", dict(color="black", linestyle="--", linewidth=1.2,
                                                             label="rate-mode prediction")),
                              ("noise_aware_angles_deg", dict(color="0.4", linestyle=":", linewidth=1.6,
                                                              label="prediction with the spike noise")),
                              ("pilot_angles_deg", dict(color=color, alpha=0.45, linewidth=3.0,
                                                        label="prediction from a pilot's moments"))):
            pts = [(r["t"], r[key][l]) for r in rows
                   if r.get(key) and l < len(r[key]) and r[key][l] is not None]
            if pts:
                ax.plot(*zip(*pts), **style_kw)
        band = [(r["t"], *r["noise_aware_band_deg"][l]) for r in rows
                if r.get("noise_aware_band_deg") and l < len(r["noise_aware_band_deg"])
                and r["noise_aware_band_deg"][l] is not None and None not in r["noise_aware_band_deg"][l]]
        if band:
            bt, blo, bhi = zip(*band)
            ax.fill_between(bt, blo, bhi, color="0.4", alpha=0.2, linewidth=0,
                            label="its 10–90 % band over realisations")
        ax.set_title(f"layer {l + 1}  ($B_{{{l + 1}}}$ vs $W_{{{l + 1}}}^T$)")
        ax.set_xlabel("simulated time (s)")
        if l == 0:
            ax.set_ylabel("angle($B$, $W^T$) (degrees)")
        ax.set_xlim(0, max(t) if t else 1)
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(0.0, lo), hi)
    axes[0].legend(frameon=False, fontsize=7, loc="best")
    layers = (run.summary or {}).get("layers") or (run.config or {}).get("layers") or []
    what = {"mirror": "mirror phase", "alternate": "alternating mirror and engaged modes"}.get(run.schedule,
                                                                                              run.schedule)
    note = "" if has_pred else " (no rate-mode prediction in this run)"
    name = f"run {own_label(run)}, " if own_label(run) else ""
    fig.suptitle(f"{what} in circuit mode{note}\n{name}rule {run.rule} ({style.rule_display_name(run.rule)}), "
                 f"{run.neuron} neurons, layers {'-'.join(map(str, layers))}, from {run.path.name}/")
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    ok, why = usable(runs, "circuit", "intervals", "summary")
    if not ok:
        raise SkipFigure(no_runs_reason("circuit", why, ""))
    chosen, skipped = [], {}
    for run in ok:
        if any(p == "mirror" for p, _, _ in segments(run)) or any(r.get("phase") == "mirror" for r in run.metrics):
            chosen.append(run)
        else:
            skipped[f"{NAME} ({run.path})"] = f"no mirror phase in this run (schedule {run.schedule})"
    if not chosen:
        raise SkipFigure("no circuit run with a mirror phase: " + "; ".join(
            f"{k[len(NAME) + 2:-1]}: {v}" for k, v in skipped.items()))
    made = []
    for run, name in zip(chosen, unique_names(NAME, chosen)):
        made += style.save(draw(run), out_dir, name)
    return {"made": made, "skipped": skipped, "ignored": why}
