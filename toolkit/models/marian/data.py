"""The shared English–Portuguese pairs (``shared/data/translation/en-pt.tsv``: columns
``package``, ``en``, ``pt``), and any TSV laid out the same way."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ...core.errors import ToolkitError


def default_pairs_file() -> Path:
    env = os.environ.get("TOOLKIT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return root / "translation" / "en-pt.tsv"


def read_pairs(path: str | Path | None = None, source: str = "en",
               target: str = "pt") -> list[tuple[str, str]]:
    """(source text, reference) pairs of a TSV with a header naming the two languages'
    columns; the reverse direction reads the same file the other way round."""
    path = Path(path) if path is not None else default_pairs_file()
    if not path.is_file():
        raise ToolkitError(f"no translation pairs at {path}; set TOOLKIT_SHARED_DATA to the "
                           "shared data folder or give --data a TSV with a header row naming "
                           f"its '{source}' and '{target}' columns")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        cols = rows.fieldnames or []
        if source not in cols or target not in cols:
            raise ToolkitError(f"{path} has columns {', '.join(cols) or 'none'}; it needs "
                               f"'{source}' and '{target}' (a header row, tab-separated)")
        pairs = [(r[source].strip(), r[target].strip()) for r in rows
                 if (r.get(source) or "").strip() and (r.get(target) or "").strip()]
    if not pairs:
        raise ToolkitError(f"{path} holds no {source}–{target} pairs")
    return pairs
