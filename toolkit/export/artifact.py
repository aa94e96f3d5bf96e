"""Cached exports: reuse an artifact exported from the same weights, precision and revision."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.markup import escape

from ..core.errors import ToolkitError
from ..core.files import locked
from ..core.progress import console
from .manifest import load_manifest


def is_current(out: str | Path, family: str, source: dict, precision: str, revision: int,
               verify: bool = True) -> bool:
    """Whether ``out`` already holds the export ``cached_export`` would make (``verify``: the
    files' hashes too; without, the caller opens it with ``open_artifact``, which checks them)."""
    try:
        m = load_manifest(out, family=family, verify_hashes=verify)
    except ToolkitError:
        return False
    return (m.get("source") == source and m.get("precision") == precision
            and m.get("export_revision") == revision)


def cached_export(out: str | Path, family: str, source: dict, precision: str, revision: int,
                  export: Callable[[Path], object]) -> Path:
    """Reuse the artifact at ``out`` if it was exported from the same weights (``source``),
    at ``precision``, by the same export revision; otherwise call ``export(out)``.

    Bench commands use this so repeated runs do not re-export, and a changed graph (revision
    bump) or other weights never reuse a stale artifact.
    """
    out = Path(out)
    with locked(out):  # two first runs exporting the same model: one exports, one reuses
        if is_current(out, family, source, precision, revision):
            console.print(f"[dim]reusing {escape(str(out))} ({precision})[/]")
            return out
        console.print(f"exporting {family} {precision} graphs to {escape(str(out))}")
        export(out)
    return out
