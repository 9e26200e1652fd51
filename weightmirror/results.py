"""The results folder every run writes, and atomic file writes.

A results folder holds

``config.toml``
    the resolved configuration (every parameter, defaults included);
``metrics.jsonl``
    one JSON object per line: per epoch (training) or per simulated interval
    (circuit mode);
``summary.json``
    the final figures of the run (see each command for its keys); a
    training run's ``status`` is ``"completed"`` or ``"diverged"`` (then
    ``diverged`` says where, and the figures are the last finite epoch's);
    a summary without ``status`` (older runs) is completed if ``completed``
    is true;
``checkpoint.npz`` / snapshots
    arrays, written atomically (a temporary file, then ``os.replace``).

The meaning of a run is in these files, never in the folder's name.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import InputError

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.npz"
#: ``predictions.npz``: the final network's class for every test example (``test_pred``,
#: ``test_label``, in the test set's order), for paired tests between runs
PREDICTIONS = "predictions"


class ResultsError(InputError):
    """A results folder is missing, partial or malformed."""


class RunExistsError(ResultsError):
    """The output folder already holds a run (and the run was not asked to resume)."""


class WriteError(ResultsError):
    """A file of a results folder cannot be written (a full disk, a read-only file system, no permission).

    The write was atomic: the file it would have replaced, and every other
    file already in the folder, is as it was.
    """


def check_out_path(out: Any, flag: str = "--out") -> None:
    """Refuse an empty folder name (``--out ""`` would write into the current folder)."""
    if isinstance(out, str) and not out.strip():
        raise ResultsError(f"{flag}: an empty folder name; give the folder to write, e.g. {flag} runs/bp")


#: what a results folder holds, as far as starting a run in it goes
EMPTY, UNSTARTED, HOLDS_RUN = "empty", "unstarted", "run"


def folder_state(folder: Path) -> tuple[str, list[str]]:
    """``(state, files)``: is ``folder`` free for a new run?

    ``empty``: none of a run's files; ``unstarted``: a run claimed it but
    recorded nothing it could continue from (a training run: ``config.toml``
    and an empty ``metrics.jsonl`` or only its epoch-0 row, no checkpoint, no summary; a circuit run:
    no summary, since a circuit run cannot be resumed), so a new run may
    reuse it; ``run``: it holds a run (``files`` names what is there).
    """
    folder = Path(folder)
    taken = [n for n in (CONFIG, CHECKPOINT, SUMMARY, METRICS) if (folder / n).exists()]
    if not taken:
        return EMPTY, []
    if (folder / CHECKPOINT).exists() or (folder / SUMMARY).exists():
        return HOLDS_RUN, taken
    if _circuit_config(folder):
        return UNSTARTED, taken  # a circuit run writes its metrics and summary only once it has run
    metrics = folder / METRICS
    if metrics.exists():
        try:
            if not metrics.is_file() or not _only_epoch_zero(metrics.read_bytes()):
                return HOLDS_RUN, taken
        except OSError:
            return HOLDS_RUN, taken
    return UNSTARTED, taken


def _only_epoch_zero(data: bytes) -> bool:
    """Is a metrics file without a checkpoint beside it empty, or only the epoch-0 row (before training)?

    Runs of 0.2.0 and earlier wrote that row before their first checkpoint;
    without a checkpoint nothing can continue from it, and it is recomputed
    by a new run.
    """
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        return True
    if len(lines) > 1:
        return False
    try:
        row = json.loads(lines[0])
    except ValueError:
        return False
    return isinstance(row, dict) and row.get("epoch") == 0 and not isinstance(row.get("epoch"), bool)


def _circuit_config(folder: Path) -> bool:
    """Does ``folder``'s config.toml say it is a circuit run (``command = "circuit"``)?"""
    from . import tomlfile

    try:
        return tomlfile.read(folder / CONFIG).get("command") == "circuit"
    except InputError:
        return False


#: what a run writes before its first result: removed when a new run reuses an unstarted folder
START_FILES = (CONFIG, METRICS, "weights_initial.npz", "weights_final.npz", "spikes.npz", f"{PREDICTIONS}.npz")


