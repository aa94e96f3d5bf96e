"""onnxruntime GPU execution-provider options for the ``ort-cuda`` and ``ort-trt`` backends.

- ``ort_provider_options(...)``: onnxruntime CUDA / TensorRT execution-provider options for
  the ``ort-cuda`` and ``ort-trt`` backends, with the TensorRT EP's optimization profile and
  engine/timing caches filled from the artifact manifest (so it never rebuilds per shape).
- Precision, TensorRT 10 and 11 alike: no ``trt_fp16_enable`` / ``trt_int8_enable``. With both
  off, onnxruntime's TensorRT EP (>= 1.17) builds a strongly typed network, so the graph's own
  types decide — the fp16 export's fp32 islands stay fp32, the QDQ export runs int8. TensorRT 11
  (onnxruntime >= 1.27) ignores the two options anyway (its networks are always strongly
  typed), so they are never passed there; on TensorRT 10 ``weakly_typed=True`` passes them
  for the old builder-chosen mixed precision.

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
            f"{name}:{_shape_str(p[key])}" for name, p in profiles.items()
        )
    return out


def tensorrt_major() -> int | None:
    """Major version of the TensorRT that onnxruntime's TensorRT EP will load, where this
    process can tell: the ``tensorrt`` package (same libnvinfer on pip installs and JetPack), or
    the installed ``tensorrt*`` distribution's version; None when neither is there."""
    try:
        import tensorrt  # optional; lazily imported

        return int(str(tensorrt.__version__).split(".")[0])
    except (ImportError, ValueError, AttributeError):
        pass
    from importlib import metadata

    for dist in (
        "tensorrt",
        "tensorrt-cu13",
        "tensorrt-cu12",
        "tensorrt-libs",
        "tensorrt-cu12-libs",
        "tensorrt-cu13-libs",
    ):
        try:
            return int(metadata.version(dist).split(".")[0])
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return None


def _trt_precision_options(precision: str, trt_major: int | None, weakly_typed: bool) -> dict:
    if not weakly_typed:
        return {}  # strongly typed: the graph's types decide
    if trt_major is None or trt_major >= 11:
        raise ToolkitError(
            "weakly typed TensorRT builds (trt_fp16_enable / trt_int8_enable) "
            f"need TensorRT 10; this machine has TensorRT {trt_major or 'unknown'} "
            "— use the fp16 or int8 export, whose types the EP follows"
        )
    return {
        "trt_fp16_enable": str(precision == "fp16"),
        "trt_int8_enable": str(precision == "int8"),
    }


def ort_provider_options(
    backend: str,
    manifest_graph: Mapping,
    precision: str,
    cache_dir: str | Path | None = None,
    device_id: int = 0,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    trt_major: int | None = None,
    weakly_typed: bool = False,
) -> dict[str, dict]:
    """Provider options per provider name for ``OrtSession(provider_options=...)``.

    ort-trt: precision from the graph (see the module notes; ``weakly_typed`` on TensorRT 10
    only); engine and timing caches under ``cache_dir`` (default ``$TOOLKIT_CACHE/ort-trt`` or
    ``~/.cache/toolkit/ort-trt``); one explicit optimization profile from the manifest's
    min/opt/max so the EP builds once and never per shape. ``trt_major`` defaults to
    ``tensorrt_major()``.
    """
    cuda = {
        "device_id": str(device_id),
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "do_copy_in_default_stream": "True",
    }
    if backend == "ort-cuda":
        return {"CUDAExecutionProvider": cuda}
    if backend != "ort-trt":
        raise ToolkitError(
            f"no GPU provider options for backend {backend!r}; use ort-cuda or ort-trt"
        )
    if weakly_typed and trt_major is None:
        trt_major = tensorrt_major()
    if cache_dir is None:
        base = os.environ.get("TOOLKIT_CACHE") or Path.home() / ".cache" / "toolkit"
        cache_dir = Path(base) / "ort-trt"
    cache_dir = Path(cache_dir)
    trt = {
        "device_id": str(device_id),
        **_trt_precision_options(precision, trt_major, weakly_typed),
        "trt_max_workspace_size": str(int(workspace_mb) << 20),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        **profile_shape_strings(manifest_graph),
    }
    return {"TensorrtExecutionProvider": trt, "CUDAExecutionProvider": cuda}
