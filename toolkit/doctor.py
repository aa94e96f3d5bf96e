"""``toolkit doctor``: what a user pastes into a bug report."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


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


def collect() -> dict:
    from .bench.records import cpu_name
    from .runtime.session import default_threads

    info: dict = {
        "toolkit": _version("toolkit"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "threads_used": default_threads(),
        "cpu_int8": cpu_features(),
    }
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
                "optimum", "numpy"):
        info[pkg] = _version(pkg)
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as exc:  # noqa: BLE001 - report, never crash
        info["onnxruntime_providers"] = f"unavailable ({exc})"
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if info["gpus"]:
            cap = torch.cuda.get_device_capability(0)
            info["gpu_compute_capability"] = f"{cap[0]}.{cap[1]}"
    except Exception as exc:  # noqa: BLE001
        info["cuda_available"] = f"unknown ({exc})"
    try:
        import tensorrt  # noqa: F401  (lazy, optional)

        info["tensorrt_importable"] = True
    except Exception as exc:  # noqa: BLE001
        info["tensorrt_importable"] = f"no ({type(exc).__name__})"
    return info
