"""fp16 conversion and int8 (QDQ, static calibration) for exported ONNX graphs.

fp16: LayerNorm/Softmax (and the nodes feeding Softmax) are pinned to fp32, and so is every
node whose fp32 activations on real inputs come near the fp16 range — fp16 overflow in a
LayerNorm variance is silent, so intermediate ranges are checked, not only the outputs.

int8: explicit quantization — a QDQ graph with symmetric int8 activations and per-channel
symmetric int8 weights, calibrated on real data. onnxruntime runs it on the CPU, and it is the
form TensorRT 10 consumes (implicit-calibrator INT8 is deprecated there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ToolkitError
from ..progress import console
from .spec import GraphSpec

FP16_MAX = 65504.0
# Activations beyond this fraction of the fp16 range stay fp32 (head-room for other inputs).
FP16_SAFE = 0.25 * FP16_MAX
ALWAYS_FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf",
                   "ReduceSum", "Exp", "Log", "Range", "CumSum")


def _value_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[v.name] = v.type.tensor_type.elem_type
    return types


def intermediate_ranges(path: str | Path, feeds: Sequence[dict]) -> dict[str, float]:
    """Max |activation| of every float tensor in the graph over ``feeds`` (fp32 run)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    types = _value_types(model)
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in existing and types.get(name) == onnx.TensorProto.FLOAT:
                model.graph.output.append(onnx.helper.make_tensor_value_info(
                    name, onnx.TensorProto.FLOAT, None))
                existing.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    peak: dict[str, float] = {}
    for feed in feeds:
        outs = sess.run(None, {k: v for k, v in feed.items() if k in inputs})
        for n, o in zip(names, outs):
            if o.size:
                peak[n] = max(peak.get(n, 0.0), float(np.max(np.abs(o))))
    return peak


def convert_fp16(src: Path, dst: Path, spec: GraphSpec, feeds: Sequence[dict]) -> dict:
    """Write an fp16 copy of ``src`` with overflow-prone nodes kept fp32. Returns manifest info."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    keep_ops = set(ALWAYS_FP32_OPS) | set(spec.fp32_ops)
    producers = {o: n for n in model.graph.node for o in n.output}
    block_nodes = set()
    for n in model.graph.node:
        if n.op_type == "Softmax":  # the scores feeding Softmax (QK^T, scale, mask add)
            frontier = list(n.input)
            for _ in range(3):
                nxt = []
                for t in frontier:
                    p = producers.get(t)
                    if p is not None and p.op_type in ("Add", "MatMul", "Mul", "Div", "Where"):
                        block_nodes.add(p.name)
                        nxt.extend(p.input)
                frontier = nxt
    peak = intermediate_ranges(src, feeds[:2]) if feeds else {}
    hot = {producers[t].name for t, v in peak.items() if v > FP16_SAFE and t in producers}
    block_nodes |= hot
    max_act = max(peak.values()) if peak else float("nan")
    m16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=sorted(keep_ops),
                                   node_block_list=sorted(block_nodes))
    _dedupe_casts(m16)
    onnx.save(m16, str(dst))
    pinned = sum(1 for n in model.graph.node if n.op_type in keep_ops or n.name in block_nodes)
    console.print(f"  {spec.name}: fp16 with {pinned}/{len(model.graph.node)} nodes kept fp32 "
                  f"({len(hot)} for range > {FP16_SAFE:g}); largest fp32 activation "
                  f"{max_act:.3g}")
    return {"fp32_nodes": pinned, "fp32_ops": sorted(keep_ops), "range_pinned_nodes": len(hot),
            "max_abs_activation_fp32": max_act, "total_nodes": len(model.graph.node)}


def _dedupe_casts(model) -> None:
    """The fp16 converter emits one Cast per consumer when a tensor feeds several fp32-pinned
    nodes, all with the same output (and node) name; onnxruntime rejects duplicate definitions.
    The copies are identical, so keep the first and rename any other clashing node names."""
    produced: dict[str, tuple] = {}
    keep = []
    for node in model.graph.node:
        sig = (node.op_type, tuple(node.input), tuple(a.SerializeToString() for a in node.attribute))
        if node.op_type == "Cast" and node.output and node.output[0] in produced:
            if produced[node.output[0]] == sig:
                continue
        for o in node.output:
            produced.setdefault(o, sig)
        keep.append(node)
    seen: dict[str, int] = {}
    for node in keep:
        if node.name in seen:
            seen[node.name] += 1
            node.name = f"{node.name}_{seen[node.name]}"
        else:
            seen[node.name] = 0
    del model.graph.node[:]
    model.graph.node.extend(keep)


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feeds, advancing a progress bar."""

    def __init__(self, feeds: Sequence[dict], input_names: Sequence[str], bar=None):
        self._it = iter([{k: f[k] for k in input_names} for f in feeds])
        self._bar = bar

    def get_next(self):
        item = next(self._it, None)
        if item is not None and self._bar is not None:
            self._bar.advance()
        return item


