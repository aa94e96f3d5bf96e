"""The graphs a pipeline runs — from an exported artifact, or from a model — as Sessions.

One path for every family:

- ``artifact`` → every graph of the manifest on the chosen backend, each checked against the
  manifest's recorded inputs and outputs;
- a model on ``torch`` → the very modules the export plan would export, as ``TorchSession``s;
- a model on an ONNX backend → the model is exported once (validated, like ``toolkit export``)
  into the cache (``$TOOLKIT_CACHE`` or ``~/.cache/toolkit``), keyed by its weights, precision
  and export revision, and reused from there; nothing temporary is left behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from ..core.errors import ToolkitError
from ..export.artifact import cached_export
from ..export.manifest import load_manifest
from ..export.onnx import export_plan
from ..export.spec import ExportPlan, base_precision
from ..models.base import LoadedModel
from .backends import check_backend, open_onnx_session
from .session import Session, TorchSession, torch_device

LoadModel = Callable[..., LoadedModel]
BuildPlan = Callable[[LoadedModel], ExportPlan]
Pipeline = TypeVar("Pipeline")


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
    loaded: LoadedModel | None = None   # the model, if run from one
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
                  verify: bool = True) -> Graphs:
    artifact = Path(artifact)
    manifest = load_manifest(artifact, family=family, verify_hashes=verify)
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


def open_model(loaded: LoadedModel, build_plan: BuildPlan, backend: str, precision: str = "fp32",
               threads: int | None = None, device: str | None = None,
               workdir: str | Path | None = None) -> Graphs:
    """A loaded model's graphs: its modules on ``torch`` (on ``device``, default
    ``torch_device()``), else its cached export."""
    plan = build_plan(loaded)
    if backend == "torch":
        device = device or torch_device()
        sessions = {spec.name: TorchSession(spec.module, spec.input_names, spec.output_names,
                                            precision=precision, device=device, threads=threads,
                                            input_dtypes=spec.input_dtypes)
                    for spec in plan.graphs}
        return Graphs(loaded.family, sessions, plan.model_config, loaded.source, "torch",
                      precision, loaded=loaded)
    out = artifact_for(loaded, plan, precision, workdir)
    graphs = open_artifact(out, loaded.family, backend, threads)
    graphs.loaded = loaded
    return graphs


def artifact_path(loaded: LoadedModel, precision: str, workdir: str | Path | None = None) -> Path:
    return Path(workdir or cache_root()) / f"{loaded.family}-{loaded.cache_tag}-{precision}"


def artifact_for(loaded: LoadedModel, plan: ExportPlan, precision: str,
                 workdir: str | Path | None = None, release: bool = False) -> Path:
    """The validated export of ``loaded`` at ``precision``, made once and reused (``workdir``,
    default the cache) while the weights, precision and export revision match. ``release``:
    the PyTorch weights are not needed afterwards (freed mid-export, see ``export_plan``)."""
    return cached_export(artifact_path(loaded, precision, workdir), loaded.family, loaded.source,
                         precision, plan.revision,
                         lambda out: export_plan(plan, precision, out,
                                                 release=loaded.release if release else None))


def open_graphs(family: str, load_model: LoadModel, build_plan: BuildPlan, *, artifact=None,
                checkpoint=None, preset=None, loaded: LoadedModel | None = None,
                backend: str = "ort", precision: str = "fp32", seed: int = 0,
                threads: int | None = None, device: str | None = None) -> Graphs:
    """An artifact, or a model (``loaded``, or loaded from ``checkpoint``/``preset``/default)."""
    check_backend(backend)
    if artifact is not None:
        if checkpoint is not None or preset is not None or loaded is not None:
            raise ToolkitError("give either --artifact or --checkpoint/--preset, not both")
        return open_artifact(artifact, family, backend, threads)
    if loaded is None:
        loaded = load_model(checkpoint, preset, seed)
    return open_model(loaded, build_plan, backend, precision, threads, device)


def make_pipeline(graphs: Graphs, build: Callable[[Graphs], Pipeline]) -> Pipeline:
    """``build(graphs)``, closing every session if the graphs do not make that pipeline."""
    try:
        return build(graphs)
    except BaseException:
        graphs.close()
        raise
