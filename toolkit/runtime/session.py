"""One Session interface for every backend.

A Session runs one graph: ``run(feeds) -> outputs`` with NumPy arrays keyed by the graph's
input/output names (the names in the artifact manifest). Pipelines (Whisper decode loop,
Grad-TTS sampler, SVT embedding) only ever talk to this interface, so the backends differ in
numerics and speed, never in logic.

``run`` and ``run_device`` are the public, checked entries (every input present); a backend
implements ``_run_impl`` and, if it can keep tensors on a device between calls (a KV cache),
``_run_device_impl`` + ``to_host``. By default ``run_device`` is ``run`` (host arrays).

Backends:
- ``torch``   — the PyTorch module the graph was exported from (eager, CPU or CUDA;
  ``runtime/torch_session.py``, the only session that imports PyTorch)
- ``ort``     — onnxruntime, CPU execution provider
- ``ort-cuda``/``ort-trt`` — onnxruntime CUDA / TensorRT execution providers (GPU extra)
- ``trt``     — native TensorRT engine (GPU extra; see ``runtime/tensorrt.py``)

Heavy optional imports happen inside the backends, so the CPU install never needs them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..core.errors import MissingDependency, ToolkitError
from ..core.threads import default_threads


@dataclass
class TensorInfo:
    name: str
    dtype: str               # numpy dtype name, e.g. "float32", "int64"
    shape: list              # ints for static dims, strings for named dynamic axes


class Session(abc.ABC):
    """Runs one graph. Context manager; ``run`` maps input names to arrays."""

    backend: str = "?"
    precision: str = "fp32"

    _in: list[TensorInfo]        # set by each backend's constructor
    _out: list[TensorInfo]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._in

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._out

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs on the host (float16 returned as float32), keyed by output name."""
        self._check_feeds(feeds)
        return self._run_impl(feeds)

    def run_device(self, feeds: Mapping[str, object]) -> dict[str, object]:
        """Like ``run``, but a backend with device memory leaves the outputs there (feed them
        back as inputs; ``to_host`` copies one out). Default: the host arrays of ``run``."""
        self._check_feeds(feeds)
        return self._run_device_impl(feeds)

    def to_host(self, value) -> np.ndarray:
        """A ``run_device`` output as a host array (float32 for float outputs)."""
        a = np.asarray(value)
        return a.astype(np.float32) if a.dtype == np.float16 else a

    @abc.abstractmethod
    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _run_device_impl(self, feeds: Mapping[str, object]) -> dict[str, object]:
        return self._run_impl(feeds)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def close(self) -> None:
        """Release backend resources (device buffers, engines)."""

    # -- device figures (GPU backends; trtexec-style "GPU compute time" and device memory) -----
    def device_stats(self) -> dict:
        """Device figures accumulated since the last ``reset_device_stats()``.

        ``{"device_ms": float | None, "device_runs": int, "device_peak_mb": float | None,
        "device_memory": str | None}``: ``device_ms`` = summed device compute time of the
        ``run``/``run_device`` calls (CUDA events around the enqueue, so host-side work is
        excluded), ``device_peak_mb`` = peak device memory, ``device_memory`` = what that
        peak counts (backends measure different things; see docs/tensorrt.md). ``None`` where
        the backend cannot measure it — always on CPU backends, which have no device.
        """
        return {"device_ms": None, "device_runs": 0, "device_peak_mb": None, "device_memory": None}

    def reset_device_stats(self) -> None:
        """Start a new accumulation window for ``device_stats()`` (no-op on CPU backends)."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ToolkitError(f"{self.backend} session is missing inputs {missing}; "
                               f"the graph takes {self.input_names}")


# --------------------------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------------------------

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(double)": "float64",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8"}

ORT_PROVIDERS = {"ort": ["CPUExecutionProvider"],
                 "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                 "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                             "CPUExecutionProvider"]}


class OrtSession(Session):
    """onnxruntime InferenceSession behind the Session interface.

    ``provider_options`` per provider (e.g. the TensorRT EP's profile shapes and engine cache,
    filled from the manifest by ``runtime/gpu.py``) pass straight through.
    """

    def __init__(self, path: str | Path, backend: str = "ort", precision: str = "fp32",
                 threads: int | None = None, provider_options: Mapping[str, dict] | None = None,
                 optimization: str = "all"):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ToolkitError(f"ONNX graph {path} does not exist; re-export the artifact "
                               "with `toolkit export`")
        providers = ORT_PROVIDERS.get(backend)
        if providers is None:
            raise ToolkitError(f"unknown onnxruntime backend {backend!r}; use one of "
                               f"{sorted(ORT_PROVIDERS)}")
        available = ort.get_available_providers()
        if providers[0] not in available:
            raise MissingDependency(
                f"backend {backend} needs onnxruntime's {providers[0]}, but this install has "
                f"{available}; install the GPU build: pip install 'toolkit[gpu]' "
                "(and uninstall the CPU onnxruntime)")
        self.backend = backend
        self.precision = precision
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or default_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
        opts = [dict((provider_options or {}).get(p, {})) for p in providers]
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=providers,
                                             provider_options=opts)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ToolkitError(f"onnxruntime cannot load {path.name}: {first[:300]} — the file "
                               "is corrupt or from an incompatible export; re-export it") from None
        self._in = [TensorInfo(i.name, _ORT_TYPES.get(i.type, i.type), list(i.shape))
                    for i in self.sess.get_inputs()]
        self._out = [TensorInfo(o.name, _ORT_TYPES.get(o.type, o.type), list(o.shape))
                     for o in self.sess.get_outputs()]
        self._in_dtype = {t.name: np.dtype(t.dtype) for t in self._in if t.dtype in
                          ("float32", "float16", "int64", "int32", "bool")}
        # GPU providers: device-wide used memory sampled after each run (see device_stats)
        self._mem_info = _torch_mem_get_info() if backend != "ort" else None
        self._peak_used = None
        self._runs = 0

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cast = {}
        for name in self.input_names:
            a = np.asarray(feeds[name])
            want = self._in_dtype.get(name)
            cast[name] = a.astype(want, copy=False) if want is not None and a.dtype != want else a
        out = self.sess.run(None, cast)
        self._runs += 1
        if self._mem_info is not None:
            free, total = self._mem_info()
            used = (total - free) / 2**20
            self._peak_used = used if self._peak_used is None else max(self._peak_used, used)
        return {n: (o.astype(np.float32) if o.dtype == np.float16 else o)
                for n, o in zip(self.output_names, out)}

    def device_stats(self) -> dict:
        """ort-cuda / ort-trt: no device compute time (onnxruntime exposes no CUDA events on
        its stream; use its profiler); ``device_peak_mb`` = peak device-wide used memory
        (cudaMemGetInfo through torch.cuda, sampled after each run: includes the CUDA
        context, other sessions and other processes) when torch sees CUDA, else None."""
        if self.backend == "ort":
            return super().device_stats()
        return {"device_ms": None, "device_runs": self._runs, "device_peak_mb": self._peak_used,
                "device_memory": ("device-wide used memory (cudaMemGetInfo via torch.cuda)"
                                  if self._mem_info is not None else None)}

    def reset_device_stats(self) -> None:
        self._peak_used = None
        self._runs = 0


def _torch_mem_get_info():
    """``torch.cuda.mem_get_info`` (free, total bytes) when torch sees a CUDA device, else None."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.mem_get_info
    except ImportError:
        pass
    return None
