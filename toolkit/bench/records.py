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


# CPU features that decide which int8 kernels onnxruntime (MLAS) runs: /proc/cpuinfo flag names.
_X86_FEATURES = {"avx2": "avx2", "avx512": "avx512f", "avx512_vnni": "avx512_vnni",
                 "avx_vnni": "avx_vnni", "amx_int8": "amx_int8"}
_ARM_FEATURES = {"neon": "asimd", "dot_product": "asimddp", "i8mm": "i8mm", "sve": "sve"}


def cpu_features(cpuinfo: str | None = None, machine: str | None = None) -> dict:
    """{feature: bool} for the int8-relevant CPU features, and what that means for int8."""
    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
            break
    arm = machine in ("aarch64", "arm64")
    table = _ARM_FEATURES if arm else _X86_FEATURES
    feats = {name: flag in flags for name, flag in table.items()}
    if arm:
        kernel = ("int8 dot-product kernels (sdot/udot)" if feats["dot_product"] else
                  "no int8 dot product: int8 runs widened, expect little or no speed-up")
    elif feats["avx512_vnni"] or feats["avx_vnni"] or feats["amx_int8"]:
        kernel = "VNNI/AMX int8 kernels (u8×s8 without intermediate saturation)"
    elif feats["avx2"]:
        kernel = ("AVX2 only: u8×s8 pair sums saturate int16 unless weights use a 7-bit range; "
                  "int8 speed-ups measured on VNNI machines do not carry over")
    else:
        kernel = "no AVX2: int8 runs on generic kernels"
    return {"features": feats, "int8_kernels": kernel}


def environment(threads: int | None = None) -> dict:
    from ..export.manifest import tool_versions
    from ..runtime.session import default_threads

    env = {"cpu": cpu_name(), "cpu_cores": os.cpu_count(),
           "threads": threads or default_threads(), "machine": platform.machine(),
           "os": platform.platform(), "gpu": gpu_name(), **tool_versions(),
           "cpu_int8_features": [f for f, on in cpu_features()["features"].items() if on]}
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
