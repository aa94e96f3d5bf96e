"""The ``torch`` backend: the PyTorch module a graph is exported from, behind the Session
interface. The only session that needs PyTorch — opened for a model, never for an artifact."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch

from ..core.errors import ToolkitError
from ..core.threads import default_threads
from .session import Session, TensorInfo


class TorchSession(Session):
    """Runs the PyTorch module a graph is exported from: ``module(*inputs) -> tuple(outputs)``.

    ``input_names``/``output_names`` give the positional order (the same as the ONNX export).
    """

    backend = "torch"

    def __init__(self, module, input_names: Sequence[str], output_names: Sequence[str],
                 precision: str = "fp32", device: str = "cpu", threads: int | None = None,
                 input_dtypes: Mapping[str, str] | None = None):
        if precision not in ("fp32", "fp16", "bf16"):
            raise ToolkitError(f"the torch backend runs fp32, fp16 or bf16, not {precision}; "
                               "int8 runs on onnxruntime (QDQ graph) or TensorRT")
        torch.set_num_threads(threads or default_threads())
        self.precision = precision
        self.device = torch.device(device)
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16,
                       "bf16": torch.bfloat16}[precision]
        self.module = module.eval().to(self.device)
        if precision != "fp32":
            self.module = self.module.to(self._dtype)
        self._in = [TensorInfo(n, (input_dtypes or {}).get(n, "float32"), []) for n in input_names]
        self._out = [TensorInfo(n, "float32", []) for n in output_names]
        self._cuda = self.device.type == "cuda"
        self._dev_ms, self._dev_runs = 0.0, 0

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = []
        for info in self._in:
            t = torch.from_numpy(np.ascontiguousarray(feeds[info.name])).to(self.device)
            if t.is_floating_point():
                t = t.to(self._dtype)
            args.append(t)
        if self._cuda:  # device compute time of the module call, like trtexec's GPU compute
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
        with torch.inference_mode():
            out = self.module(*args)
        if self._cuda:
            end.record()
        if isinstance(out, torch.Tensor):
            out = (out,)
        result = {info.name: _to_numpy(o) for info, o in zip(self._out, out)}
        if self._cuda:
            end.synchronize()
            self._dev_ms += float(start.elapsed_time(end))
            self._dev_runs += 1
        return result

    def device_stats(self) -> dict:
        if not self._cuda:
            return super().device_stats()
        return {"device_ms": self._dev_ms, "device_runs": self._dev_runs,
                "device_peak_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
                "device_memory": "torch.cuda.max_memory_allocated (torch's caching allocator)"}

    def reset_device_stats(self) -> None:
        if self._cuda:
            self._dev_ms, self._dev_runs = 0.0, 0
            torch.cuda.reset_peak_memory_stats(self.device)


def _to_numpy(t) -> np.ndarray:
    if t.is_floating_point():
        t = t.float()  # fp16/bf16 results are reported in fp32, like the ORT session does
    return t.detach().cpu().numpy()


def torch_device() -> str:
    """Device for the torch backend: ``TOOLKIT_TORCH_DEVICE`` (cpu|cuda), else CUDA if available."""
    want = os.environ.get("TOOLKIT_TORCH_DEVICE", "").strip().lower()
    if want:
        if want not in ("cpu", "cuda"):
            raise ToolkitError(f"TOOLKIT_TORCH_DEVICE must be cpu or cuda, not {want!r}")
        if want == "cuda" and not torch.cuda.is_available():
            raise ToolkitError("TOOLKIT_TORCH_DEVICE=cuda but torch sees no CUDA device (CPU "
                               "build of torch or no driver); unset it or install a CUDA torch")
        return want
    return "cuda" if torch.cuda.is_available() else "cpu"


def cuda_available() -> bool:
    return torch.cuda.is_available()