def weight_matmuls(model, op_types: Sequence[str]) -> list[str]:
    """Nodes of ``op_types`` with a constant (initializer) operand: the layers worth int8.

    Activation × activation products (attention scores) stay float: quantising them costs
    accuracy and buys little.
    """
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in op_types and any(i in inits or i in consts for i in n.input[1:2])]


def quantize_int8(src: Path, dst: Path, spec: GraphSpec, feeds: Sequence[dict],
                  activations: str = "int8") -> dict:
    """Static QDQ quantization calibrated on ``feeds`` (real data); int8 per-channel weights.

    ``activations="int8"``: symmetric signed activations — the form TensorRT builds from.
    ``activations="uint8"``: asymmetric unsigned activations — onnxruntime's fast x86 path
    (u8×s8 maps onto VNNI); measured 1.3–1.7× faster than the int8 form on this CPU, but
    TensorRT rejects non-zero zero points, so it is a CPU-only artifact.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if not feeds:
        raise ToolkitError(f"no calibration data for graph {spec.name}; pass --calib-data DIR "
                           "with real inputs")
    model = onnx.load(str(src))
    nodes = weight_matmuls(model, spec.quantize_ops)
    if not nodes:
        raise ToolkitError(f"graph {spec.name} has no {'/'.join(spec.quantize_ops)} layer with "
                           "constant weights to quantise")
    input_names = [i.name for i in model.graph.input]
    import logging

    from ..progress import Steps

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a "consider pre-processing" hint
    try:
        with Steps(f"calibrating {spec.name} ({activations} activations)", total=len(feeds)) as bar:
            quantize_static(str(src), str(dst), _Reader(feeds, input_names, bar),
                            quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                            weight_type=QuantType.QInt8, per_channel=True,
                            nodes_to_quantize=nodes, op_types_to_quantize=list(spec.quantize_ops),
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": activations != "uint8",
                                           "WeightSymmetric": True,
                                           "DedicatedQDQPair": False,
                                           "QuantizeBias": False})
    finally:
        root.setLevel(level)
    q = onnx.load(str(dst), load_external_data=False)
    n_q = sum(1 for n in q.graph.node if n.op_type == "QuantizeLinear")
    n_dq = sum(1 for n in q.graph.node if n.op_type == "DequantizeLinear")
    producers = {o: n for n in q.graph.node for o in n.output}
    quantized = [n.name for n in q.graph.node if n.op_type in spec.quantize_ops
                 and all(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                         for i in n.input[:2])]
    total = sum(1 for n in model.graph.node if n.op_type in spec.quantize_ops)
    console.print(f"  {spec.name}: int8 QDQ ({activations} activations) — {len(quantized)}/{total} "
                  f"{'/'.join(spec.quantize_ops)} nodes quantized ({n_q} Q, {n_dq} DQ), "
                  f"calibrated on {len(feeds)} inputs")
    return {"quantized_nodes": len(quantized), "quantizable_nodes": total,
            "qdq_nodes": n_q + n_dq, "calibration_inputs": len(feeds),
            "int8_activations": activations,
            "quantization": ("QDQ, int8 symmetric activations (MinMax), per-channel symmetric "
                             "int8 weights — TensorRT form" if activations == "int8" else
                             "QDQ, uint8 asymmetric activations (MinMax), per-channel symmetric "
                             "int8 weights — onnxruntime CPU form, not buildable by TensorRT")}
