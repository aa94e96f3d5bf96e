"""Rich tables for bench records, with the metric definitions printed under them."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console
from rich.table import Table


def _fmt(v, spec: str = ".2f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def print_table(records: Sequence[dict], columns: Sequence[tuple[str, str, str]], title: str,
                notes: Sequence[str] = (), console: Console | None = None) -> None:
    """``columns``: (header, record key, format spec)."""
    console = console or Console()
    table = Table(title=title)
    for header, _, _ in columns:
        table.add_column(header, justify="left" if header in ("backend", "precision", "shape")
                         else "right")
    for r in records:
        table.add_row(*[_fmt(r.get(key), spec) for _, key, spec in columns])
    console.print(table)
    for n in notes:
        console.print(f"[dim]{n}[/]")
