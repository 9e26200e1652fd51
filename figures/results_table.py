"""The results table, ours beside the published numbers, as Markdown and LaTeX.

Input: finished training runs (``summary.json``: rule, data, model, epochs,
test_top1_error, angles_deg, delta_angles_deg, layer_shapes) and, where
present, circuit runs (``summary.json``). Writes ``results_table.md`` and
``results_table.tex``. Every block says whose numbers it holds: ours (data
set, model, epochs, from which folders) or published (source and setting).
A run that diverged (``summary.json`` ``status``) is a row whose cells say
``diverged at epoch E`` where its numbers would be.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from weightmirror import results

from . import style
from .inputs import SkipFigure, group_training_runs, legend_title, no_runs_reason, run_epochs, run_labels, usable

NAME = "results_table"
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
                    .replace("−", "$-$").replace("–", "--").replace("×", "$\\times$").replace("≈", "$\\approx$"))

        cols = "l" + "r" * (len(self.header) - 1)
        lines = ["\\begin{table}[ht]", "\\centering", "\\small",
                 f"\\caption{{{tex(self.title)}. {' '.join(tex(n) for n in self.notes)}}}",
                 "\\resizebox{\\linewidth}{!}{%", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
                 " & ".join(tex(h) for h in self.header) + " \\\\", "\\midrule"]
        lines += [" & ".join(tex(c) for c in r) + " \\\\" for r in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}}", "\\end{table}"]
        return "\n".join(lines) + "\n"


def training_table(group) -> Table:
    r0 = group[0]
    epochs = sorted({run_epochs(r) for r in group})
    n = r0.n_layers
    header = [legend_title(group), "ours: test top-1 error (%)", f"ours: angle(B, Wᵀ) per layer, 1–{n} (°)",
              f"ours: angle(δ, δ_BP) per layer, 1–{max(n - 1, 1)} (°)",
              "published: MNIST error (%) [Akrout]", "published: angle(B, Wᵀ) layer 1 / 2 (°) [Akrout]",
              "published: Fashion-MNIST error (%) [FA benchmark]"]
    rows = []
    for r, label in zip(group, run_labels(group)):
        s = r.summary
        ak = AKROUT.get(r.rule)
        failed = r.diverged_text()  # a diverged run has no final numbers
        rows.append([
            label,
            failed or _f(s.get("test_top1_error")),
            failed or _angles(s.get("angles_deg")),
            failed or _angles(s.get("delta_angles_deg"), skip_top=True),
            _f(ak[0]) if ak else DASH,
            _angles(ak[1]) if ak and ak[1] else ("0 (B = Wᵀ)" if r.rule == "bp" else DASH),
            _f(BENCH.get(r.rule, {}).get("Fashion-MNIST")),
        ])
    folders = sorted({str(r.path.parent) for r in group})
    notes = [
        f"Ours: {r0.data_description()}, {r0.model_description()}, {'/'.join(map(str, epochs))} epochs, "
        f"batch {(r0.config or {}).get('batch_size', '?')}, seed {r0.summary.get('seed', '?')}; "
        f"final epoch; from {', '.join(folders)}.",
        "Angles per weight layer, bottom-up; the top layer's δ is the same for every rule and is left out.",
        f"Published [Akrout]: {AKROUT_SOURCE}; {AKROUT_SETTING}.",
        f"Published [FA benchmark]: {BENCH_SOURCE}; {BENCH_SETTING}.",
        "Published numbers come from other data sets, models and schedules than ours: compare orderings "
        "and gaps, not values.",
    ]
    failed = [lab for r, lab in zip(group, run_labels(group)) if r.status == "diverged"]
    if failed:
        notes.insert(2, f"Diverged ({', '.join(failed)}): training stopped when the loss or the weights stopped "
                        "being finite (epoch counted from 1); such a run has no final numbers.")
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
