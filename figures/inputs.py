"""Finding and reading results folders for the figures (never training, never simulating).

A results folder is recognised by the files ``weightmirror train``,
``weightmirror compare`` (one folder per rule) and ``weightmirror circuit``
write: ``summary.json``, ``metrics.jsonl``, ``config.toml``. A path given by
the user is either such a folder or a folder of them (searched a few levels
down). Each folder is read into a :class:`weightmirror.results.Run`
(``results.load_run(path, strict=False)``); what is figure-specific about a
run (what it lacks for a figure, how figures and tables name it) is here, as
functions of the run.

Only :mod:`weightmirror.results`, :mod:`weightmirror.errors`, the pure
:mod:`weightmirror.circuits.rules`, the figures' own modules and the standard
library are imported here.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from weightmirror import results
from weightmirror.circuits import rules  # pure: names the rules, no backend
from weightmirror.results import Run

from ..errors import InputError

MAX_DEPTH = 4


class FigureInputError(InputError):
    """A results path given to the figures is not there or holds no results."""


class SkipFigure(Exception):
    """The inputs do not allow this figure; the message says why."""


# ---------------------------------------------------------------------------
# what a run lacks for a figure
# ---------------------------------------------------------------------------
def _file(run: Run, name: str) -> str:
    return str(run.path / name) if run.path is not None else f"{name} (of a run in memory)"


def missing(run: Run, *needs: str) -> str | None:
    """Why ``run`` cannot serve a figure that needs ``needs``, or None.

    needs: ``config``, ``metrics``, ``summary``, ``trained`` (a training run
    with at least one epoch after epoch 0, or one that diverged: it is drawn
    up to its last finite epoch, epoch 0 at least), ``intervals`` (a circuit
    run with at least one simulated interval), ``spikes``.
    """
    why = []
    for need in needs:
        if need in ("config", "metrics", "summary"):
            if need in run.problems:
                why.append(run.problems[need])
        elif need == "trained":
            if "metrics" in run.problems:
                why.append(run.problems["metrics"])
            elif not run.epochs_trained() and not (run.metrics and run.status == "diverged"):
                why.append(f"{_file(run, results.METRICS)}: no trained epoch "
                           f"({'empty' if not run.metrics else 'only epoch 0, the state before training'})")
        elif need == "intervals":
            if "metrics" in run.problems:
                why.append(run.problems["metrics"])
            elif not run.metrics or len(run.metrics) < 2:
                why.append(f"{_file(run, results.METRICS)}: no simulated interval "
                           f"({len(run.metrics or [])} row(s))")
        elif need == "spikes":
            if "spikes" not in run.arrays and (run.spikes_path is None or not run.spikes_path.is_file()):
                why.append(f"{_file(run, 'spikes.npz')}: missing (spikes are written by spiking runs only)")
        else:  # pragma: no cover - programming error
            raise ValueError(need)
    # the same text can come from two needs
    return "; ".join(dict.fromkeys(why)) or None


# ---------------------------------------------------------------------------
# how figures name a run
# ---------------------------------------------------------------------------
def tag(run: Run) -> str:
    """A short name for file names: the rule (circuit runs: rule-neuron-schedule)."""
    if run.kind == "circuit":
        return f"{run.rule}-{run.neuron}-{run.schedule}"
    return f"{run.rule}"


def own_label(run: Run) -> str | None:
    """The label the run was given (``--label``), or None where it is just its rule.

    A label that is a rule name standing for the run's rule (``ss`` on a run
    whose rule is recorded as ``usf``) is the rule too.
    """
    label = run.label
    if label in (run.rule, "", "?"):
        return None
    try:
        if rules.make_rule(label).key == run.rule:
            return None
    except rules.RuleError:
        pass
    return label


def run_label(run: Run) -> str:
    """The run in a legend or a table row: its own label, else its rule's (``WM``, ``uSF`` ...)."""
    from .style import rule_label

    return own_label(run) or rule_label(run.rule)


def _where(run: Run, parts: int) -> str:
    if run.path is None:
        return ""
    return "/".join(Path(run.path).parts[-parts:])


