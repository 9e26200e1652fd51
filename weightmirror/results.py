"""The results folder every run writes, and atomic file writes.

A results folder holds

``config.toml``
    the resolved configuration (every parameter, defaults included);
``metrics.jsonl``
    one JSON object per line: per epoch (training) or per simulated interval
    (circuit mode);
``summary.json``
    the final figures of the run (see each command for its keys);
``checkpoint.npz`` / snapshots
    arrays, written atomically (a temporary file, then ``os.replace``).

The meaning of a run is in these files, never in the folder's name.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import InputError

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.npz"


class ResultsError(InputError):
    """A results folder is missing, partial or malformed."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` is either the old file or the whole new one."""
    _atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_metrics(path: Path, rows: Iterable[dict]) -> None:
    """Rewrite ``metrics.jsonl`` with ``rows`` (atomically; used on resume too)."""
    atomic_write_text(path, "".join(json.dumps(_jsonable(r)) + "\n" for r in rows))


def append_metrics(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_jsonable(row)) + "\n")
        f.flush()


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing (no metrics were written)")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}: line {i} is not JSON ({exc.msg})") from None
    return rows


def read_summary(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing (the run did not finish)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc.msg})") from None


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


def to_toml(config: dict) -> str:
    """A small TOML writer for nested dicts of str/int/float/bool/lists."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            r = repr(float(v))
            return r if ("." in r or "e" in r or "inf" in r or "nan" in r) else r + ".0"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if v is None:
            return '""'
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines: list[str] = []
    tables = []
    for k, v in config.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {value(v)}")

    def emit(prefix, table):
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
        subs = [(k, v) for k, v in table.items() if isinstance(v, dict)]
        lines.append("")
        lines.append(f"[{prefix}]")
        for k, v in scalars:
            lines.append(f"{k} = {value(v)}")
        for k, v in subs:
            emit(f"{prefix}.{k}", v)

    for k, v in tables:
        emit(k, v)
    return "\n".join(lines).lstrip("\n") + "\n"
