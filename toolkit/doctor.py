"""``toolkit doctor``: what a user pastes into a bug report."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform

from .core.hardware import cpu_features, cpu_name
from .core.threads import default_threads


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


# the parts of an install (pyproject extras) and the packages each needs
PARTS = {"runtime": ("onnxruntime", "onnx", "numpy", "soundfile", "av", "tiktoken", "tokenizers"),
         "export": ("torch", "transformers", "scipy", "pandas", "matplotlib"),
         "serve": ("fastapi", "uvicorn", "python_multipart", "prometheus_client", "httpx"),
         "gpu": ("tensorrt",), "peers": ("faster_whisper",), "ray": ("ray",)}


def installed_parts() -> dict[str, str]:
    """Each part: "yes", or "no (missing …)" — found without importing anything."""
    out = {}
    for part, packages in PARTS.items():
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        out[part] = "yes" if not missing else f"no (missing {', '.join(missing)})"
    if out["gpu"] != "yes" and _version("onnxruntime-gpu"):
        out["gpu"] = "onnxruntime-gpu only (no tensorrt)"
    return out


def collect() -> dict:
    info: dict = {
        "toolkit": _version("toolkit"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "threads_used": default_threads(),
        "cpu_int8": cpu_features(),
        "parts": installed_parts(),
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