def run_labels(runs: Iterable[Run]) -> list[str]:
    """:func:`run_label` of each run, made distinct within ``runs``.

    Runs that would share a text get their results folder appended, as many
    trailing path parts as it takes to tell them apart (``WM (a/wm)``,
    ``WM (b/wm)``); what still clashes is numbered.
    """
    runs = list(runs)
    labels = [run_label(r) for r in runs]
    for text, n in Counter(labels).items():
        if n < 2:
            continue
        idx = [i for i, lab in enumerate(labels) if lab == text]
        depth = max((len(Path(runs[i].path).parts) for i in idx if runs[i].path is not None), default=0)
        for parts in range(1, depth + 1):
            where = [_where(runs[i], parts) for i in idx]
            if len(set(where)) == len(where):
                break
        for i, w in zip(idx, where if depth else [""] * len(idx)):
            if w:
                labels[i] = f"{text} ({w})"
    count: Counter = Counter()
    seen = Counter(labels)
    for i, lab in enumerate(labels):
        if seen[lab] > 1:
            count[lab] += 1
            labels[i] = f"{lab} #{count[lab]}"
    return labels


def legend_title(runs: Iterable[Run]) -> str:
    """``rule`` while every run is named by its rule alone, else ``run``."""
    runs = list(runs)
    plain = [run_label(r) for r in runs]
    return "rule" if plain == run_labels(runs) and not any(own_label(r) for r in runs) else "run"


def rule_variants(runs: Iterable[Run]) -> list[int]:
    """For each run, how many runs of the same rule come before it (0, 1, ...): its line variant."""
    count: Counter = Counter()
    out = []
    for r in runs:
        out.append(count[r.rule])
        count[r.rule] += 1
    return out


# ---------------------------------------------------------------------------
# several seeds of one configuration: one curve, one table row
# ---------------------------------------------------------------------------
def run_seed(run: Run) -> int | None:
    """The run's seed (``summary.json``, else ``config.toml``), or None."""
    for src in (run.summary, run.config):
        if src and isinstance(src.get("seed"), int) and not isinstance(src.get("seed"), bool):
            return int(src["seed"])
    return None


#: the config sections that hold one rule's parameters (``config.toml`` of a training run);
#: the sign-symmetry variants share ``ss``
_RULE_SECTIONS = {"bp": "bp", "wm": "wm", "kp": "kp", "usf": "ss", "brsf": "ss", "frsf": "ss"}


def _config_but_seed(run: Run) -> str | None:
    """The run's configuration but its seed, as a comparable text (None without a config).

    The sections of rules the run does not use are left out: a KP run's
    ``[wm]`` section changes nothing it computes (and a default added to it
    by a later release must not split one setting's seeds). So are top-level
    keys that say "not set" (an empty string, e.g. ``init_from = ""`` written
    by a later release than a seed whose config lacks the key).
    """
    if not run.config:
        return None
    own = _RULE_SECTIONS.get(run.rule)
    unused = set(_RULE_SECTIONS.values()) - {own}
    return json.dumps({k: v for k, v in run.config.items() if k != "seed" and k not in unused and v != ""},
                      sort_keys=True, default=str)


