"""Progress display for long steps (export, calibration, engine build, training, sweeps).

Rich progress bars go to stderr so that ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

T = TypeVar("T")

console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), console=console, transient=False)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    total = total if total is not None else len(items)  # type: ignore[arg-type]
    with _progress() as prog:
        task = prog.add_task(description, total=total, info="")
        for item in items:
            yield item
            prog.advance(task)


class Steps:
    """A progress bar whose advance carries a status text (losses, current case)."""

    def __init__(self, description: str, total: int):
        self._prog = _progress()
        self._task = self._prog.add_task(description, total=total, info="")

    def __enter__(self) -> "Steps":
        self._prog.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._prog.__exit__(*exc)

    def advance(self, info: str = "", n: int = 1) -> None:
        self._prog.update(self._task, advance=n, info=info)


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """A single long step without a known length: prints start and elapsed time."""
    t0 = time.perf_counter()
    with console.status(description):
        yield
    console.print(f"[green]✓[/] {description} ({time.perf_counter() - t0:.1f} s)")
