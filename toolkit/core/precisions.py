"""The precisions an artifact can hold, named once for every layer.

``int8`` is the TensorRT form: Q/DQ with symmetric signed int8 activations (TensorRT requires
zero points of 0); onnxruntime runs it too. ``int8-cpu`` is the onnxruntime-on-x86 form:
asymmetric uint8 activations × int8 weights, the pairing onnxruntime's x86 kernels (VNNI) are
fastest at — TensorRT cannot build it. ``bf16`` exists on the torch backend only.

``int4`` is offered only by the families that declare it (``FAMILY_PRECISIONS``): 4-bit
block-wise weights (onnxruntime's MatMulNBits) for an LLM's decoder step on CPU — the edge norm
for LLMs, whose cached step is memory-bound; the family's other graphs keep their declared form.
It is not in ``PRECISIONS`` (what every family exports and benches) for that reason.
"""

from __future__ import annotations

from .errors import ToolkitError

PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")
# precisions only some families offer → those families (checked before a model is loaded)
FAMILY_PRECISIONS = {"int4": ("internvl",)}
EXPORT_PRECISIONS = PRECISIONS + tuple(FAMILY_PRECISIONS)


def base_precision(precision: str) -> str:
    """Tolerance/numerics class of a precision ("int8-cpu" and "int4" are judged like "int8":
    quantized graphs, whose files hold quantized ops)."""
    return "int8" if precision.startswith("int8") or precision == "int4" else precision


def check_family_precision(family: str, precision: str) -> str:
    """``precision`` for an export of ``family``, or one line naming the families offering it."""
    if precision not in EXPORT_PRECISIONS:
        raise ToolkitError(f"unknown precision {precision!r}; use one of "
                           f"{', '.join(EXPORT_PRECISIONS)}")
    offered = FAMILY_PRECISIONS.get(precision)
    if offered is not None and family not in offered:
        raise ToolkitError(f"{family} does not offer --precision {precision}; only "
                           f"{', '.join(offered)} do{'es' if len(offered) == 1 else ''} "
                           f"(use one of {', '.join(PRECISIONS)})")
    return precision


def precision_from_flags(fp16: bool, int8: bool, int8_target: str = "trt",
                         int4: bool = False) -> str:
    """``--fp16`` / ``--int8 [--int8-target trt|cpu]`` / ``--int4`` → the precision's name."""
    given = [flag for flag, on in (("--fp16", fp16), ("--int8", int8), ("--int4", int4)) if on]
    if len(given) > 1:
        raise ToolkitError(f"choose one of {' and '.join(given)}")
    if int8_target not in ("trt", "cpu"):
        raise ToolkitError(f"--int8-target must be trt or cpu, not {int8_target!r}")
    if int4:
        return "int4"
    if int8:
        return "int8-cpu" if int8_target == "cpu" else "int8"
    return "fp16" if fp16 else "fp32"
