"""Opening a graph on a backend by name, and the names users may give."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ToolkitError
from .gpu import ort_provider_options
from .session import ORT_PROVIDERS, OrtSession, Session
from .tensorrt import TensorRTSession

BACKENDS = ("torch", "ort", "ort-cuda", "ort-trt", "trt")


def open_onnx_session(path: str | Path, backend: str, precision: str = "fp32",
                      threads: int | None = None, manifest_graph: dict | None = None,
                      cache_dir: str | Path | None = None) -> Session:
    """Open a graph file from an artifact on any non-torch backend."""
    if backend in ORT_PROVIDERS:
        options = None
        if backend != "ort" and manifest_graph is not None:
            options = ort_provider_options(backend, manifest_graph, precision, cache_dir)
        return OrtSession(path, backend=backend, precision=precision, threads=threads,
                          provider_options=options)
    if backend == "trt":
        return TensorRTSession.from_artifact_graph(path, manifest_graph or {}, precision)
    raise ToolkitError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ToolkitError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    return name

