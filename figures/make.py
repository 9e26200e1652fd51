"""``weightmirror figures``: every figure the saved results allow.

Reads results folders written by ``weightmirror train``, ``compare`` (a
folder of per-rule run folders) and ``circuit``; never trains or simulates.
Each figure is one module of this package with ``make(runs, out_dir)`` and
its ``NAME`` (the name of the files it writes: ``error_curves`` writes
``test_error.png``); it writes PNG (dpi 150) and PDF (the results table:
Markdown and LaTeX).

Python use::

    from weightmirror.figures.make import make_all
    report = make_all(["runs/compare", "runs/circuit-wm"], "figs")
    report["made"]     # PNG (or .md) path per figure made; the PDF/.tex sits beside it
    report["skipped"]  # figure name -> why it was not made
    report["ignored"]  # results folder -> what is missing in it
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .inputs import FigureInputError, SkipFigure, discover, missing

__all__ = ["FigureInputError", "FIGURES", "make_all"]

#: figure modules, in the order they are made (a module's NAME names its files)
FIGURES = ("circuit_diagram", "mirror_phase", "spike_raster", "populations", "feedback_angles", "error_curves",
           "delta_angles", "results_table")


def figure_modules():
    return [importlib.import_module(f".{name}", __package__) for name in FIGURES]


def make_all(result_dirs, out_dir) -> dict:
    """Make every figure ``result_dirs`` allow into ``out_dir``.

    Returns ``{"made": [paths], "files": [every file written], "skipped":
    {figure: reason}, "ignored": {results folder: what is missing},
    "damaged": {results folder: its first unreadable file and why}}`` (a
    damaged folder is also in "ignored" when no figure could use it).

    Raises
    ------
    FigureInputError
        a path in ``result_dirs`` that is not there or holds no results;
        ``out_dir`` is a file or cannot be created.
    """
    runs = discover([result_dirs] if isinstance(result_dirs, (str, Path)) else result_dirs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FigureInputError(f"{out}: a file, not a folder; give the folder to write the figures to")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FigureInputError(f"{out}: cannot be created ({exc.strerror or exc}); "
                               "give a folder that can be written") from None
    made: list[str] = []
    files: list[str] = []
    skipped: dict[str, str] = {}
    ignored: dict[str, str] = {}
    for run in runs:
        if run.kind == "unknown":
            ignored[str(run.path)] = ("cannot tell a training run from a circuit run: "
                                      + ("; ".join(run.problems.values()) or "no known keys"))
            continue
        why = missing(run, *(("trained", "summary") if run.kind == "train" else ("intervals", "summary")))
        if why:
            ignored[str(run.path)] = why
    for module in figure_modules():
        try:
            result = module.make(runs, out)
        except SkipFigure as exc:
            skipped[module.NAME] = str(exc)
            continue
        written = [str(p) for p in result["made"]]
        files += written
        made += [p for p in written if p.endswith((".png", ".md"))]
        skipped.update(result.get("skipped", {}))
        for path, why in result.get("ignored", {}).items():
            ignored.setdefault(path, why)
    damaged = {str(run.path): run.problems[sorted(run.damaged)[0]] for run in runs if run.damaged}
    return {"made": made, "files": files, "skipped": skipped, "ignored": ignored, "damaged": damaged}
