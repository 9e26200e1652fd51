"""Finding and reading results folders for the figures (never training, never simulating).

A results folder is recognised by the files ``weightmirror train``,
``weightmirror compare`` (one folder per rule) and ``weightmirror circuit``
write: ``summary.json``, ``metrics.jsonl``, ``config.toml`` (see
:mod:`weightmirror.results`). A path given by the user is either such a folder or a
folder of them (searched a few levels down).

Only :mod:`weightmirror.results` (file readers), the standard library and NumPy are
imported here.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError

from weightmirror import results

RUN_FILES = (results.SUMMARY, results.METRICS, results.CONFIG)
MAX_DEPTH = 4

DATA_NAMES = {
    "digits": "scikit-learn digits (8×8)",
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "imagenet": "ImageNet",
    "imagenet32": "ImageNet 32×32",
    "imagenet64": "ImageNet 64×64",
}


class FigureInputError(InputError):
    """A results path given to the figures is not there or holds no results."""


class SkipFigure(Exception):
    """The inputs do not allow this figure; the message says why."""


def _nan(v):
    return math.nan if v is None else float(v)


@dataclass
class Run:
    """One results folder, read once."""

    path: Path
    kind: str  # "train", "circuit" or "unknown"
    config: dict | None = None
    metrics: list[dict] | None = None
    summary: dict | None = None
    problems: dict[str, str] = field(default_factory=dict)  # file -> what is wrong

    # -- what a figure needs ----------------------------------------------
    def missing(self, *needs: str) -> str | None:
        """Why this run cannot serve a figure that needs ``needs``, or None.

        needs: ``config``, ``metrics``, ``summary``, ``trained`` (a training
        run with at least one epoch after epoch 0), ``intervals`` (a circuit
        run with at least one simulated interval), ``spikes``.
        """
        why = []
        for need in needs:
            if need in ("config", "metrics", "summary"):
                if need in self.problems:
                    why.append(self.problems[need])
            elif need == "trained":
                if "metrics" in self.problems:
                    why.append(self.problems["metrics"])
                elif not self.epochs_trained():
                    why.append(f"{self.path / results.METRICS}: no trained epoch "
                               f"({'empty' if not self.metrics else 'only epoch 0, the state before training'})")
            elif need == "intervals":
                if "metrics" in self.problems:
                    why.append(self.problems["metrics"])
                elif not self.metrics or len(self.metrics) < 2:
                    why.append(f"{self.path / results.METRICS}: no simulated interval "
                               f"({len(self.metrics or [])} row(s))")
            elif need == "spikes":
                if not self.spikes_path.is_file():
                    why.append(f"{self.spikes_path}: missing (spikes are written by spiking runs only)")
            else:  # pragma: no cover - programming error
                raise ValueError(need)
        # the same text can come from two needs
        return "; ".join(dict.fromkeys(why)) or None

    # -- common fields ------------------------------------------------------
    @property
    def spikes_path(self) -> Path:
        return self.path / "spikes.npz"

    @property
    def rule(self) -> str:
        for src in (self.summary, self.config):
            if src and "rule" in src:
                r = src["rule"]
                return r.get("name", "?") if isinstance(r, dict) else str(r)
        return "?"

    def epochs_trained(self) -> list[dict]:
        return [r for r in (self.metrics or []) if r.get("epoch", 0) >= 1]

    def series(self, key: str) -> tuple[list[float], list[Any]]:
        """(epochs, values) of a per-epoch key, rows lacking it left out."""
        xs, ys = [], []
        for r in self.metrics or []:
            if key in r and r[key] is not None and "epoch" in r:
                xs.append(r["epoch"])
                ys.append(r[key])
        return xs, ys

    # -- training runs --------------------------------------------------------
    @property
    def data(self) -> str:
        return str((self.summary or {}).get("data") or (self.config or {}).get("data") or "?")

    @property
    def model(self) -> str:
        return str((self.summary or {}).get("model") or (self.config or {}).get("model") or "?")

    @property
    def layer_shapes(self) -> list[list[int]]:
        return [list(s) for s in (self.summary or {}).get("layer_shapes") or []]

    @property
    def n_layers(self) -> int:
        if self.layer_shapes:
            return len(self.layer_shapes)
        for r in self.metrics or []:
            if r.get("angles_deg"):
                return len(r["angles_deg"])
        return 0

    def model_description(self) -> str:
        """``MLP 64-64-64-10`` for MLPs (from the layer shapes), else the model name."""
        shapes = self.layer_shapes
        if self.model == "mlp" and shapes and all(len(s) == 2 for s in shapes):
            sizes = [shapes[0][1]] + [s[0] for s in shapes]
            act = ((self.config or {}).get("model_options") or {}).get("activation")
            return "MLP " + "-".join(str(n) for n in sizes) + (f" ({act})" if act else "")
        return {"convnet": "small convnet", "resnet20": "ResNet-20", "resnet18": "ResNet-18",
                "resnet50": "ResNet-50"}.get(self.model, self.model)

    def data_description(self) -> str:
        return DATA_NAMES.get(self.data, self.data)

    def group_key(self) -> tuple:
        """Runs comparable in one figure: same data, model and layer shapes."""
        return (self.data, self.model, tuple(tuple(s) for s in self.layer_shapes))

    # -- circuit runs ---------------------------------------------------------
    @property
    def neuron(self) -> str:
        if self.summary and "neuron" in self.summary:
            return str(self.summary["neuron"])
        return str(((self.config or {}).get("neuron") or {}).get("kind", "?"))

    @property
    def schedule(self) -> str:
        if self.summary and "schedule" in self.summary:
            return str(self.summary["schedule"])
        return str(((self.config or {}).get("phases") or {}).get("schedule", "?"))

    def tag(self) -> str:
        if self.kind == "circuit":
            return f"{self.rule}-{self.neuron}-{self.schedule}"
        return f"{self.rule}"


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise results.ResultsError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise results.ResultsError(f"{path}: not a text file") from None


def load_run(folder: Path) -> Run:
    """Read one results folder; what is missing or unreadable goes to ``problems``."""
    folder = Path(folder)
    run = Run(path=folder, kind="unknown")
    cfg_path = folder / results.CONFIG
    if cfg_path.is_file():
        try:
            run.config = _read_toml(cfg_path)
        except results.ResultsError as exc:
            run.problems["config"] = str(exc)
    else:
        run.problems["config"] = f"{cfg_path}: missing (no configuration was written)"
    try:
        run.metrics = results.read_metrics(folder / results.METRICS)
        if not run.metrics:
            run.problems["metrics"] = f"{folder / results.METRICS}: empty (no row was written)"
    except results.ResultsError as exc:
        run.problems["metrics"] = str(exc)
    try:
        run.summary = results.read_summary(folder / results.SUMMARY)
    except results.ResultsError as exc:
        run.problems["summary"] = str(exc)
    cmd = (run.summary or {}).get("command") or (run.config or {}).get("command")
    if cmd == "circuit":
        run.kind = "circuit"
    elif run.metrics and "t" in run.metrics[0] and "epoch" not in run.metrics[0]:
        run.kind = "circuit"
    elif (run.summary and "epochs" in run.summary) or (run.config and "model" in run.config) or \
            (run.metrics and "epoch" in run.metrics[0]):
        run.kind = "train"
        if "summary" in run.problems and "did not finish" in run.problems["summary"]:
            run.problems["summary"] += "; finish it with `weightmirror train --resume --out DIR`"
    return run


def _is_run_dir(d: Path) -> bool:
    return any((d / name).is_file() for name in RUN_FILES)


def _find_run_dirs(d: Path, depth: int) -> list[Path]:
    if _is_run_dir(d):
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
            if p.name in RUN_FILES:
                p = p.parent
            else:
                raise FigureInputError(f"{p}: a file, not a results folder (give the folder that holds "
                                       f"{', '.join(RUN_FILES)})")
        dirs = _find_run_dirs(p, 0)
        if not dirs:
            raise FigureInputError(f"{p}: no results in it (none of {', '.join(RUN_FILES)} here or in "
                                   f"its sub-folders up to {MAX_DEPTH} levels down)")
        for d in dirs:
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(load_run(d))
    return runs


def usable(runs: Iterable[Run], kind: str, *needs: str) -> tuple[list[Run], dict[str, str]]:
    """The runs of ``kind`` that have ``needs``, and why the others of that kind do not."""
    ok, why = [], {}
    for run in runs:
        if run.kind != kind:
            continue
        reason = run.missing(*needs)
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


def unique_names(base: str, runs: list[Run], key=lambda r: r.tag()) -> list[str]:
    """``base`` for a single run; ``base-<tag>`` (numbered on clashes) for several."""
    if len(runs) == 1:
        return [base]
    names, count = [], {}
    for r in runs:
        tag = key(r)
        count[tag] = count.get(tag, 0) + 1
        names.append(f"{base}-{tag}" + (f"-{count[tag]}" if count[tag] > 1 else ""))
    return names


def group_training_runs(runs: list[Run]) -> list[list[Run]]:
    """Training runs grouped by (data, model, layer shapes), each group in rule order."""
    from .style import rule_sort_key

    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group_key(), []).append(r)
    return [sorted(g, key=lambda r: (rule_sort_key(r.rule), str(r.path))) for g in groups.values()]


def group_suffix(group: list[Run], n_groups: int) -> str:
    if n_groups == 1:
        return ""
    r = group[0]
    shapes = "x".join(str(s[0]) for s in r.layer_shapes)
    return f"-{r.data}-{r.model}" + (f"-{shapes}" if shapes else "")


def group_title(group: list[Run]) -> str:
    r = group[0]
    epochs = sorted({int(x.summary.get("epochs", 0)) for x in group if x.summary})
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