class Series:
    """What a figure draws as one curve and a table shows as one row: one run, or the seeds of one setting.

    Runs are the seeds of one setting when they have the same label, rule,
    data, model and layer shapes and the same configuration in every value
    but ``seed`` (``config.toml``), each with a seed of its own; such a
    series is drawn as the mean over its seeds with a ±1 sd band. A
    :class:`Series` names itself as a run does (``label``, ``rule``, ``path``:
    the folder its runs share), so :func:`run_labels` tells series apart too.
    """

    def __init__(self, runs: list[Run]):
        self.runs = list(runs)

    def __repr__(self) -> str:
        return f"<Series {self.label!r}: {len(self.runs)} run(s)>"

    @property
    def run(self) -> Run:
        return self.runs[0]

    @property
    def rule(self) -> str:
        return self.run.rule

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def kind(self) -> str:
        return self.run.kind

    @property
    def path(self) -> Path | None:
        if len(self.runs) == 1 or any(r.path is None for r in self.runs):
            return self.run.path
        paths = [str(r.path) for r in self.runs]
        if len({os.path.isabs(p) for p in paths}) > 1:  # mixed: compare them absolute
            paths = [str(Path(p).resolve()) for p in paths]
        # as the user named them (relative stays relative: tables quote it, never this machine's root)
        return Path(os.path.commonpath(paths))

    @property
    def is_seeds(self) -> bool:
        """Several seeds (drawn as mean ± sd), not a single run."""
        return len(self.runs) > 1

    @property
    def seeds(self) -> list[int | None]:
        return [run_seed(r) for r in self.runs]

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status != "diverged"]

    @property
    def diverged_runs(self) -> list[Run]:
        return [r for r in self.runs if r.status == "diverged"]

    def _diverged_at(self) -> str:
        """`` at epoch 3`` / `` at epochs 2, 3`` of the diverged runs ('' where none says)."""
        epochs = sorted({(r.diverged or {}).get("epoch") for r in self.diverged_runs} - {None})
        return "" if not epochs else f" at epoch{'s' if len(epochs) > 1 else ''} {', '.join(map(str, epochs))}"

    def diverged_text(self) -> str | None:
        """``1 of 5 diverged at epoch 3`` (several seeds), ``diverged at epoch 3`` (one run), else None."""
        bad = self.diverged_runs
        if not bad:
            return None
        if not self.is_seeds:
            return self.run.diverged_text()
        return f"{len(bad)} of {len(self.runs)} diverged{self._diverged_at()}"

    def seed_note(self) -> str:
        """``5 seeds`` or ``5 seeds, 1 diverged at epoch 3`` (what the legend adds to the label)."""
        bad = self.diverged_runs
        note = f"{len(self.runs)} seeds"
        if bad:
            note += f", {'all' if len(bad) == len(self.runs) else len(bad)} diverged{self._diverged_at()}"
        return note


def training_series(group: list[Run]) -> list[Series]:
    """The runs of a group as series: the seeds of one setting together, every other run alone.

    Runs that share the label but differ in anything else than the seed (a
    learning rate, a decay ...) are never put together; neither are runs
    without a configuration or a seed, nor two runs of the same seed (a
    copied folder). The order is the group's (a series where its first run
    is); the seeds of a series in seed order.
    """
    buckets: dict[tuple, list[Run]] = {}
    for r in group:
        config, seed = _config_but_seed(r), run_seed(r)
        key = (r.kind, r.label, r.rule, group_key(r), config) if config is not None and seed is not None \
            else ("alone", id(r))
        buckets.setdefault(key, []).append(r)
    first: dict[int, Series] = {}
    for runs in buckets.values():
        seeds = [run_seed(r) for r in runs]
        if len(runs) > 1 and len(set(seeds)) == len(seeds):
            first[id(runs[0])] = Series(sorted(runs, key=lambda r: (run_seed(r), str(r.path))))
        else:
            for r in runs:
                first[id(r)] = Series([r])
    return [first[id(r)] for r in group if id(r) in first]


def series_labels(series: list[Series]) -> list[str]:
    """The legend text of each series: :func:`run_labels`, with ``(5 seeds)`` for several seeds.

    ``WM (5 seeds)``, ``WM (5 seeds, 1 diverged at epoch 3)``; a series told
    apart by its folder: ``WM (a/wm; 3 seeds)``. A single run: as today.
    """
    out = []
    for s, text in zip(series, run_labels(series)):
        if not s.is_seeds:
            out.append(text)
            continue
        plain = run_label(s)
        if text != plain and text.startswith(plain + " (") and text.endswith(")"):
            out.append(f"{text[:-1]}; {s.seed_note()})")
        else:
            out.append(f"{text} ({s.seed_note()})")
    return out


def series_variants(series: list[Series]) -> list[int]:
    """:func:`rule_variants` of the series (a series of seeds counts once)."""
    return rule_variants(series)


def mean_sd_over_seeds(per_run: Iterable[tuple[list, list]]) -> tuple[list, list, list, list]:
    """``(x, mean, sd, n)`` over runs' ``(xs, ys)``: at each x, the finite values of the runs that reached it.

    sd is the sample standard deviation (n − 1), NaN where one run is left.
    """
    values: dict = {}
    for xs, ys in per_run:
        for x, y in zip(xs, ys):
            if y is None:
                continue
            y = float(y)
            if math.isfinite(y):
                values.setdefault(x, []).append(y)
    xs = sorted(values)
    mean, sd, n = [], [], []
    for x in xs:
        v = values[x]
        m = sum(v) / len(v)
        mean.append(m)
        sd.append(math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1)) if len(v) > 1 else math.nan)
        n.append(len(v))
    return xs, mean, sd, n


