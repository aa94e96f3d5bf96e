"""``toolkit export``: a family's model → a validated artifact directory (and, with ``trt``,
its TensorRT engines). The options, their checks and the default output folder live here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ToolkitError
from ..core.files import check_replaceable, check_writable
from ..core.precisions import EXPORT_PRECISIONS, check_family_precision
from ..core.progress import console, step
from . import external
from .manifest import is_artifact
from .onnx import DEFAULT_OPSET, export_plan
from .spec import check_export_room
from .tensorrt import build_artifact, require_tensorrt

EXTERNAL_DATA_MB = (1, external.MAX_INLINE >> 20)   # the range --external-data-mb accepts


@dataclass
class ExportOptions:
    checkpoint: str | None = None
    preset: str | None = None
    precision: str = "fp32"
    out: Path | None = None           # default: artifacts/<family>-<model>-<precision>
    calib_data: Path | None = None
    opset: int = DEFAULT_OPSET
    seed: int = 0
    force: bool = False
    external_data_mb: float | None = None
    trt: bool = False

    def check(self) -> None:
        if self.precision not in EXPORT_PRECISIONS:
            raise ToolkitError(f"unknown precision {self.precision!r}; use one of "
                               f"{', '.join(EXPORT_PRECISIONS)}")
        if self.trt and self.precision == "int8-cpu":
            raise ToolkitError("--trt needs the TensorRT int8 form; drop --int8-target cpu")
        if self.trt and self.precision == "int4":
            raise ToolkitError("--trt cannot build int4 (onnxruntime CPU MatMulNBits); export "
                               "--int8 for TensorRT")
        low, high = EXTERNAL_DATA_MB
        if self.external_data_mb is not None and not low <= self.external_data_mb <= high:
            raise ToolkitError(f"--external-data-mb must be between {low} and {high} MiB "
                               f"(protobuf cannot hold a graph of 2 GiB), not "
                               f"{self.external_data_mb:g}")

    def threshold(self) -> int:
        return (external.DEFAULT_THRESHOLD if self.external_data_mb is None
                else int(self.external_data_mb * (1 << 20)))


def default_out(family, opts: ExportOptions) -> Path:
    return (Path("artifacts") /
            f"{family.name}-{family.default_tag(opts.checkpoint, opts.preset)}-{opts.precision}")


def export_model(family, opts: ExportOptions) -> dict:
    """Load ``family``'s model, export it at ``opts.precision`` into ``opts.out`` (checked
    before anything is loaded), build engines with ``opts.trt``. Returns the manifest."""
    opts.check()
    check_family_precision(family.name, opts.precision)   # before anything is loaded
    out = Path(opts.out or default_out(family, opts))
    if opts.trt:
        require_tensorrt(out)    # fail before a long export if no build can happen
    # before loading a large model: never replace a directory the user did not give us
    out = check_writable(check_replaceable(out, is_artifact, opts.force))
    n = family.count_parameters(opts.checkpoint, opts.preset)
    if n is not None:
        check_export_room(n, f"{family.name} {family.default_tag(opts.checkpoint, opts.preset)}",
                          opts.precision, out, family=family.name)
    steps: list[dict] = []
    with step(f"loading {family.name}", steps):
        loaded = family.load_model(opts.checkpoint, opts.preset, opts.seed)
    if loaded.random_init:
        console.print(f"[yellow]note:[/] {loaded.weights} — for speed and export work, not "
                      "for real outputs")
    manifest = export_plan(family.build_plan(loaded, opts.calib_data), opts.precision, out,
                           opset=opts.opset, force=opts.force, external_threshold=opts.threshold(),
                           release=loaded.release, steps=steps)
    if opts.trt:
        manifest = build_artifact(out, fp16=opts.precision == "fp16",
                                  int8=opts.precision == "int8")
    return manifest
