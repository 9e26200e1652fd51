"""The one TOML reader and writer: configs, circuit declarations, results folders.

Reading uses the standard library's ``tomllib``; writing uses ``tomli-w``,
so that what is written reads back to the same values. TOML has no null:
a ``None`` is refused by the writer rather than written as something that
reads back differently.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from .errors import InputError

__all__ = ["read", "dumps", "MAX_BYTES"]

#: the largest TOML file read (configs are a few kB; a larger file is not one)
MAX_BYTES = 16 * 2**20


def read(path: str | Path, error: type[InputError] = InputError, what: str = "config file") -> dict[str, Any]:
    """A TOML file as a dict.

    A missing file, a directory, a file that is not UTF-8 text or not valid
    TOML raises ``error`` with one line naming the file and the problem.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path}: is a directory, not a TOML file")
    if path.exists() and not path.is_file():
        raise error(f"{what} {path}: not a regular file (a device or a pipe), not a TOML file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{what} {path}: not found") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_BYTES:
        raise error(f"{what} {path}: larger than {MAX_BYTES // 2**20} MiB, not a configuration")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path}: not a text file (not UTF-8)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path}: not valid TOML ({exc})") from None


def _plain(value: Any) -> Any:
    """Tuples as lists and NumPy scalars as Python numbers, for the writer."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None:
        raise TypeError("TOML has no null value: leave the key out instead")
    if not isinstance(value, (str, bytes, bool, int, float)) and hasattr(value, "item"):
        return value.item()  # a NumPy scalar
    return value


def dumps(values: Mapping[str, Any]) -> str:
    """TOML text of a nested mapping of plain values (tables after the keys)."""
    return tomli_w.dumps(_plain(values))