def mean_sd(values: Iterable) -> tuple[int, float, float]:
    """``(n, mean, sample sd)`` of the finite values (None and NaN left out); NaN where undefined."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return 0, math.nan, math.nan
    m = sum(v) / len(v)
    return len(v), m, (math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1)) if len(v) > 1 else math.nan)


def layer_series(run: Run, key: str, layer: int) -> tuple[list, list]:
    """``(epochs, values)`` of layer ``layer`` of the per-layer metric ``key`` (rows without it left out)."""
    xs, ys = [], []
    for e, values in zip(*run.series(key)):
        if layer < len(values) and values[layer] is not None:
            xs.append(e)
            ys.append(values[layer])
    return xs, ys


# ---------------------------------------------------------------------------
# which layers' B carry an error
# ---------------------------------------------------------------------------
def feedback_used(run: Run) -> list[bool] | None:
    """Per weight layer: does its B carry an error to the layer below (``summary.json`` ``feedback_used``)?

    Older summaries lack the key. For them: in an MLP or a convnet the first
    weight layer never passes an error down (nothing below it needs one), so
    its B carries none and every other layer's does; for other models we do
    not guess (None).
    """
    used = (run.summary or {}).get("feedback_used")
    if isinstance(used, list) and used:
        return [bool(u) for u in used]
    if run.kind == "train" and run.model in ("mlp", "convnet") and run.n_layers:
        return [layer > 0 for layer in range(run.n_layers)]
    return None


def unused_layers(runs: Iterable[Run]) -> list[int]:
    """The weight layers (0-based) whose B carries no error, by the first run that says."""
    for r in runs:
        used = feedback_used(r)
        if used is not None:
            return [layer for layer, u in enumerate(used) if not u]
    return []


def wm_leaves_input_layer(runs: Iterable[Run]) -> bool:
    """Does a weight-mirror run among ``runs`` leave the input layer's B unmirrored (``wm.mirror_input_layer``)?"""
    for r in runs:
        if r.rule == "wm" and ((r.config or {}).get("wm") or {}).get("mirror_input_layer") is False:
            return True
    return False


def unused_note(runs: Iterable[Run], sep: str = " ") -> str:
    """What to say of a layer whose B carries no error (``sep`` before ``shown for reference``)."""
    runs = list(runs)
    return "B carries no error" + (": not learnt by WM," if wm_leaves_input_layer(runs) else ";") + \
        f"{sep}shown for reference"


# ---------------------------------------------------------------------------
# finding results folders
# ---------------------------------------------------------------------------
def _find_run_dirs(d: Path, depth: int) -> list[Path]:
    if results.is_run_dir(d):
        return [d]
    if depth >= MAX_DEPTH:
        return []
    found = []
    try:
        children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError:
        return []
    for child in children:
        found += _find_run_dirs(child, depth + 1)
    return found


def discover(paths: Iterable[str | Path]) -> list[Run]:
    """Every results folder at or under ``paths``.

    Raises
    ------
    FigureInputError
        a path that does not exist, or holds no results folder at all.
    """
    runs: list[Run] = []
    seen: set[Path] = set()
    paths = list(paths)
    if not paths:
        raise FigureInputError("no results folder given (--results DIR ...)")
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FigureInputError(f"{p}: no such results folder")
        if p.is_file():
            if p.name in results.RUN_FILES:
                p = p.parent
            else:
                raise FigureInputError(f"{p}: a file, not a results folder (give the folder that holds "
                                       f"{', '.join(results.RUN_FILES)})")
        dirs = _find_run_dirs(p, 0)
        if not dirs:
            raise FigureInputError(f"{p}: no results in it (none of {', '.join(results.RUN_FILES)} here or in "
                                   f"its sub-folders up to {MAX_DEPTH} levels down)")
        for d in dirs:
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(results.load_run(d, strict=False))
    return runs


