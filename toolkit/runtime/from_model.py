"""The graphs of a *model* (not an artifact) as Sessions — the one runtime path that needs
PyTorch and the export layer.

- on ``torch``: the very modules the export plan would export, as ``TorchSession``s;
- on an ONNX backend: the model is exported once (validated, like ``toolkit export``) into the
  cache (``$TOOLKIT_CACHE`` or ``~/.cache/toolkit``), keyed by its weights, precision and export
  revision, and reused from there; nothing temporary is left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..export.artifact import cached_export
from ..export.onnx import export_plan
from ..export.spec import ExportPlan
from ..models.base import LoadedModel
from .graphs import Graphs, cache_root, open_artifact
from .torch_session import TorchSession, torch_device

BuildPlan = Callable[[LoadedModel], ExportPlan]


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
