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
