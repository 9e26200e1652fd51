"""A comparison of rules over seeds: ``comparison.json`` and ``comparison.md``.

``weightmirror compare --seeds 0,1,2,3,4`` trains every rule with every
seed (``OUT/<rule>/seed-<s>/``); this module reads those results folders back
and states, per run label (the rule, or ``--label``):

- how many seeds ran, how many diverged (and where);
- validation and test top-1 error, mean ± sd over the seeds that completed;
- per layer, angle(B, Wᵀ) mean ± sd, and the largest angle over the layers
  whose B carries an error (the input layer's never does: it is reported but
  left out of that largest angle);
- against the reference rule (BP): the mean difference of test error, the
  paired t-test over the seeds both have, and McNemar's exact test on the
  pooled per-example test predictions (``predictions.npz`` of each run).

Everything is computed from the saved folders only, so a comparison can be
re-made (or extended with more seeds) without retraining.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import results
from .stats import mcnemar, mean_sd, paired_t

__all__ = ["collect", "compare", "largest_used_angle", "format_markdown", "write", "COMPARISON_JSON", "COMPARISON_MD"]

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"


def collect(folders: Iterable[str | Path]) -> dict[str, list[results.Run]]:
    """Training runs under ``folders`` (searched a few levels down), by label, in seed order."""
    runs: list[results.Run] = []
    seen = set()
    for folder in folders:
        for path in _run_dirs(Path(folder)):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            run = results.load_run(path, strict=False)
            if run.kind == "train" and run.summary is not None:
                runs.append(run)
    groups: dict[str, list[results.Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    for label in groups:
        groups[label].sort(key=lambda r: (int(r.summary.get("seed", 0)), str(r.path)))
    return groups


def _run_dirs(folder: Path, depth: int = 0) -> list[Path]:
    if results.is_run_dir(folder):
        return [folder]
    if depth >= 4 or not folder.is_dir():
        return []
    out = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out += _run_dirs(child, depth + 1)
    return out


def _diverged(run: results.Run) -> bool:
    return (run.summary or {}).get("status") == "diverged"


def _predictions(run: results.Run):
    try:
        arrays = run.load_arrays(results.PREDICTIONS)
    except results.ResultsError:
        return None
    return np.asarray(arrays["test_pred"]), np.asarray(arrays["test_label"])


def largest_used_angle(summary: dict) -> float | None:
    """The largest angle(B, Wᵀ) of a run's summary over the layers whose B carries an error (None: no angle)."""
    angles = summary.get("angles_deg") or []
    used = summary.get("feedback_used") or [i > 0 for i in range(len(angles))]
    values = [a for a, u in zip(angles, used) if u and a is not None]
    return max(values) if values else None


def _stat(ms) -> dict:
    return {"n": ms.n, "mean": None if ms.n == 0 else ms.mean, "sd": None if ms.n < 2 else ms.sd}


