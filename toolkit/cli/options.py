"""Command-line options from the library's dataclasses, and numbers checked as they are parsed.

``number(...)`` is a Typer option whose value must be a finite number in a range (every
integer option has an upper bound), refused in one line otherwise. ``with_options(name=Cls)``
adds an option for every ``core.options.option`` field of ``Cls`` to a command and hands the
command one filled-in ``Cls`` as ``name`` — so long option lists are written once, on the
dataclass the library takes, with their help, flag and range.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.errors import ToolkitError
from ..core.options import INT_MAX, check_number, flag_of
from .lazy import click_exceptions


class NumberParser:
    """Typer ``parser``: text → int/float, finite and in range, or a one-line usage error."""

    def __init__(self, flag: str, low, high, integer: bool):
        self.flag, self.low, self.high, self.integer = flag, low, high, integer
        self.__name__ = "integer" if integer else "number"   # Typer shows it as the metavar

    def __call__(self, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = value
        else:
            try:
                v = int(str(value), 10) if self.integer else float(str(value))
            except ValueError:
                what = "a whole number" if self.integer else "a number"
                raise click_exceptions.UsageError(
                    f"{self.flag} takes {what}, not {value!r}") from None
        try:
            check_number(self.flag, v, self.low, self.high, integer=self.integer)
        except ToolkitError as exc:
            raise click_exceptions.UsageError(str(exc)) from None
        return v


def number(flag: str, help: str, low=None, high=None, *, integer: bool = True,
           short: str | None = None):
    """A numeric Typer option (use in ``Annotated[int, number(...)]``)."""
    decls = [flag] + ([short] if short else [])
    if integer and high is None:
        high = INT_MAX
    return typer.Option(*decls, help=help, parser=NumberParser(flag, low, high, integer),
                        metavar="INTEGER" if integer else "NUMBER")


def _base_type(annotation):
    """``int`` for ``int``, ``int | None``, ``Optional[int]``; else the annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _param(f: dataclasses.Field, annotation) -> inspect.Parameter:
    meta, flag = f.metadata, flag_of(f)
    base = _base_type(annotation)
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = inspect.Parameter.empty            # a required option
    if base is bool:
        decl = f"{flag}/--no-{flag[2:]}" if meta.get("negatable") else flag
        opt = typer.Option(decl, help=meta["help"])
        kind = bool
    elif base in (int, float):
        opt = number(flag, meta["help"], meta.get("min"), meta.get("max"),
                     integer=base is int)
        kind = Optional[base]
    elif base is Path:
        opt = typer.Option(flag, help=meta["help"])
        kind = Path if default is inspect.Parameter.empty else Optional[Path]
    else:
        opt, kind = typer.Option(flag, help=meta["help"]), Optional[str]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, opt])


def cli_fields(cls) -> list[tuple[dataclasses.Field, object]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)
            if f.metadata.get("help") and f.metadata.get("cli", True)]


def with_options(**groups):
    """Decorator: for each ``name=Cls``, the command gets ``Cls``'s options and receives
    ``name=Cls(**their values)`` (a ``ToolkitError`` from the dataclass is a one-line error)."""

    def wrap(fn):
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)   # (annotations are strings)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in sig.parameters.values()
               if p.name not in groups and p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in own}
        generated: dict[str, list[str]] = {}
        extra = []
        for name, cls in groups.items():
            generated[name] = []
            for f, annotation in cli_fields(cls):
                if f.name in taken:
                    raise TypeError(f"option {f.name} of {cls.__name__} clashes in {fn.__name__}")
                taken.add(f.name)
                generated[name].append(f.name)
                extra.append(_param(f, annotation))

        @functools.wraps(fn)
        def command(**kwargs):
            for name, cls in groups.items():
                kwargs[name] = cls(**{k: kwargs.pop(k) for k in generated[name]})
            return fn(**kwargs)

        command.__signature__ = sig.replace(parameters=own + extra)
        command.__annotations__ = {p.name: p.annotation for p in own + extra}
        return command

    return wrap
