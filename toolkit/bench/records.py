"""Bench records: one JSON object per model × backend × precision × shape; CSV is a flat view.

Units are in the field names (``latency_ms_p50``, ``rtf``, ``peak_rss_mb``). Every record
carries ``random_init`` and the environment it was measured in.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

REQUIRED = ("model", "backend", "precision", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
            "rtf", "quality_metric", "quality_value", "quality_reference", "random_init",
            "latency_ms_samples", "environment")


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int | None = None) -> dict:
    from ..export.manifest import tool_versions
    from ..runtime.session import default_threads

    env = {"cpu": cpu_name(), "cpu_cores": os.cpu_count(),
           "threads": threads or default_threads(), "machine": platform.machine(),
           "os": platform.platform(), "gpu": gpu_name(), **tool_versions()}
    return env


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - torch without CUDA, broken driver
        pass
    return None


def write_records(records: list[dict], out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (.json, a list of records) and the CSV beside it. Atomic per file."""
    import pandas as pd

    from ..export.artifact import atomic_write_bytes, check_writable

    out = Path(out)
    check_writable(out.parent)
    if out.suffix != ".json":
        out = out.with_suffix(".json")
    atomic_write_bytes(out, (json.dumps(records, indent=2, default=_jsonable) + "\n").encode())
    flat = []
    for r in records:
        r = {k: v for k, v in r.items() if not k.endswith("_samples")}
        flat.append(r)
    df = pd.json_normalize(flat, sep=".")
    csv = out.with_suffix(".csv")
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    return out, csv


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)
