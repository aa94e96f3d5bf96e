"""The graphs a pipeline runs, as Sessions: ``open_artifact`` for an exported artifact.

Every graph of the manifest is opened on the chosen backend and checked against the
manifest's recorded inputs and outputs. This module — and everything a pipeline over an
artifact imports — needs neither PyTorch nor transformers: a deployed artifact runs on
onnxruntime or TensorRT alone. Graphs of a *model* (its modules on ``torch``, or its cached
export) are opened by ``runtime/from_model.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from ..core.errors import ToolkitError
from ..core.precisions import base_precision
from ..export.manifest import load_manifest
from .backends import check_backend, open_onnx_session
from .session import Session

Pipeline = TypeVar("Pipeline")

__all__ = ["Graphs", "cache_root", "check_backend", "check_io", "make_pipeline", "open_artifact"]


@dataclass
class Graphs:
    """Open sessions by graph name, and what a pipeline needs to know about them."""

    family: str
    sessions: dict[str, Session]
    model_config: dict
    source: dict
    backend: str
    precision: str
    artifact: Path | None = None        # where the graphs came from, if an artifact
    loaded: object | None = None        # the model (a LoadedModel), if run from one
    revision: int | None = None         # the artifact's export revision (its graph contract)

    @property
    def random_init(self) -> bool:
        return bool(self.source.get("random_init"))

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()


def cache_root() -> Path:
    return Path(os.environ.get("TOOLKIT_CACHE", Path.home() / ".cache" / "toolkit"))


def check_io(sess: Session, graph: dict, name: str, artifact: Path) -> None:
    """The session's inputs and outputs are the ones the manifest lists for the graph."""
    for kind, want, got in (("inputs", [i["name"] for i in graph.get("inputs", [])],
                             sess.input_names),
                            ("outputs", [o["name"] for o in graph.get("outputs", [])],
                             sess.output_names)):
        if want and sorted(want) != sorted(got):
            raise ToolkitError(f"graph {name} ({graph.get('file')}) in {artifact} has {kind} "
                               f"{got[:4]}… but its manifest lists {want[:4]}…; the manifest "
                               "does not match the graph — re-export the artifact")


def open_artifact(artifact: str | Path, family: str, backend: str, threads: int | None = None,
                  verify: bool = True, expect: tuple[str, ...] | None = None,
                  optional: tuple[str, ...] = ()) -> Graphs:
    """Every graph of ``artifact`` (a ``family`` export) as a Session on ``backend``; ``expect``:
    the graph names the family's pipeline runs, ``optional`` those it may also hold (an older
    artifact without them still opens)."""
    artifact = Path(artifact)
    manifest = load_manifest(artifact, family=family, verify_hashes=verify)
    have = set(manifest["graphs"])
    if expect is not None and not set(expect) <= have <= set(expect) | set(optional):
        also = f" (and optionally {', '.join(optional)})" if optional else ""
        raise ToolkitError(f"a {family} artifact holds the graphs {', '.join(expect)}{also}; "
                           f"{artifact} has {', '.join(sorted(have))} — re-export it")
    if backend == "torch":
        raise ToolkitError("an artifact holds ONNX graphs, not PyTorch weights; use --backend "
                           "ort (or a GPU backend) with --artifact, or --checkpoint/--preset "
                           "with --backend torch")
    precision = manifest["precision"]
    for name, g in manifest["graphs"].items():  # the label must be what the graphs hold
        held = g.get("held_precision")           # read off the graph at export (hash-checked)
        all_float_int8 = held == "fp32" and g.get("quantized_nodes") == 0
        if held is not None and held != base_precision(precision) and not all_float_int8:
            raise ToolkitError(f"the manifest of {artifact} says {precision}, but graph {name} "
                               f"holds {held} weights/ops; the manifest was edited or mixed up — "
                               "re-export the artifact")
    sessions = {}
    try:
        for name, g in manifest["graphs"].items():
            sessions[name] = open_onnx_session(artifact / g["file"], backend, precision, threads,
                                               g, cache_dir=artifact)
            check_io(sessions[name], g, name, artifact)
    except BaseException:
        for s in sessions.values():
            s.close()
        raise
    return Graphs(family, sessions, manifest.get("model_config") or {},
                  manifest.get("source") or {}, backend, precision, artifact=artifact,
                  revision=manifest.get("export_revision"))


def make_pipeline(graphs: Graphs, build: Callable[[Graphs], Pipeline]) -> Pipeline:
    """``build(graphs)``, closing every session if the graphs do not make that pipeline."""
    try:
        return build(graphs)
    except BaseException:
        graphs.close()
        raise
