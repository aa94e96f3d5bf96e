"""Bench records: one JSON object per model × backend × precision × shape; CSV is a flat view.

One schema for every family: ``COMMON_FIELDS`` (set by the harness) plus the fields the family's
bench spec declares; ``write_records`` refuses a record that misses a common field or carries
an undeclared one. Units are in the field names (``latency_ms_p50``, ``rtf``, ``peak_rss_mb``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..core.files import atomic_write_bytes, check_output_file, check_writable


def percentile_fields(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{s}" for s in ("p50", "p90", "p99", "mean"))


COMMON_FIELDS = (
    "model", "family", "backend", "precision", "shape", "weights", "random_init", "source",
    "artifact", "runs", "warmup", *percentile_fields("latency_ms"), "latency_ms_samples",
    "peak_rss_mb", "rtf", "quality_metric", "quality_value", "quality_reference", "environment",
    "error",    # None, or why the case produced no figures (it raised or its process died)
)
# present only where a backend measures them (GPU)
# present on rows that ran an exported artifact: how long its export took and its peak memory
EXPORT_FIELDS = ("export_seconds", "export_peak_rss_gb")
DEVICE_FIELDS = (*percentile_fields("device_ms"), "device_ms_samples", "device_peak_mb",
                 "device_memory_counts")


def check_schema(records: Iterable[dict], family_fields: Iterable[str]) -> None:
    """Every record has the common fields, and nothing that is neither common, device, a
    ``speedup_vs_*`` ratio nor declared by the family (a typo'd key fails here, not in a plot)."""
    allowed = set(COMMON_FIELDS) | set(DEVICE_FIELDS) | set(EXPORT_FIELDS) | set(family_fields)
    for r in records:
        missing = [k for k in COMMON_FIELDS if k not in r]
        extra = [k for k in r if k not in allowed and not k.startswith("speedup_vs_")]
        if missing or extra:
            raise ValueError(f"bench record {r.get('backend')}/{r.get('precision')} does not "
                             f"match the schema: missing {missing}, undeclared {extra}")


def record_paths(out: str | Path) -> list[Path]:
    """The files a bench run writes for ``--out``: the records (.json), their CSV, the PNG —
    checked before the run (each may replace a regular file of that name, nothing else)."""
    out = Path(out)
    out = out if out.suffix == ".json" else out.with_suffix(".json")
    check_writable(out.parent, "--out")
    return [check_output_file(p, "--out") for p in (out, out.with_suffix(".csv"),
                                                      out.with_suffix(".png"))]


def write_records(records: list[dict], out: str | Path,
                  family_fields: Iterable[str] = ()) -> tuple[Path, Path]:
    """Write ``out`` (.json, a list of records) and the CSV beside it. Atomic per file."""
    check_schema(records, family_fields)
    out = Path(out)
    check_writable(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)    # --out in a folder not made yet
    if out.suffix != ".json":
        out = out.with_suffix(".json")
    atomic_write_bytes(out, (json.dumps(records, indent=2, default=_jsonable) + "\n").encode())
    flat = [{k: v for k, v in r.items() if not k.endswith("_samples")} for r in records]
    csv = out.with_suffix(".csv")
    atomic_write_bytes(csv, pd.json_normalize(flat, sep=".").to_csv(index=False).encode())
    return out, csv


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
