"""What this machine is: CPU name and int8-relevant features, GPU identity, tool versions.

Read by ``toolkit doctor``, by every bench record (``environment``) and by the TensorRT engine
cache key. CUDA is queried lazily (cuda-python, else torch.cuda); the CPU install needs neither.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
from pathlib import Path

from .errors import MissingDependency
from .threads import default_threads


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


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - torch without CUDA, broken driver
        pass
    return None


def cuda_runtime():
    """The CUDA runtime bindings of cuda-python (new and old module layout), or None."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python
        return cudart
    except ImportError:
        return None


def gpu_identity(device: int = 0) -> dict:
    """``{"name": ..., "compute_capability": "8.7"}`` of CUDA device ``device``.

    Raises MissingDependency when no CUDA device can be queried.
    """
    cudart = cuda_runtime()
    if cudart is not None:
        err, prop = cudart.cudaGetDeviceProperties(device)
        if int(err) == 0:
            name = (prop.name.decode(errors="replace") if isinstance(prop.name, bytes)
                    else str(prop.name))
            return {"name": name.strip("\x00 ").strip(),
                    "compute_capability": f"{prop.major}.{prop.minor}"}
    try:
        import torch

        if torch.cuda.is_available():
            cap = torch.cuda.get_device_capability(device)
            return {"name": torch.cuda.get_device_name(device),
                    "compute_capability": f"{cap[0]}.{cap[1]}"}
    except ImportError:
        pass
    raise MissingDependency("no CUDA device found (cuda-python and torch.cuda see none); run "
                            "this on the GPU machine / Jetson with the CUDA driver installed")


def tool_versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("toolkit", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu",
                "tensorrt", "optimum"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def environment(threads: int | None = None) -> dict:
    """The machine and software a measurement was taken on (every bench record carries it)."""
    return {"cpu": cpu_name(), "cpu_cores": os.cpu_count(),
            "threads": threads or default_threads(), "machine": platform.machine(),
            "os": platform.platform(), "gpu": gpu_name(), **tool_versions(),
            "cpu_int8_features": [f for f, on in cpu_features()["features"].items() if on]}


def is_jetson() -> bool:
    """An NVIDIA Jetson (Tegra SoC: the GPU shares system memory with the CPU and the OS)."""
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return "jetson" in Path("/proc/device-tree/model").read_text(errors="replace").lower()
    except OSError:
        return False
