"""Progress display for long steps (export, calibration, engine build, training, sweeps).

Rich progress bars go to stderr so that ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .memory import PeakSampler, high_water_bytes

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
def step(description: str, record: list | None = None, live: bool = True) -> Iterator[None]:
    """A single long step without a known length: a spinner with the elapsed time and resident
    memory while it runs, then one line with its time and its own peak memory. ``record``: a
    list that gets ``{"step", "seconds", "peak_rss_gb"}``. ``live=False`` for a step that shows
    its own progress bars (one live display at a time): a start line instead of the spinner."""
    t0 = time.perf_counter()
    status = console.status(description) if live else contextlib.nullcontext()
    if not live:
        console.print(f"[bold]→[/] {description}")
    before = high_water_bytes()
    with status as st:
        def tick(rss: int) -> None:
            if st is not None:
                st.update(f"{description} — {time.perf_counter() - t0:.0f} s, "
                          f"RSS {rss / 1e9:.1f} GB")
        with PeakSampler(on_tick=tick) as sampler:
            yield
    dt = time.perf_counter() - t0
    # a step that set the process's high-water mark peaked exactly there (the sampler can miss
    # a spike shorter than its period); any other step peaked at what the sampler saw
    after = high_water_bytes()
    peak = max(sampler.peak, after if after > before else 0)
    console.print(f"[green]✓[/] {description} ({dt:.1f} s, peak RSS {peak / 1e9:.2f} GB)")
    if record is not None:
        record.append({"step": description, "seconds": round(dt, 1),
                       "peak_rss_gb": round(peak / 1e9, 2)})
