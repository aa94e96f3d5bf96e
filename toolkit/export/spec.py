"""What a model family declares so that the generic exporter, validator and TensorRT builder
can handle it (in the spirit of optimum's per-architecture ONNX configs).

A family's ``export/<family>/`` folder builds a list of ``GraphSpec`` for a loaded model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..core.errors import ToolkitError
from ..core.memory import check_fits
from ..core.precisions import base_precision

# Relative-L2 / cosine tolerances used when a family declares none. fp32 should be numerically
# the same graph; fp16 loses ~3 decimal digits; int8 QDQ is a quantised approximation.
DEFAULT_TOLERANCE = {
    "fp32": {"rel_l2": 1e-4, "cosine": 0.99999},
    "fp16": {"rel_l2": 1e-2, "cosine": 0.9999},
    "int8": {"rel_l2": 0.25, "cosine": 0.97},
}


@dataclass
class Profile:
    """TensorRT optimization profile for one dynamic input: min/opt/max shapes."""

    min: list[int]
    opt: list[int]
    max: list[int]

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass
class GraphSpec:
    """One exported sub-graph.

    module        PyTorch module whose ``forward(*inputs)`` returns the outputs in order
    input_names / output_names   positional order of the forward signature
    dynamic_axes  {tensor name: {axis index: axis name}} (inputs and outputs)
    example_inputs  callable returning a tuple of torch tensors used for tracing
    profiles      {input name: Profile} from which TensorRT profiles are built
    fp32_ops      op types that must stay fp32 in an fp16 graph (besides the defaults)
    quantize_ops  op types quantised in the int8 QDQ graph
    int8_budget   error budget that picks which of those layers stay float (see precision.py)
    """

    name: str
    module: object
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    example_inputs: Callable[[], tuple]
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    fp32_ops: Sequence[str] = ()
    quantize_ops: Sequence[str] = ("MatMul", "Conv", "Gemm")
    tolerance: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: DEFAULT_TOLERANCE)
    input_dtypes: Mapping[str, str] = field(default_factory=dict)
    # int8: the largest relative L2 (worst output vs fp32, Q/DQ evaluated in float) the layer
    # selection may spend; the most sensitive layers stay float until it holds. None: every
    # weight layer in int8.
    int8_budget: float | None = None
    # layers (node-name substrings) that always stay float in the int8 graph, e.g. an LM head
    # whose output is argmax'ed (NVIDIA ModelOpt and TensorRT-LLM leave lm_head unquantized too)
    int8_float_layers: Sequence[str] = ()
    # int8-cpu: "qdq" (static uint8 activations), "dynamic" (activation scale per call) or
    # "blockwise" (MatMulNBits, int8 compute; for small-M graphs such as a decoder step)
    int8_cpu_scheme: str = "qdq"
    # int4 (families that offer it, core.precisions.FAMILY_PRECISIONS): "nbits" — 4-bit
    # block-wise weights (MatMulNBits, blocks of ``int4_block_size``, ``int4_symmetric``), the
    # layers named in ``int4_8bit_layers`` at 8-bit blocks instead; "int8-cpu" — this graph's
    # int8-cpu form; None — the graph stays fp32 in an int4 artifact
    int4_scheme: str | None = None
    int4_block_size: int = 32
    int4_symmetric: bool = True
    int4_8bit_layers: Sequence[str] = ()
    # int4: the largest relative L2 (worst output vs fp32) the all-4-bit graph may have; over
    # it, the most sensitive layers move to 8-bit blocks until it holds. None: no search.
    int4_budget: float | None = None


Feeds = dict  # {input name: np.ndarray}


def tolerance_for(spec: "GraphSpec", precision: str) -> Mapping[str, float]:
    return spec.tolerance.get(precision) or spec.tolerance[base_precision(precision)]


@dataclass
class ExportPlan:
    """Everything the generic exporter needs for one model.

    graphs           the sub-graphs
    validation_feeds {graph name: [feeds]} real-data inputs for the parity check
    calibration_feeds  callable -> {graph name: [feeds]} for int8 (may be slow: real audio/video)
    source           manifest "source" block (checkpoint path + hash or preset, random_init)
    model_config     what the runtime needs to rebuild the pipeline around the graphs
    extra_files      callable -> {name in artifact: bytes or source path} (tokenizer files,
                     configs); called only when an artifact is written
    revision         bumped by a family whenever its graphs change for the same weights, so
                     cached artifacts (bench work dirs) are re-exported
    """

    family: str
    graphs: list[GraphSpec]
    validation_feeds: Callable[[], dict[str, list[Feeds]]]
    calibration_feeds: Callable[[], dict[str, list[Feeds]]] | None
    source: dict
    model_config: dict
    extra_files: Callable[[], dict] = dict
    revision: int = 1


# What an export needs, per byte of the model's fp32 weights (checked before loading it):
# resident memory (the PyTorch weights until the references are taken, then one copy of one
# graph's weights in conversion and one onnxruntime session at a time) and disk (the fp32
# graphs, the converted ones, and the finished artifact while they coexist). Measured on
# large-v3-turbo and large-v3 (README, "Large models"): (peak − 1 GB) / fp32 weights was
# 1.85 / 1.51 at fp32, 1.95 / 1.46 fp16, — / 1.97 int8, 2.61 / 2.22 int8-cpu; the factors
# below are the larger of each pair with some margin.
EXPORT_MEMORY_BASE = 1.0e9
EXPORT_MEMORY_FACTOR = {"fp32": 2.0, "fp16": 2.1, "int8": 2.3, "int8-cpu": 2.8, "int4": 2.8}
# (disk: PyTorch's per-tensor files and the consolidated data file coexist for one graph)
EXPORT_DISK_FACTOR = {"fp32": 1.7, "fp16": 2.0, "int8": 1.9, "int8-cpu": 1.9, "int4": 1.9}
# Families whose export memory is measured to follow another line: (base bytes, {precision:
# factor}). InternVL: most of its peak does not grow with the LLM — tracing InternViT-300M on
# two tiles beside the model, and the vision graph's 1.2 GB protobuf — and its LLM decoder goes
# to files while it is traced. Measured peaks (results/internvl-2b-export.md): fp32 8.04 GB on
# InternVL2-1B (3.75 GB of fp32 weights) and 13.18 GB on InternVL2-2B (8.82 GB) → 4.24 GB +
# 1.01 × weights; 2B fp16 15.08, int8 13.82, int8-cpu 14.88, int4 14.70 GB. With the margins
# below the 2B estimates are 13.8 GB (fp32) and 15.5 GB (the generic factors: 18.6–25.7 GB,
# which refused the 2B on a 16 GB machine that its exports fit).
FAMILY_EXPORT_MEMORY = {
    "internvl": (4.5e9, {"fp32": 1.05, "fp16": 1.25, "int8": 1.25, "int8-cpu": 1.25,
                         "int4": 1.25}),
}


def export_memory(parameters: int, precision: str, family: str | None = None) -> int:
    """The resident memory an export is estimated to need (bytes)."""
    fp32 = 4 * parameters
    base, factors = FAMILY_EXPORT_MEMORY.get(family or "", (EXPORT_MEMORY_BASE, {}))
    if precision not in factors:
        base, factors = EXPORT_MEMORY_BASE, EXPORT_MEMORY_FACTOR
    return int(base + factors[precision] * fp32)


def check_export_room(parameters: int, what: str, precision: str, out,
                      family: str | None = None) -> None:
    """Refuse, before loading anything, an export that will not fit this machine's free memory
    or the free disk under ``out`` (both estimated from the parameter count)."""
    fp32 = 4 * parameters
    label = f"exporting {what} at {precision} ({parameters / 1e9:.2f} B parameters)"
    check_fits(export_memory(parameters, precision, family), label,
               "free memory, or export on a machine with more (TOOLKIT_MAX_MEMORY_GB caps what "
               "the toolkit may plan to use)")
    out = Path(out).expanduser()
    where = out if out.exists() else out.parent
    free = shutil.disk_usage(where).free
    need = int(EXPORT_DISK_FACTOR[precision] * fp32)
    if need > free:
        raise ToolkitError(f"{label} writes about {need / 1e9:.1f} GB under {where}, which has "
                           f"{free / 1e9:.1f} GB free; free space there or choose another --out")
