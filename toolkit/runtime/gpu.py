"""GPU helpers shared by the TensorRT builder and the GPU backends.

- ``gpu_identity()``: name + compute capability of the CUDA device (the engine cache key);
  via cuda-python (``cuda.bindings.runtime`` or the older ``cuda.cudart``), else torch.cuda.
- ``ort_provider_options(...)``: onnxruntime CUDA / TensorRT execution-provider options for
  the ``ort-cuda`` and ``ort-trt`` backends, with the TensorRT EP's optimization profile and
  engine/timing caches filled from the artifact manifest (so it never rebuilds per shape).
- ``DeviceIOBinding``: onnxruntime I/O binding that keeps inputs/outputs as ``OrtValue`` on the
  device between calls (e.g. a Whisper KV cache across decode steps).

Everything here imports CUDA / onnxruntime-gpu lazily; the CPU install never needs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import MissingDependency, ToolkitError

DEFAULT_WORKSPACE_MB = 2048


# --------------------------------------------------------------------------------------------
# Which GPU is this?
# --------------------------------------------------------------------------------------------

def _cudart():
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
    cudart = _cudart()
    if cudart is not None:
        err, prop = cudart.cudaGetDeviceProperties(device)
        if int(err) == 0:
            name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
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


class DeviceIOBinding:
    """Run an ``OrtSession`` with inputs/outputs bound on a device (``OrtValue``).

    ``run(feeds)`` accepts NumPy arrays (copied to the device once) or ``OrtValue``s already
    on the device (no copy), and returns ``{name: OrtValue}`` left on the device — feed an
    output straight back in as the next step's input (Whisper's KV cache) and call
    ``.numpy()`` only on what the host needs. ``device`` is ``"cuda"`` on a GPU; ``"cpu"``
    works too (same code path, used by the tests on this CPU-only machine).
    """

    def __init__(self, session, device: str = "cuda", device_id: int = 0):
        import onnxruntime as ort

        self._ort = ort
        self.session = session
        self.sess = session.sess
        self.device = device
        self.device_id = device_id
        self._types = {t.name: t.dtype for t in session.inputs}

    def to_device(self, array: np.ndarray, name: str | None = None):
        a = np.ascontiguousarray(array)
        want = self._types.get(name) if name else None
        if want in ("float32", "float16", "int64", "int32", "bool") and a.dtype != np.dtype(want):
            a = a.astype(want)
        return self._ort.OrtValue.ortvalue_from_numpy(a, self.device, self.device_id)

    def run(self, feeds: Mapping[str, object]) -> dict[str, object]:
        self.session._check_feeds(feeds)
        io = self.sess.io_binding()
        for name in self.session.input_names:
            v = feeds[name]
            if not isinstance(v, self._ort.OrtValue):
                v = self.to_device(np.asarray(v), name)
            io.bind_ortvalue_input(name, v)
        for name in self.session.output_names:
            io.bind_output(name, self.device, self.device_id)
        self.sess.run_with_iobinding(io)
        return dict(zip(self.session.output_names, io.get_outputs()))


def require_ort_gpu(backend: str) -> None:
    """One-line error when the onnxruntime build lacks the provider ``backend`` needs."""
    import onnxruntime as ort

    want = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}[backend]
    if want not in ort.get_available_providers():
        raise MissingDependency(f"backend {backend} needs onnxruntime-gpu ({want}); "
                                "pip uninstall onnxruntime && pip install onnxruntime-gpu "
                                "(on Jetson: the JetPack 6 wheel, see docs/tensorrt.md)")
