"""The results table, ours beside the published numbers, as Markdown and LaTeX.

Input: finished training runs (``summary.json``: rule, data, model, epochs,
test_top1_error, angles_deg, delta_angles_deg, layer_shapes) and, where
present, circuit runs (``summary.json``). Writes ``results_table.md`` and
``results_table.tex``. Every block says whose numbers it holds: ours (data
set, model, epochs, from which folders) or published (source and setting).
A run that diverged (``summary.json`` ``status``) is a row whose cells say
``diverged at epoch E`` where its numbers would be.

Several seeds of one setting (``weightmirror compare --seeds``: same label and
configuration but the seed) are one row: its cells are the mean ± sd over the
seeds that completed, a column ``seeds (n)`` gives their number and how many
diverged (``4 (1 of 5 diverged at epoch 3)``), and where a ``comparison.json``
lies above the run folders (written by that command) a column ``paired p vs
BP`` holds its paired t-test p-value (read, never recomputed; without the file
there is no such column). The angle(B, Wᵀ) header marks with ``*`` the layer
whose B carries no error (the input layer; ``feedback_used``), explained in a
note.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from weightmirror import results

from . import style
from .inputs import (MAX_DEPTH, Series, SkipFigure, group_training_runs, legend_title, mean_sd, no_runs_reason,
                     run_epochs, run_labels, run_seed, training_series, unused_layers, usable, wm_leaves_input_layer)

NAME = "results_table"
#: the statistics ``weightmirror compare --seeds`` writes beside its run folders (read, never recomputed)
COMPARISON_JSON = "comparison.json"
NEEDS = "finished training runs (summary.json)"

# ---------------------------------------------------------------------------
# published numbers (as given in the project's MISSION.md)
# ---------------------------------------------------------------------------
AKROUT_SOURCE = ("Akrout, Wilson, Humphreys, Lillicrap & Tweed, \"Deep Learning without Weight Transport\", "
                 "NeurIPS 2019 (arXiv 1904.05391): the authors' reference code, logged final results")
AKROUT_SETTING = ("NumPy sigmoid MLP, batch 128, plain SGD, 400 epochs; published as test accuracy, "
                  "shown here as error = 100 − accuracy; angles per layer in the order logged "
                  "(read as layer 1 / layer 2)")
#: rule -> (MNIST test error %, angles per layer or None, CIFAR-10 fully-connected test error %)
AKROUT = {
    "bp": (100 - 98.5, None, 100 - 48.18),
    "fa": (100 - 97.8, (89.8, 40.0), 100 - 42.96),
    "wm": (100 - 98.49, (12.8, 3.8), 100 - 46.2),
    "kp": (100 - 98.45, (20.0, 3.6), 100 - 47.57),
}
BENCH_SOURCE = ("benchmark of FA-family rules in PyTorch (no WM, no KP), numbers as quoted in the project's "
                "MISSION.md; presumably Sanfiz & Akrout 2021, BioTorch, arXiv 2108.13446 (attribution not "
                "checked against the paper)")
BENCH_SETTING = "top-1 test error (%); their architectures and training schedules"
#: rule -> {setting: top-1 error %}
BENCH = {
    "bp": {"Fashion-MNIST": 9.20, "CIFAR-10 ResNet-20": 8.63, "ImageNet ResNet-18": 30.39},
    "fa": {"Fashion-MNIST": 13.06, "CIFAR-10 ResNet-20": 32.16, "ImageNet ResNet-18": 85.25},
    "dfa": {"Fashion-MNIST": 12.81},
    "usf": {"Fashion-MNIST": 9.69, "CIFAR-10 ResNet-20": 10.05, "ImageNet ResNet-18": 34.97},
    "brsf": {"Fashion-MNIST": 10.02},
    "frsf": {"Fashion-MNIST": 9.61},
}
BENCH_COLUMNS = ("Fashion-MNIST", "CIFAR-10 ResNet-20", "ImageNet ResNet-18")
DASH = "–"


def _f(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    return f"{float(v):.{digits}f}"


def _angles(values, skip_top=False) -> str:
    if not values:
        return DASH
    vals = list(values)[:-1] if skip_top and len(values) > 1 else list(values)
    return " / ".join(_f(v, 1) for v in vals)


def _label(rule: str) -> str:
    return {"dfa": "DFA"}.get(rule, style.rule_label(rule))


class Table:
    def __init__(self, title: str, notes: list[str], header: list[str], rows: list[list[str]]):
        self.title, self.notes, self.header, self.rows = title, notes, header, rows

    def markdown(self) -> str:
        out = [f"### {self.title}", ""]
        out += [f"{n}  " for n in self.notes]
        out += ["", "| " + " | ".join(self.header) + " |",
                "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.header))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out) + "\n"

    def latex(self) -> str:
        def tex(s: str) -> str:
            s = s.replace("δ_BP", "\x00")
            s = (s.replace("\\", "\\textbackslash{}").replace("{", "\\{").replace("}", "\\}")
                 .replace("&", "\\&").replace("%", "\\%").replace("_", "\\_").replace("#", "\\#")
                 .replace("$", "\\$").replace("~", "\\textasciitilde{}"))
            s = re.sub(r'"([^"]*)"', r"``\1''", s)
            s = s.replace("\x00", "$\\delta_{\\mathrm{BP}}$")
            return (s.replace("°", "$^\\circ$").replace("ᵀ", "$^T$").replace("δ", "$\\delta$")
                    .replace("−", "$-$").replace("–", "--").replace("×", "$\\times$").replace("≈", "$\\approx$")
                    .replace("±", "$\\pm$").replace("<", "$<$").replace(">", "$>$"))

        cols = "l" + "r" * (len(self.header) - 1)
        lines = ["\\begin{table}[ht]", "\\centering", "\\small",
                 f"\\caption{{{tex(self.title)}. {' '.join(tex(n) for n in self.notes)}}}",
                 "\\resizebox{\\linewidth}{!}{%", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
                 " & ".join(tex(h) for h in self.header) + " \\\\", "\\midrule"]
        lines += [" & ".join(tex(c) for c in r) + " \\\\" for r in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}}", "\\end{table}"]
        return "\n".join(lines) + "\n"


def _msd(values, digits=2) -> str:
    """Mean ± sample sd of the finite values (``12.34 ± 0.56``; one value: ``12.34``; none: –)."""
    n, m, sd = mean_sd(values)
    if n == 0:
        return DASH
    return _f(m, digits) if n == 1 or not math.isfinite(sd) else f"{m:.{digits}f} ± {sd:.{digits}f}"


def _angles_msd(runs, key: str, skip_top: bool = False) -> str:
    """Per layer, mean ± sd over ``runs`` of the per-layer list ``key`` of their summaries."""
    lists = [list(r.summary.get(key) or []) for r in runs]
    n = max((len(v) for v in lists), default=0)
    if n == 0:
        return DASH
    layers = range(n - 1 if skip_top and n > 1 else n)
    return " / ".join(_msd([(v[l] if l < len(v) else None) for v in lists], 1) for l in layers)


def _p(value) -> str:
    """A p-value as ``comparison.md`` writes it."""
    if value is None:
        return DASH
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _comparison_entry(s: Series) -> tuple[dict, Path] | None:
    """The entry of ``comparison.json`` (``weightmirror compare --seeds``) for the seeds of ``s``, and the file.

    Looked for in the folders above the series' runs (``OUT/<rule>/seed-<s>/``
    -> ``OUT/comparison.json``); an entry counts only if it names the same
    label, rule, data, model, epochs and seeds, and as many completed seeds
    (a stale file is not used).
    Nothing is recomputed: the statistics are the file's.
    """
    if not s.is_seeds or s.path is None:
        return None
    seeds = s.seeds
    folder = Path(s.path)
    for _ in range(MAX_DEPTH):
        path = folder / COMPARISON_JSON
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                entry = data["runs"][s.label]
            except (OSError, ValueError, KeyError, TypeError):
                entry = None
            r = s.run
            if isinstance(entry, dict) and entry.get("rule") == s.rule and entry.get("seeds") == seeds \
                    and entry.get("n_completed") in (None, len(s.completed)) \
                    and entry.get("data") == r.data and entry.get("model") == r.model \
                    and entry.get("epochs") in (None, (r.config or {}).get("epochs"), r.summary.get("epochs")):
                return {**entry, "_reference": data.get("reference")}, path
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def _seeds_cell(s: Series) -> str:
    done = len(s.completed)
    if not s.is_seeds:
        return "1"
    if done == len(s.runs):
        return str(done)
    return f"{done} ({s.diverged_text()})"


def _layers_header(n: int, unused: set[int]) -> str:
    mark = [f"{l + 1}{'*' if l in unused else ''}" for l in range(n)]
    if n <= 8:
        return " / ".join(mark)
    return f"{mark[0]}–{mark[-1]}"


def training_table(group) -> Table:
    r0 = group[0]
    epochs = sorted({run_epochs(r) for r in group})
    n = r0.n_layers
    series = training_series(group)
    labels = run_labels(series)  # the seed count has a column of its own
    several = any(s.is_seeds for s in series)
    unused = set(unused_layers(group))
    entries = [_comparison_entry(s) for s in series]
    with_p = any(e is not None and e[0].get("_reference") == "bp" for e in entries)
    angle_header = (f"ours: angle(B, Wᵀ) per layer {_layers_header(n, unused)} (°)" if unused
                    else f"ours: angle(B, Wᵀ) per layer, 1–{n} (°)")
    header = [legend_title(series)]
    if several:
        header.append("ours: seeds (n)")
    header.append("ours: test top-1 error (%)")
    if with_p:
        header.append("paired p vs BP")
    header += [angle_header, f"ours: angle(δ, δ_BP) per layer, 1–{max(n - 1, 1)} (°)",
               "published: MNIST error (%) [Akrout]", "published: angle(B, Wᵀ) layer 1 / 2 (°) [Akrout]",
               "published: Fashion-MNIST error (%) [FA benchmark]"]
    rows = []
    for s, label, entry in zip(series, labels, entries):
        ak = AKROUT.get(s.rule)
        row = [label]
        if several:
            row.append(_seeds_cell(s))
        if not s.is_seeds:
            r = s.run
            summary = r.summary
            failed = r.diverged_text()  # a diverged run has no final numbers
            row.append(failed or _f(summary.get("test_top1_error")))
            ours = [failed or _angles(summary.get("angles_deg")),
                    failed or _angles(summary.get("delta_angles_deg"), skip_top=True)]
        else:  # mean ± sd over the seeds that completed
            done = s.completed
            failed = None if done else f"all {len(s.runs)} diverged"
            row.append(failed or _msd([r.summary.get("test_top1_error") for r in done]))
            ours = [failed or _angles_msd(done, "angles_deg"),
                    failed or _angles_msd(done, "delta_angles_deg", skip_top=True)]
        if with_p:
            if s.rule == "bp" and s.is_seeds and entry is not None:
                row.append("reference")
            else:
                vs = (entry[0].get("vs_reference") or {}) if entry is not None else {}
                row.append(_p(vs.get("paired_p")))
        row += ours + [
            _f(ak[0]) if ak else DASH,
            _angles(ak[1]) if ak and ak[1] else ("0 (B = Wᵀ)" if s.rule == "bp" else DASH),
            _f(BENCH.get(s.rule, {}).get("Fashion-MNIST")),
        ]
        rows.append(row)
    folders = sorted({str(Path(s.path).parent) if s.path is not None else "memory" for s in series})
    if several:
        seeds = sorted({x for s in series for x in s.seeds if x is not None})
        seed_text = (f"seeds {', '.join(map(str, seeds))}; per row, mean ± sd over the seeds that completed "
                     "(sample sd, n − 1; n in the column seeds)")
    else:
        seed_text = f"seed {r0.summary.get('seed', '?')}"
    notes = [
        f"Ours: {r0.data_description()}, {r0.model_description()}, {'/'.join(map(str, epochs))} epochs, "
        f"batch {'/'.join(sorted({str((r.config or {}).get('batch_size', '?')) for r in group}))}, {seed_text}; "
        f"final epoch; from {', '.join(folders)}.",
        "Angles per weight layer, bottom-up; the top layer's δ is the same for every rule and is left out.",
        f"Published [Akrout]: {AKROUT_SOURCE}; {AKROUT_SETTING}.",
        f"Published [FA benchmark]: {BENCH_SOURCE}; {BENCH_SETTING}.",
        "Published numbers come from other data sets, models and schedules than ours: compare orderings "
        "and gaps, not values.",
    ]
    if unused:
        which = ", ".join(f"{l + 1}*" for l in sorted(unused))
        wm = " (not learnt by WM)" if wm_leaves_input_layer(group) else ""
        notes.insert(2, f"Layer {which}: the input layer's B carries no error (nothing below it needs one); "
                        f"its angle is shown for reference{wm} and plays no part in learning.")
    if with_p:
        files = sorted({str(e[1]) for e in entries if e is not None})
        notes.insert(2, f"Paired p vs BP: from {', '.join(files)} (weightmirror compare --seeds), not recomputed "
                        "here: two-sided paired t-test of the test error against BP over the seeds both "
                        "completed.")
    failed = [(s, lab) for s, lab in zip(series, labels) if s.diverged_runs]
    if failed:
        what = []
        for s, lab in failed:
            if s.is_seeds:
                seeds = ", ".join(f"seed {run_seed(r)} at epoch {(r.diverged or {}).get('epoch', '?')}"
                                  for r in s.diverged_runs)
                what.append(f"{lab}: {len(s.diverged_runs)} of {len(s.runs)}, {seeds}")
            else:
                what.append(lab)
        notes.insert(2, f"Diverged ({'; '.join(what)}): training stopped when the loss or the weights stopped "
                        "being finite (epoch counted from 1); such a run has no final numbers"
                        + (" and is left out of the mean ± sd." if several else "."))
    title = f"Ours ({r0.data_description()}, {r0.model_description()}) beside the published numbers"
    return Table(title, notes, header, rows)


def published_table() -> Table:
    rules = [r for r in ("bp", "fa", "dfa", "usf", "brsf", "frsf", "wm", "kp")]
    header = ["rule", "MNIST error (%) [Akrout]", "angle(B, Wᵀ) layer 1 / 2 (°) [Akrout]",
              "CIFAR-10 FC error (%) [Akrout]"] + [f"{c} error (%) [FA benchmark]" for c in BENCH_COLUMNS]
    rows = []
    for rule in rules:
        ak = AKROUT.get(rule)
        b = BENCH.get(rule, {})
        rows.append([_label(rule), _f(ak[0]) if ak else DASH,
                     (_angles(ak[1]) if ak[1] else ("0 (B = Wᵀ)" if rule == "bp" else DASH)) if ak else DASH,
                     _f(ak[2]) if ak else DASH] + [_f(b.get(c)) for c in BENCH_COLUMNS])
    notes = [f"[Akrout]: {AKROUT_SOURCE}; {AKROUT_SETTING}; CIFAR-10 with a fully connected network.",
             f"[FA benchmark]: {BENCH_SOURCE}; {BENCH_SETTING}.",
             "The paper's own ImageNet result (not tabulated here): FA fails (top-1 error near 90 %), "
             "SS several points worse than BP, WM and KP nearly match BP (ResNet-18 BP ≈ 30 %).",
             "All numbers in this table are published, none are ours; – = not reported."]
    return Table("Published numbers (not ours)", notes, header, rows)


def circuit_table(runs) -> Table | None:
    rows = []
    for r, label in zip(runs, run_labels(runs)):
        s = r.summary
        layers = "-".join(map(str, s.get("layers", [])))
        rows.append([label, s.get("neuron", "?"), layers, s.get("schedule", r.schedule),
                     _f(s.get("simulated_seconds"), 3), _angles(s.get("initial_angles_deg")),
                     _angles(s.get("angles_deg")), _angles(s.get("predicted_angles_deg")),
                     _f(s.get("test_top1_error"))])
    if not rows:
        return None
    header = [legend_title(runs), "neurons", "layers", "phases", "simulated (s)", "angle(B, Wᵀ) at start (°)",
              "angle(B, Wᵀ) at end (°)", "rate-mode prediction (°)", "test error (%)"]
    notes = ["Ours, circuit mode (Brian2): " + ", ".join(sorted({str(r.path) for r in runs})) + ".",
             "Angles per weight layer, bottom-up; test error only after engaged learning."]
    return Table("Ours, circuit mode", notes, header, rows)


def make(runs, out_dir: Path) -> dict:
    ok, why = usable(runs, "train", "summary")
    ok = [r for r in ok if r.summary.get("test_top1_error") is not None or r.status == "diverged"]
    if not ok:
        raise SkipFigure(no_runs_reason("train", why, ""))
    circuits, cwhy = usable(runs, "circuit", "summary")
    tables = [training_table(g) for g in group_training_runs(ok)]
    ct = circuit_table(circuits)
    if ct:
        tables.append(ct)
    tables.append(published_table())
    md = ["# Results beside the published numbers", "",
          "Generated by `weightmirror figures` from saved results; each block says whose numbers it holds.", ""]
    md += [t.markdown() for t in tables]
    tex = ["% Generated by `weightmirror figures` (needs \\usepackage{booktabs} and \\usepackage{graphicx}).", ""]
    tex += [t.latex() for t in tables]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results_table.md", out / "results_table.tex"]
    results.atomic_write_text(paths[0], "\n".join(md))
    results.atomic_write_text(paths[1], "\n".join(tex))
    return {"made": paths, "ignored": {**why, **cwhy}}