def clear_unstarted(folder: Path) -> list[str]:
    """Remove what an unstarted run left in ``folder`` (see :func:`folder_state`); the names removed.

    Call it only while holding the folder's claim (:func:`weightmirror.locks.claim`)
    and after :func:`refuse_existing_run` said the folder is unstarted.
    """
    removed = []
    for name in START_FILES:
        try:
            (Path(folder) / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _write_error(Path(folder) / name, exc) from None
    return removed


def refuse_existing_run(folder: Path, hint: str = "choose another --out") -> bool:
    """Raise :class:`RunExistsError` if ``folder`` holds a run: nothing is ever overwritten.

    Returns True when ``folder`` holds only the start of a run that recorded
    nothing (:func:`folder_state` ``unstarted``: a run interrupted or failed
    before its first checkpoint), which a new run may reuse; False when it
    holds none of a run's files.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunExistsError(f"{folder}: a file, not a folder; {hint}")
    state, taken = folder_state(folder)
    if state == HOLDS_RUN:
        raise RunExistsError(f"{folder} already holds a run ({', '.join(taken)}); {hint}")
    return state == UNSTARTED


def _write_error(path: Path, exc: OSError) -> WriteError:
    return WriteError(f"{path}: cannot be written ({exc.strerror or exc}); the files already in "
                      f"{path.parent} are kept as they were")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        # mkstemp makes the file owner-only; give it the usual mode (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` is either the old file or the whole new one."""
    _atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(value: Any) -> Any:
    """Plain JSON values: NumPy numbers and arrays as Python ones, non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    return value


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_metrics(path: Path, rows: Iterable[dict]) -> None:
    """Rewrite ``metrics.jsonl`` with ``rows`` (atomically; used on resume too)."""
    atomic_write_text(path, "".join(json.dumps(jsonable(r)) + "\n" for r in rows))


def append_metrics(path: Path, row: dict) -> None:
    """Append one row; a failed write (a full disk) leaves the file as it was."""
    data = (json.dumps(jsonable(row)) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _write_error(Path(path), exc) from None
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            try:  # no partial line: cut the file back to its last whole row
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise _write_error(Path(path), exc) from None
    finally:
        os.close(fd)


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing (no metrics were written)")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file (not UTF-8)") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}: line {i} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ResultsError(f"{path}: line {i} is not a JSON object")
        _check_row(path, i, row)
        rows.append(row)
    return rows


#: metrics keys and the JSON type each must have (null is always allowed for a number)
_NUMBER_KEYS = ("t", "train_loss", "test_loss", "test_top1_error", "test_top5_error", "val_loss",
                "val_top1_error", "val_top5_error", "epoch_seconds", "lr", "skipped_images", "task_top1_error",
                "presentations")
_LIST_KEYS = ("angles_deg", "delta_angles_deg", "predicted_angles_deg", "noise_aware_angles_deg",
              "pilot_angles_deg")
_DICT_KEYS = ("rates", "rates_rms", "rates_hz")


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _check_row(path: Path, line: int, row: dict) -> None:
    """Refuse a metrics row whose known keys have the wrong JSON type (one line naming the key)."""
    def bad(key, expected):
        return ResultsError(f"{path}: line {line}: {key} is {row[key]!r:.60}, expected {expected}")

    if "epoch" in row and (isinstance(row["epoch"], bool) or not isinstance(row["epoch"], int) or row["epoch"] < 0):
        raise bad("epoch", "an integer >= 0")
    for key in _NUMBER_KEYS:
        if key in row and not _is_number(row[key]):
            raise bad(key, "a number or null")
    for key in _LIST_KEYS:
        if key in row and row[key] is not None and (
                not isinstance(row[key], list) or not all(_is_number(v) for v in row[key])):
            raise bad(key, "a list of numbers (null for none)")
    if "weight_norms" in row:
        norms = row["weight_norms"]
        values = norms.values() if isinstance(norms, dict) else norms if isinstance(norms, list) else None
        if values is None or not all(_is_number(v) for v in values):
            raise bad("weight_norms", "a list or table of numbers")
    for key in _DICT_KEYS:
        if key in row and (not isinstance(row[key], dict) or not all(_is_number(v) for v in row[key].values())):
            raise bad(key, "a table of numbers")
    if "phase" in row and not isinstance(row["phase"], str):
        raise bad("phase", "a string")


def read_summary(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing (the run did not finish)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(summary, dict):
        raise ResultsError(f"{path}: not a JSON object")
    return summary


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` written atomically."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write_bytes(Path(path), buf.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile/format errors
        raise ResultsError(f"{path}: not a readable .npz ({exc})") from None


# ---------------------------------------------------------------------------
# reading a whole results folder
# ---------------------------------------------------------------------------

#: the files that make a folder a results folder
RUN_FILES = (SUMMARY, METRICS, CONFIG)

#: how data sets are named in figure titles and tables
DATA_NAMES = {
    "digits": "scikit-learn digits (8×8)",
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "imagenet": "ImageNet",
    "imagenet32": "ImageNet 32×32",
    "imagenet64": "ImageNet 64×64",
}


def write_config(path: Path, values: dict) -> None:
    """Write a resolved config (a nested dict of plain values) as TOML, atomically."""
    from . import tomlfile

    atomic_write_text(Path(path), tomlfile.dumps(values))


def read_config(folder: Path) -> dict:
    """The ``config.toml`` of a results folder, as a dict."""
    from . import tomlfile

    return tomlfile.read(Path(folder) / CONFIG, ResultsError, what="run config")


@dataclass
class Run:
    """One run: its configuration, its metrics rows, its summary, and where it lives.

    What :func:`weightmirror.train` and :func:`weightmirror.simulate` return,
    and what :func:`load_run` reads back from a results folder (training or
    circuit).

    Attributes
    ----------
    path : the results folder, or None for a run kept in memory.
    kind : ``"train"``, ``"circuit"`` or ``"unknown"``.
    config : the resolved configuration (as in ``config.toml``).
    metrics : one dict per epoch (training; epoch 0 = before training) or
        per simulated interval (circuit).
    summary : the final figures (as in ``summary.json``); None while a run
        has not finished.
    problems : file -> what is wrong with it, for a partial or damaged folder.
    damaged : the keys of ``problems`` whose file is there but cannot be read
        (not UTF-8, not JSON/TOML, wrongly typed values): bad input, unlike a
        file that is missing or empty because the run has not finished.
    arrays : what a run kept in memory would have written as ``.npz`` files
        (circuit runs: ``weights_initial``, ``weights_final``, ``spikes``);
        read them with :meth:`load_arrays`, which also reads a folder's files.
    """

    path: Path | None
    kind: str
    config: dict | None = None
    metrics: list[dict] | None = None
    summary: dict | None = None
    problems: dict[str, str] = field(default_factory=dict)
    damaged: set[str] = field(default_factory=set)
    arrays: dict[str, dict] = field(default_factory=dict, repr=False)

    def load_arrays(self, name: str) -> dict:
        """The arrays ``name`` (e.g. ``weights_final``: ``W1, B1, W2, ...``), from memory or ``<name>.npz``."""
        if name in self.arrays:
            return self.arrays[name]
        if self.path is None:
            raise ResultsError(f"this in-memory run has no arrays {name!r}; it has: {', '.join(self.arrays) or 'none'}")
        return load_arrays(self.path / f"{name}.npz")

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "in memory"
        n = len(self.metrics or [])
        status = self.status
        done = {"completed": "finished", "diverged": self.diverged_text()}.get(status or "", "not finished")
        return f"<Run {self.kind} {self.label!r} ({where}): {n} metrics rows, {done}>"

    # -- how it ended -----------------------------------------------------------
    @property
    def status(self) -> str | None:
        """``"completed"``, ``"diverged"``, ``"interrupted"`` (a run kept in memory), or None (no summary).

        A summary without ``status`` (written before it existed) is completed
        if its ``completed`` is true (or absent, as in circuit runs).
        """
        s = self.summary
        if not s:
            return None
        if s.get("status"):
            return str(s["status"])
        return "completed" if s.get("completed", True) else "interrupted"

    @property
    def diverged(self) -> dict | None:
        """Where a diverged run stopped (``summary["diverged"]``: epoch, step, loss, what, layer), else None."""
        if self.status != "diverged":
            return None
        return dict((self.summary or {}).get("diverged") or {})

    def diverged_text(self) -> str | None:
        """``diverged at epoch E`` (E counted from 1, the epoch in progress), else None."""
        where = self.diverged
        if where is None:
            return None
        return f"diverged at epoch {where['epoch']}" if where.get("epoch") is not None else "diverged"

    # -- common fields ------------------------------------------------------
    @property
    def rule(self) -> str:
        """The rule's config name (``bp``, ``wm``, ...), or ``?``."""
        for src in (self.summary, self.config):
            if src and "rule" in src:
                r = src["rule"]
                return r.get("name", "?") if isinstance(r, dict) else str(r)
        return "?"

    @property
    def label(self) -> str:
        """How figures and tables name the run: its ``label``, else its rule."""
        for src in (self.summary, self.config):
            if src and src.get("label"):
                return str(src["label"])
        return self.rule

    @property
    def spikes_path(self) -> Path | None:
        return None if self.path is None else self.path / "spikes.npz"

    def epochs_trained(self) -> list[dict]:
        """The metrics rows after epoch 0 (training runs)."""
        return [r for r in (self.metrics or []) if r.get("epoch", 0) >= 1]

    def series(self, key: str, x: str = "epoch") -> tuple[list[float], list[Any]]:
        """``(x values, values)`` of a per-row key, rows lacking it left out."""
        xs, ys = [], []
        for r in self.metrics or []:
            if key in r and r[key] is not None and x in r:
                xs.append(r[x])
                ys.append(r[key])
        return xs, ys

    def to_dataframe(self):
        """The metrics as a pandas DataFrame, one row per epoch (or interval).

        A list-valued metric becomes one column per layer, ``angles_deg[0]``,
        ``angles_deg[1]`` ...; a dict-valued one, one column per key,
        ``rates[y0]`` ... Needs pandas (``pip install 'weightmirror[pandas]'``).
        """
        try:
            import pandas as pd
        except ImportError:
            raise InputError("Run.to_dataframe needs pandas: pip install 'weightmirror[pandas]'") from None
        flat = []
        for row in self.metrics or []:
            out: dict[str, Any] = {}
            for key, value in row.items():
                if isinstance(value, list):
                    out.update({f"{key}[{i}]": (math.nan if v is None else v) for i, v in enumerate(value)})
                elif isinstance(value, dict):
                    out.update({f"{key}[{k}]": (math.nan if v is None else v) for k, v in value.items()})
                else:
                    out[key] = math.nan if value is None else value
            flat.append(out)
        return pd.DataFrame(flat)

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
        """``MLP 64-64-64-10`` for MLPs (from the layer shapes), else the model's name."""
        shapes = self.layer_shapes
        if self.model == "mlp" and shapes and all(len(s) == 2 for s in shapes):
            sizes = [shapes[0][1]] + [s[0] for s in shapes]
            act = ((self.config or {}).get("model_options") or {}).get("activation")
            return "MLP " + "-".join(str(n) for n in sizes) + (f" ({act})" if act else "")
        return {"convnet": "small convnet", "resnet20": "ResNet-20", "resnet18": "ResNet-18",
                "resnet50": "ResNet-50"}.get(self.model, self.model)

    def data_description(self) -> str:
        return DATA_NAMES.get(self.data, self.data)

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


def is_run_dir(folder: Path) -> bool:
    """Does ``folder`` hold any of a results folder's files?"""
    return any((Path(folder) / name).is_file() for name in RUN_FILES)


def load_run(path: str | Path, strict: bool = True) -> Run:
    """Read one results folder (training or circuit) into a :class:`Run`.

    Parameters
    ----------
    path : the folder (or one of its files: ``summary.json``, ``metrics.jsonl``,
        ``config.toml``).
    strict : raise :class:`ResultsError` when ``path`` is not a results
        folder at all (missing, a file of another kind, none of the files);
        files that are missing or unreadable in a real results folder (a run
        that has not finished) are recorded in ``problems`` either way.
    """
    folder = Path(path)
    if folder.is_file() and folder.name in RUN_FILES:
        folder = folder.parent
    if strict:
        if not folder.exists():
            raise ResultsError(f"{folder}: no such results folder")
        if not folder.is_dir():
            raise ResultsError(f"{folder}: a file, not a results folder (give the folder that holds "
                               f"{', '.join(RUN_FILES)})")
        if not is_run_dir(folder):
            raise ResultsError(f"{folder}: not a results folder (none of {', '.join(RUN_FILES)} in it)")
    run = Run(path=folder, kind="unknown")
    if (folder / CONFIG).is_file():
        try:
            run.config = read_config(folder)
        except ResultsError as exc:
            run.problems["config"] = str(exc)
            run.damaged.add("config")
    else:
        run.problems["config"] = f"{folder / CONFIG}: missing (no configuration was written)"
    try:
        run.metrics = read_metrics(folder / METRICS)
        if not run.metrics:
            run.problems["metrics"] = f"{folder / METRICS}: empty (no row was written)"
    except ResultsError as exc:
        run.problems["metrics"] = str(exc)
        if (folder / METRICS).is_file():
            run.damaged.add("metrics")
    try:
        run.summary = read_summary(folder / SUMMARY)
    except ResultsError as exc:
        run.problems["summary"] = str(exc)
        if (folder / SUMMARY).is_file():
            run.damaged.add("summary")
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
    if strict and run.kind == "unknown":
        raise ResultsError(f"{folder}: not readable as a training or circuit run ("
                           + "; ".join(run.problems.values()) + ")")
    return run