def usable(runs: Iterable[Run], kind: str, *needs: str) -> tuple[list[Run], dict[str, str]]:
    """The runs of ``kind`` that have ``needs``, and why the others of that kind do not."""
    ok, why = [], {}
    for run in runs:
        if run.kind != kind:
            continue
        reason = missing(run, *needs)
        if reason:
            why[str(run.path)] = reason
        else:
            ok.append(run)
    return ok, why


def no_runs_reason(kind: str, why: dict[str, str], what: str) -> str:
    """The message of a figure skipped for want of runs."""
    noun = {"train": "training run (weightmirror train/compare)",
            "circuit": "circuit run (weightmirror circuit)"}[kind]
    if why:
        return f"no usable {noun} {what}: " + "; ".join(why.values())
    return f"no {noun} among the results {what}".rstrip()


def unique_names(base: str, runs: list[Run], key=tag) -> list[str]:
    """``base`` for a single run; ``base-<tag>`` (numbered on clashes) for several."""
    if len(runs) == 1:
        return [base]
    names, count = [], {}
    for r in runs:
        t = key(r)
        count[t] = count.get(t, 0) + 1
        names.append(f"{base}-{t}" + (f"-{count[t]}" if count[t] > 1 else ""))
    return names


def group_key(run: Run) -> tuple:
    """Runs comparable in one figure: same data, model and layer shapes."""
    return (run.data, run.model, tuple(tuple(s) for s in run.layer_shapes))


def group_training_runs(runs: list[Run]) -> list[list[Run]]:
    """Training runs grouped by (data, model, layer shapes), each group in rule order."""
    from .style import rule_sort_key

    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(group_key(r), []).append(r)
    return [sorted(g, key=lambda r: (rule_sort_key(r.rule), str(r.path))) for g in groups.values()]


def group_suffix(group: list[Run], n_groups: int) -> str:
    if n_groups == 1:
        return ""
    r = group[0]
    shapes = "x".join(str(s[0]) for s in r.layer_shapes)
    return f"-{r.data}-{r.model}" + (f"-{shapes}" if shapes else "")


def run_epochs(run: Run) -> int:
    """The epochs a run trained; for a diverged run, the epochs it was set to train (its config's)."""
    summary = run.summary or {}
    if run.status == "diverged":
        planned = (run.config or {}).get("epochs")
        if isinstance(planned, int):
            return planned
    return int(summary.get("epochs", 0))


def diverged_span(group: list[Run]) -> int | None:
    """With a diverged run in ``group``, the most epochs any of its runs was set to train, else None.

    Curves of epochs are then drawn over all of them, so a run that diverged
    early is seen to stop early (and a lone point at epoch 0 gets an axis).
    """
    if not any(r.status == "diverged" for r in group):
        return None
    return max(1, *(run_epochs(r) for r in group))


def diverged_label(label: str, run: Run) -> str:
    """A legend entry for a diverged run's end marker: ``WM: diverged at epoch 2``."""
    return f"{label}: {run.diverged_text()}"


def group_title(group: list[Run]) -> str:
    r = group[0]
    epochs = sorted({run_epochs(x) for x in group if x.summary})
    ep = "/".join(str(e) for e in epochs)
    return f"{r.data_description()}, {r.model_description()}, {ep} epochs"


def make_per_training_group(runs: Iterable[Run], out_dir, name: str, draw) -> dict:
    """One figure per group of comparable training runs (same data, model, epochs).

    ``draw(group)`` returns a matplotlib figure or raises SkipFigure; the
    figure is saved as ``name`` (plus a suffix when there are several groups).
    """
    from . import style

    ok, why = usable(runs, "train", "trained", "summary")
    if not ok:
        raise SkipFigure(no_runs_reason("train", why, ""))
    groups = group_training_runs(ok)
    made, skipped = [], {}
    for g in groups:
        file_name = name + group_suffix(g, len(groups))
        try:
            made += style.save(draw(g), out_dir, file_name)
        except SkipFigure as exc:
            skipped[file_name] = str(exc)
    if not made:
        raise SkipFigure("; ".join(skipped.values()))
    return {"made": made, "skipped": skipped, "ignored": why}