def compare(groups: dict[str, list[results.Run]], reference: str = "bp") -> dict:
    """The comparison as a JSON-able dict (see the module docstring)."""
    ref_runs = {int(r.summary["seed"]): r for r in groups.get(reference, []) if not _diverged(r)}
    out = {"reference": reference if reference in groups else None, "runs": {}}
    for label, runs in groups.items():
        done = [r for r in runs if not _diverged(r)]
        first = runs[0].summary
        n_layers = len(first.get("angles_deg") or [])
        entry = {
            "rule": runs[0].rule,
            "data": first.get("data"),
            "model": first.get("model"),
            "epochs": first.get("epochs"),
            "seeds": [int(r.summary.get("seed", 0)) for r in runs],
            "n": len(runs),
            "n_completed": len(done),
            "diverged": [{"seed": int(r.summary.get("seed", 0)), "epoch": (r.summary.get("diverged") or {}).get("epoch")}
                         for r in runs if _diverged(r)],
            "val_top1_error": _stat(mean_sd([r.summary.get("val_top1_error") for r in done])),
            "test_top1_error": _stat(mean_sd([r.summary.get("test_top1_error") for r in done])),
            "feedback_used": first.get("feedback_used"),
            "angles_deg": [_stat(mean_sd([(r.summary.get("angles_deg") or [None] * n_layers)[i] for r in done]))
                           for i in range(n_layers)],
            "largest_angle_used_deg": _stat(mean_sd([largest_used_angle(r.summary) for r in done])),
        }
        if reference in groups and label != reference:
            mine = {int(r.summary["seed"]): r for r in done}
            shared = sorted(set(mine) & set(ref_runs))
            a = [mine[s].summary["test_top1_error"] for s in shared]
            b = [ref_runs[s].summary["test_top1_error"] for s in shared]
            t, p, n = paired_t(a, b)
            entry["vs_reference"] = {
                "seeds": shared,
                "test_diff_mean": float(np.mean(np.subtract(a, b))) if shared else None,
                "paired_t": None if math.isnan(t) else t,
                "paired_p": None if math.isnan(p) else p,
            }
            pairs = [(_predictions(mine[s]), _predictions(ref_runs[s])) for s in shared]
            if pairs and all(x is not None and y is not None for x, y in pairs):
                right_a = np.concatenate([x[0] == x[1] for x, _ in pairs])
                right_b = np.concatenate([y[0] == y[1] for _, y in pairs])
                m = mcnemar(right_a, right_b)
                entry["vs_reference"]["mcnemar"] = {"only_this_right": m.b, "only_reference_right": m.c,
                                                    "examples": m.n, "p": m.p}
            else:
                entry["vs_reference"]["mcnemar"] = None
        out["runs"][label] = entry
    return out


def _fmt(stat: dict, digits: int = 2) -> str:
    if not stat or stat["n"] == 0:
        return "–"
    if stat["sd"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def _p(value) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def format_markdown(comparison: dict) -> str:
    """The comparison as a Markdown table (one row per run label), with its notes."""
    ref = comparison.get("reference")
    lines = [
        f"| run | rule | seeds | val error (%) | test error (%) | Δ test vs {ref or 'BP'} | paired t p | "
        "McNemar p (pooled) | largest angle(B, Wᵀ), layers with error (°) | diverged |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, e in comparison["runs"].items():
        vs = e.get("vs_reference") or {}
        diff = vs.get("test_diff_mean")
        mc = vs.get("mcnemar")
        where = ", ".join(f"seed {d['seed']} at epoch {d['epoch']}" for d in e["diverged"])
        diverged = f"{len(e['diverged'])} of {e['n']}" + (f": {where}" if where else "")
        lines.append(
            f"| {label} | {e['rule']} | {e['n']} | {_fmt(e['val_top1_error'])} | {_fmt(e['test_top1_error'])} | "
            f"{'–' if diff is None else f'{diff:+.2f}'} | {_p(vs.get('paired_p'))} | "
            f"{_p(mc['p']) if mc else '–'} | {_fmt(e['largest_angle_used_deg'], 1)} | {diverged} |")
    lines += ["", "Errors: mean ± sd over the seeds that completed (sample sd). Paired t: test error against the "
              "reference over the seeds both completed, two-sided. McNemar: exact, on the final networks' test "
              "predictions pooled over those seeds. Largest angle: over the layers whose B carries an error "
              "(not the input layer's)."]
    return "\n".join(lines) + "\n"


def write(comparison: dict, folder: str | Path) -> list[Path]:
    """``comparison.json`` and ``comparison.md`` in ``folder`` (atomically)."""
    folder = Path(folder)
    results.write_json(folder / COMPARISON_JSON, comparison)
    results.atomic_write_text(folder / COMPARISON_MD, format_markdown(comparison))
    return [folder / COMPARISON_JSON, folder / COMPARISON_MD]
