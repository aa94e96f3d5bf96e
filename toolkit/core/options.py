"""Options declared once, on the dataclasses the library takes.

A field made with ``option(...)`` carries its help text, its command-line flag and its range.
The library checks a filled-in dataclass with ``check_fields`` (so the server and library
callers get the same limits as the command line), and the CLI builds its options from the same
fields (``toolkit/cli/options.py``) and checks each value as it is parsed, with the same words.
Every number must be finite; every integer has an upper bound.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import ToolkitError

INT_MAX = 2**31 - 1          # the default upper bound of an integer option


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           min: float | None = None, max: float | None = None, flag: str | None = None,
           choices: tuple | None = None, negatable: bool = False,
           default_factory: Any = dataclasses.MISSING, cli: bool = True) -> Any:
    """A dataclass field with what the command line needs: ``help``, ``flag`` (default
    ``--field-name``), the accepted range ``min``..``max`` or ``choices``, ``negatable`` (a
    ``--x/--no-x`` switch); ``cli=False`` keeps a library-only field off the command line."""
    meta = {"help": help, "min": min, "max": max, "flag": flag, "choices": choices,
            "negatable": negatable, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def range_text(low: float | None, high: float | None) -> str:
    parts = []
    if low is not None:
        parts.append("0 or more" if low == 0 else f"at least {_fmt(low)}")
    if high is not None:
        parts.append(f"at most {_fmt(high)}")
    return " and ".join(parts)


def check_number(flag: str, value, low: float | None = None, high: float | None = None,
                 integer: bool = False) -> None:
    """One-line error unless ``value`` is finite and in ``low``..``high`` (integers: at most
    ``INT_MAX`` unless ``high`` says otherwise)."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolkitError(f"{flag} must be a finite number (got {value})")
    if integer and high is None:
        high = INT_MAX
    if (low is not None and value < low) or (high is not None and value > high):
        shown = value if len(str(value)) <= 24 else f"{str(value)[:20]}…"
        raise ToolkitError(f"{flag} must be {range_text(low, high)} (got {shown})")


def check_fields(obj) -> None:
    """Every ``option`` field of the dataclass ``obj`` within its declared range."""
    for f in dataclasses.fields(obj):
        if "help" not in f.metadata:
            continue
        value = getattr(obj, f.name)
        meta = f.metadata
        if meta.get("choices") and value is not None and value not in meta["choices"]:
            raise ToolkitError(f"{flag_of(f)} must be one of {', '.join(map(str, meta['choices']))}"
                               f" (got {value!r})")
        if isinstance(value, (int, float)):
            check_number(flag_of(f), value, meta.get("min"), meta.get("max"),
                         integer=isinstance(value, int))
