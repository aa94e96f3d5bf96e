"""Commands loaded when they are asked for: ``toolkit --help`` imports neither the server
(FastAPI, uvicorn) nor the TensorRT builder (onnx) nor any training code (PyTorch)."""

from __future__ import annotations

from typing import Callable

import typer
from typer.core import TyperCommand, TyperGroup

try:                                   # typer ≥ 0.24 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:                    # pragma: no cover - older typer on the real click
    from click import exceptions as click_exceptions

from .. import registry

__all__ = ["LazyCommand", "LazyGroup", "click_exceptions", "from_module", "single_command"]


def single_command(name: str, fn, help: str | None = None):
    """The click command Typer makes of ``fn``."""
    app = typer.Typer(add_completion=False)
    app.command(name, help=help)(fn)
    return typer.main.get_command(app)


class LazyCommand(TyperCommand):
    """Stands for a command in help listings (name and summary) and builds the real one when
    it runs or its own help is asked for."""

    def __init__(self, name: str, make: Callable[[], object], summary: str):
        super().__init__(name, help=summary, short_help=summary)
        self._make = make
        self._real = None

    def real(self):
        if self._real is None:
            self._real = self._make()
        return self._real

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real().make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """A Typer group with commands built on first use (``lazy()``: ``{name: (make,
    summary)}``); listing them in help costs nothing."""

    def lazy(self) -> dict[str, tuple[Callable[[], object], str]]:
        return {}

    def list_commands(self, ctx) -> list[str]:
        eager = super().list_commands(ctx)
        return eager + [n for n in self.lazy() if n not in eager]

    def get_command(self, ctx, name: str):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in self.lazy():
            make, summary = self.lazy()[name]
            cmd = LazyCommand(name, make, summary)
        return cmd


def from_module(module: str, name: str, function: str | None = None):
    """A command built from ``module.function`` when it is first asked for."""
    def make():
        return single_command(name, registry.resolve(f"{module}:{function or name}",
                                                     f"`toolkit {name}`"))
    return make
