"""One set of validation helpers for every declaration: rules, circuits, training configs.

Each helper checks one value and raises the caller's error class (a subclass
of :class:`weightmirror.errors.InputError`) with one line that names the
value (``what``) and what is allowed. :func:`from_table` reads a TOML table
into a frozen dataclass: unknown keys are refused with the allowed ones
listed, each value is checked against the field's annotation (``bool``,
``int``, ``float``, ``str``, ``tuple[int, ...]``, ``Literal``-free: ranges
and choices are the dataclass's own ``__post_init__``), and numbers must be
finite.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Callable, Iterable

from .errors import InputError

__all__ = ["choice", "number", "integer", "boolean", "string", "int_list", "typed", "from_table",
           "field_names"]

ErrorType = type[InputError]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choice(value: Any, allowed: Iterable[Any], what: str, error: ErrorType = InputError) -> Any:
    """``value`` if it is one of ``allowed``, else ``error("<what>: 'x' is not allowed; allowed: a, b")``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise error(f"{what}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
    return value


def _fmt(x: float) -> str:
    """A bound as written by a person: 1000000, 0.5, 1e-08."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _bound_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_fmt(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_fmt(high)}")
    return " and ".join(parts)


def number(value: Any, what: str, error: ErrorType = InputError, *, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (an int is accepted) within the bounds, as a float.

    ``low_open``/``high_open`` make a bound strict: ``number(x, "lr", low=0,
    low_open=True)`` requires ``x > 0``.
    """
    if not _is_number(value):
        raise error(f"{what}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        bounds = _bound_text(low, high, low_open, high_open) if low is not None or high is not None else ""
        raise error(f"{what}: must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    if (low is not None and (v < low or (low_open and v == low))) or \
            (high is not None and (v > high or (high_open and v == high))):
        raise error(f"{what}: must be {_bound_text(low, high, low_open, high_open)}, got {value!r}")
    return v


def integer(value: Any, what: str, error: ErrorType = InputError, *, low: int | None = None,
            high: int | None = None) -> int:
    """An integer (not a bool, not a float) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{what}: expected an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise error(f"{what}: must be {_bound_text(low, high, False, False)}, got {value!r}")
    return int(value)


def boolean(value: Any, what: str, error: ErrorType = InputError) -> bool:
    """``true`` or ``false`` (a 1 or a string is refused)."""
    if not isinstance(value, bool):
        raise error(f"{what}: expected true/false, got {value!r}")
    return value


def string(value: Any, what: str, error: ErrorType = InputError) -> str:
    """A string."""
    if not isinstance(value, str):
        raise error(f"{what}: expected a string, got {value!r}")
    return value


def int_list(value: Any, what: str, error: ErrorType = InputError, *, low: int = 1) -> tuple[int, ...]:
    """A list of integers ``>= low``, as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value):
        raise error(f"{what}: expected a list of integers >= {low}, got {value!r}")
    return tuple(int(v) for v in value)


def typed(value: Any, annotation: Any, what: str, error: ErrorType = InputError) -> Any:
    """``value`` checked against a field annotation and converted (int → float, list → tuple).

    Understands ``bool``, ``int``, ``float``, ``str``, ``tuple[int, ...]``,
    ``X | None`` and ``Any``; other annotations pass the value through.
    """
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return typed(value, inner[0], what, error) if len(inner) == 1 else value
    if annotation is bool:
        return boolean(value, what, error)
    if annotation is int:
        return integer(value, what, error)
    if annotation is float:
        return number(value, what, error)
    if annotation is str:
        return string(value, what, error)
    if origin is tuple and typing.get_args(annotation)[:1] == (int,):
        return int_list(value, what, error, low=-(2 ** 63))
    return value


def field_names(cls) -> tuple[str, ...]:
    """The init fields of a dataclass, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def from_table(cls, table: Any, where: str, error: ErrorType = InputError, *,
               convert: dict[str, Callable[[Any, str], Any]] | None = None,
               fixed: dict[str, Any] | None = None) -> Any:
    """Build the frozen dataclass ``cls`` from a TOML table, every key checked.

    Parameters
    ----------
    cls : a dataclass whose ``__post_init__`` checks ranges and choices.
    table : the parsed table (a dict).
    where : how the table is named in messages (``"[optim]"``, ``"config key optim"``).
    error : the error class to raise.
    convert : per key, a function ``(value, what) -> value`` used instead of
        the annotation's check (e.g. durations with units).
    fixed : keys set by the caller, not by the table (refused if the table has them).

    Returns
    -------
    An instance of ``cls``.
    """
    if not isinstance(table, dict):
        raise error(f"{where}: expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fixed = fixed or {}
    allowed = [n for n in field_names(cls) if n not in fixed]
    kwargs = dict(fixed)
    for key, value in table.items():
        if key not in allowed:
            raise error(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed) or 'none'}")
        what = f"{where.rstrip('.')}.{key}" if not where.startswith("[") else f"{where[1:-1]}.{key}"
        if convert and key in convert:
            kwargs[key] = convert[key](value, what)
        else:
            kwargs[key] = typed(value, hints.get(key, Any), what, error)
    try:
        return cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise error(f"{where}: {exc}") from None
