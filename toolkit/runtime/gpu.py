"""onnxruntime GPU execution-provider options for the ``ort-cuda`` and ``ort-trt`` backends.

- ``ort_provider_options(...)``: onnxruntime CUDA / TensorRT execution-provider options for
  the ``ort-cuda`` and ``ort-trt`` backends, with the TensorRT EP's optimization profile and
  engine/timing caches filled from the artifact manifest (so it never rebuilds per shape).

Device-resident decoding (KV cache kept on the GPU between steps) is done by the native TensorRT
backend's ``run_device``; the onnxruntime GPU backends copy through the host each step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from ..core.errors import ToolkitError

DEFAULT_WORKSPACE_MB = 2048


# --------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------
# onnxruntime CUDA / TensorRT execution providers
# --------------------------------------------------------------------------------------------

def _shape_str(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def profile_shape_strings(manifest_graph: Mapping) -> dict[str, str]:
    """TensorRT EP explicit-profile strings from a manifest graph's ``trt_profiles``.

    ``{"trt_profile_min_shapes": "x:1x1x16,y:...", "trt_profile_opt_shapes": ..., ...}``;
    empty when the graph has no dynamic inputs.
    """
    profiles = manifest_graph.get("trt_profiles") or {}
    if not profiles:
        return {}
    out = {}
    for key in ("min", "opt", "max"):
        out[f"trt_profile_{key}_shapes"] = ",".join(
            f"{name}:{_shape_str(p[key])}" for name, p in profiles.items())
    return out


def ort_provider_options(backend: str, manifest_graph: Mapping, precision: str,
                         cache_dir: str | Path | None = None, device_id: int = 0,
                         workspace_mb: int = DEFAULT_WORKSPACE_MB) -> dict[str, dict]:
    """Provider options per provider name for ``OrtSession(provider_options=...)``.

    ort-trt: fp16 / int8 (explicit, from the QDQ graph — no calibration table) from the
    precision; engine and timing caches under ``cache_dir`` (default
    ``$TOOLKIT_CACHE/ort-trt`` or ``~/.cache/toolkit/ort-trt``); one explicit optimization
    profile from the manifest's min/opt/max so the EP builds once and never per shape.
    """
    cuda = {"device_id": str(device_id), "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "True"}
    if backend == "ort-cuda":
        return {"CUDAExecutionProvider": cuda}
    if backend != "ort-trt":
        raise ToolkitError(f"no GPU provider options for backend {backend!r}; use ort-cuda or ort-trt")
    if cache_dir is None:
        base = os.environ.get("TOOLKIT_CACHE") or Path.home() / ".cache" / "toolkit"
        cache_dir = Path(base) / "ort-trt"
    cache_dir = Path(cache_dir)
    trt = {
        "device_id": str(device_id),
        "trt_fp16_enable": str(precision == "fp16"),
        "trt_int8_enable": str(precision == "int8"),
        "trt_max_workspace_size": str(int(workspace_mb) << 20),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        **profile_shape_strings(manifest_graph),
    }
    return {"TensorrtExecutionProvider": trt, "CUDAExecutionProvider": cuda}
