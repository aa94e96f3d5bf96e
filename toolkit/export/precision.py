"""fp16 conversion and int8 (QDQ, static calibration) for exported ONNX graphs.

fp16: LayerNorm/Softmax (and the nodes feeding Softmax) are pinned to fp32, and so is every
node whose fp32 activations on real inputs come near the fp16 range — fp16 overflow in a
LayerNorm variance is silent, so intermediate ranges are checked, not only the outputs.

int8: explicit quantization — a QDQ graph with symmetric int8 activations and per-channel
symmetric int8 weights, calibrated on real data. onnxruntime runs it on the CPU, and it is the
form TensorRT 10 consumes (implicit-calibrator INT8 is deprecated there).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from ..core.errors import ToolkitError
from ..core.parity import rel_l2
from ..core.progress import Steps, console
from . import external
from .ort import absmax, run_onnx, value_ranges
from .spec import GraphSpec

FP16_MAX = 65504.0
# Activations beyond this fraction of the fp16 range stay fp32 (head-room for other inputs).
FP16_SAFE = 0.25 * FP16_MAX
ALWAYS_FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf",
                   "ReduceSum", "Exp", "Log", "Range", "CumSum")


def _value_types(model) -> dict[str, int]:
    types = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        types[v.name] = v.type.tensor_type.elem_type
    return types


@contextlib.contextmanager
def _inferred(src: Path):
    """``src`` with ONNX shape inference applied, as a file beside it (file-to-file inference
    works past protobuf's 2 GiB limit; its external data resolves from the same folder)."""
    from onnx.shape_inference import infer_shapes_path

    out = src.with_name(f"{src.stem}.inferred-{os.getpid()}.onnx")
    try:
        infer_shapes_path(str(src), str(out))
        yield out
    finally:
        out.unlink(missing_ok=True)


def _ranges(path: Path, skeleton, feeds: Sequence[dict]) -> dict[str, float]:
    types = _value_types(skeleton)
    existing = {o.name for o in skeleton.graph.output}
    tensors = list(dict.fromkeys(name for node in skeleton.graph.node for name in node.output
                                 if name and name not in existing
                                 and types.get(name) == onnx.TensorProto.FLOAT))
    return absmax(path, feeds, tensors) if feeds else {}


def convert_fp16(src: Path, dst: Path, spec: GraphSpec, feeds: Sequence[dict],
                 threshold: int = external.DEFAULT_THRESHOLD) -> dict:
    """Write an fp16 copy of ``src`` with overflow-prone nodes kept fp32. Returns manifest info.

    Memory: the fp32 weights are loaded once and converted in place (tensor by tensor), and the
    intermediate ranges come from scalar probes inside the graph — never every activation."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _inferred(src) as inferred:
        skeleton = onnx.load(str(inferred), load_external_data=False)
        keep_ops = set(ALWAYS_FP32_OPS) | set(spec.fp32_ops)
        producers = {o: n for n in skeleton.graph.node for o in n.output}
        block_nodes = set()
        for n in skeleton.graph.node:
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
        with console.status(f"{spec.name}: measuring activation ranges for fp16"):
            peak = _ranges(src, skeleton, feeds[:2])
        hot = {producers[t].name for t, v in peak.items() if v > FP16_SAFE and t in producers}
        block_nodes |= hot
        max_act = max(peak.values()) if peak else float("nan")
        total = len(skeleton.graph.node)
        pinned = sum(1 for n in skeleton.graph.node
                     if n.op_type in keep_ops or n.name in block_nodes)
        del skeleton, producers
        with console.status(f"{spec.name}: converting weights to fp16"):
            model = onnx.load(str(inferred))  # the weights, once
    with console.status(f"{spec.name}: converting weights to fp16"):
        m16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=sorted(keep_ops),
                                       node_block_list=sorted(block_nodes),
                                       disable_shape_infer=True)  # inferred above, from the file
        del model
        _dedupe_casts(m16)
        external.save(m16, dst, threshold)
    console.print(f"  {spec.name}: fp16 with {pinned}/{total} nodes kept fp32 "
                  f"({len(hot)} for range > {FP16_SAFE:g}); largest fp32 activation "
                  f"{max_act:.3g}")
    return {"fp32_nodes": pinned, "fp32_ops": sorted(keep_ops), "range_pinned_nodes": len(hot),
            "max_abs_activation_fp32": max_act, "total_nodes": total}


def _dedupe_casts(model) -> None:
    """The fp16 converter emits one Cast per consumer when a tensor feeds several fp32-pinned
    nodes, all with the same output (and node) name; onnxruntime rejects duplicate definitions.
    The copies are identical, so keep the first and rename any other clashing node names."""
    produced: dict[str, tuple] = {}
    keep = []
    for node in model.graph.node:
        sig = (node.op_type, tuple(node.input),
               tuple(a.SerializeToString() for a in node.attribute))
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


def weight_matmuls(model, op_types: Sequence[str]) -> list[str]:
    """Nodes of ``op_types`` with a constant (initializer) operand: the layers worth int8.

    Activation × activation products (attention scores) stay float: quantising them costs
    accuracy and buys little.
    """
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in op_types and any(i in inits or i in consts for i in n.input[1:2])]


PROBE_OUTPUT_BYTES = 1 << 30


def _probe(src: Path, feeds: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The inputs an int8 graph's error is measured on (up to 6, spread over ``feeds``) and
    the fp32 graph's outputs on them — as many as keep those outputs under 1 GiB, at least 2
    (one large-v3 encoder window yields 491 MB of cross K/V: 2 windows there, 6 on tiny)."""
    probe = list(feeds[:: max(1, len(feeds) // 6)])[:6]
    if not probe:
        return [], []
    ref = run_onnx(src, probe[:1], "all")
    size = sum(o.nbytes for o in ref[0].values())
    n = max(2, min(len(probe), PROBE_OUTPUT_BYTES // max(1, size)))
    probe = probe[:n]
    return probe, ref + (run_onnx(src, probe[1:], "all") if len(probe) > 1 else [])


def worst_rel_l2(got: Sequence[dict], ref: Sequence[dict]) -> float:
    """Worst relative L2 over every output of every feed."""
    return max((rel_l2(g[k], r[k]) for g, r in zip(got, ref) for k in r if r[k].size), default=0.0)


def _run_in(model, where: Path, feeds: Sequence[dict],
            extra_outputs: Sequence[str] = ()) -> list[dict[str, np.ndarray]]:
    """Outputs of an assembled graph whose external tensors resolve in ``where`` (see
    ``external.linked``): written there as it is — only its structure and inline tensors — and
    run with Q/DQ in float."""
    path = where / f"candidate-{os.getpid()}.onnx"
    try:
        if model.ByteSize() < external.MAX_INLINE:
            onnx.save(model, str(path))
        else:  # inline weights past protobuf's limit: the toolkit's layout, streamed
            external.save(model, path, base=where)
        return run_onnx(path, feeds, "none", extra_outputs=extra_outputs)
    finally:
        path.unlink(missing_ok=True)
        path.with_name(external.data_name(path)).unlink(missing_ok=True)


# float twins measured per session: at most this many bytes of their float weights at once
# (beside the quantized graph's own), so a 2B decoder's 6.8 GB of twins never load together
TWIN_GROUP_BYTES = 1536 << 20


def _twin_errors(q, where: Path, feeds: Sequence[dict],
                 twins: Sequence[tuple[str, onnx.NodeProto, onnx.TensorProto, str]]
                 ) -> dict[str, float]:
    """Relative L2 between each quantized layer's output and its float twin's, over ``feeds``
    (the worst). ``twins``: (layer, twin node, its float weight, the layer's output). The norms
    are reduced inside the graph (only scalars leave it), and the twins run in groups of at most
    ``TWIN_GROUP_BYTES`` of float weight, each group one session over ``q`` (a graph whose
    external tensors resolve in ``where``)."""
    groups: list[list] = [[]]
    size = 0
    for twin in twins:
        n = external.tensor_bytes(twin[2])
        if groups[-1] and size + n > TWIN_GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(twin)
        size += n
    errors: dict[str, float] = {}
    for group in groups:
        if not group:
            continue
        m = onnx.ModelProto()
        m.CopyFrom(q)
        outs = []
        for k, (layer, node, weight, out) in enumerate(group):
            m.graph.initializer.append(weight)
            m.graph.node.append(node)
            diff, num, den = f"__twin_diff_{k}", f"__twin_num_{k}", f"__twin_den_{k}"
            m.graph.node.extend([
                onnx.helper.make_node("Sub", [out, node.output[0]], [diff], name=diff),
                onnx.helper.make_node("ReduceSumSquare", [diff], [num], name=num, keepdims=0),
                onnx.helper.make_node("ReduceSumSquare", [node.output[0]], [den], name=den,
                                      keepdims=0)])
            outs += [num, den]
        got = _run_in(m, where, feeds, extra_outputs=outs)
        del m
        for k, (layer, *_rest) in enumerate(group):
            worst = 0.0
            for o in got:
                num, den = float(o[f"__twin_num_{k}"]), float(o[f"__twin_den_{k}"])
                worst = max(worst, float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num)))
            errors[layer] = worst
    return errors


def layer_sensitivity(fp32: Path, qdq: Path, feeds: Sequence[dict]) -> dict[str, float]:
    """Local error of every quantized layer: relative L2 between the layer's output in the QDQ
    graph and a float twin of the layer fed the same (un-quantized) input tensor and the float
    weight. Upstream error does not count against a layer. Neither graph's weights are read
    into Python: the twins point at the fp32 graph's data file (``external.linked``) and run in
    groups (``_twin_errors``)."""
    with external.linked(fp32, qdq.parent) as src:
        q = onnx.load(str(qdq), load_external_data=False)
        src_nodes = {n.name: n for n in src.graph.node}
        src_inits = {i.name: i for i in src.graph.initializer}
        for n in src.graph.node:  # weights folded into Constant nodes count as initializers
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                t = onnx.TensorProto()
                t.CopyFrom(n.attribute[0].t)
                t.name = n.output[0]
                src_inits.setdefault(n.output[0], t)
        producers = {o: n for n in q.graph.node for o in n.output}
        twins = []
        for n in q.graph.node:
            orig = src_nodes.get(n.name)
            dq = producers.get(n.input[0]) if n.input else None
            if (orig is None or orig.op_type != n.op_type or len(orig.input) < 2 or dq is None
                    or dq.op_type != "DequantizeLinear"):
                continue
            qn = producers.get(dq.input[0])
            if qn is None or qn.op_type != "QuantizeLinear" or orig.input[1] not in src_inits:
                continue
            w = onnx.TensorProto()
            w.CopyFrom(src_inits[orig.input[1]])  # an external one: its location, not bytes
            w.name = f"{w.name}__float_twin"
            twin = onnx.helper.make_node(n.op_type, [qn.input[0], w.name, *n.input[2:]],
                                         [f"{n.output[0]}__float_twin"],
                                         name=f"{n.name}__float_twin")
            twin.attribute.extend(n.attribute)
            twins.append((n.name, twin, w, n.output[0]))
        return _twin_errors(q, qdq.parent, feeds, twins)


def quantize_int8(src: Path, dst: Path, spec: GraphSpec, feeds: Sequence[dict],
                  activations: str = "int8", threshold: int = external.DEFAULT_THRESHOLD) -> dict:
    """Static QDQ quantization calibrated on ``feeds`` (real data); int8 per-channel weights.

    ``activations="int8"``: symmetric signed activations — the form TensorRT builds from.
    ``activations="uint8"``: asymmetric unsigned activations — onnxruntime's fast x86 path
    (u8×s8 maps onto VNNI), but TensorRT rejects non-zero zero points: a CPU-only artifact.

    Which layers run in int8 is measured, not assumed (trained weights have activation outliers
    that random ones lack): every MatMul/Conv with constant weights is quantized; if the graph's
    worst output then differs from fp32 by more than ``spec.int8_budget`` (relative L2, with Q/DQ
    evaluated in float so the CPU's int8 kernels do not enter), the layers are ranked by their
    local error and as few as the budget allows are kept float (``_choose_float_layers``).
    """
    if not feeds:
        raise ToolkitError(f"no calibration data for graph {spec.name}; pass --calib-data DIR "
                           "with real inputs")
    model = onnx.load(str(src), load_external_data=False)  # node names only
    layers = weight_matmuls(model, spec.quantize_ops)
    pinned = [n for n in layers if any(p in n for p in spec.int8_float_layers)]
    nodes = [n for n in layers if n not in pinned]
    if not nodes:
        raise ToolkitError(f"graph {spec.name} has no {'/'.join(spec.quantize_ops)} layer with "
                           "constant weights to quantise")
    cache = dst.with_name(dst.stem + ".calibration.json")
    cache.unlink(missing_ok=True)
    with Steps(f"calibrating {spec.name} ({activations} activations)", total=len(feeds)) as bar:
        _calibrate(src, spec, feeds, activations, cache, bar.advance)
    with console.status(f"{spec.name}: writing the QDQ graph"):
        _quantize(src, dst, spec, nodes, activations, cache)
    external.consolidate(dst, threshold)
    budget = spec.int8_budget
    # the error is measured on a few calibration inputs (the fp32 graph is the reference)
    probe_feeds, ref = _probe(src, feeds)
    err = worst_rel_l2(run_onnx(dst, probe_feeds, "none"), ref)
    float_nodes: list[str] = []
    sensitivity: dict[str, float] = {}
    if budget is not None and err > budget:
        with console.status(f"{spec.name}: int8 error {err:.3f} > budget {budget:g}; measuring "
                            f"each of {len(nodes)} layers"):
            sensitivity = layer_sensitivity(src, dst, probe_feeds[:2])
        sensitivity = {n: sensitivity.get(n, 0.0) for n in nodes}
        float_nodes, err = _choose_float_layers(src, dst, spec, nodes, sensitivity, probe_feeds,
                                                ref, budget)
        # ship exactly the graph that was measured: the all-int8 graph with the chosen layers
        # rewired to float (re-quantizing a subset would still feed them the shared quantized
        # activation that their int8 neighbours use)
        with external.linked(src, dst.parent) as src_model:
            chosen = _with_float_layers(onnx.load(str(dst), load_external_data=False),
                                        src_model, set(float_nodes))
            _prune(chosen)
            external.save(chosen, dst, threshold)  # streamed from both data files
        err = worst_rel_l2(run_onnx(dst, probe_feeds, "none"), ref)
    cache.unlink(missing_ok=True)
    q = onnx.load(str(dst), load_external_data=False)
    n_q = sum(1 for n in q.graph.node if n.op_type == "QuantizeLinear")
    n_dq = sum(1 for n in q.graph.node if n.op_type == "DequantizeLinear")
    producers = {o: n for n in q.graph.node for o in n.output}
    quantized = [n.name for n in q.graph.node if n.op_type in spec.quantize_ops
                 and all(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                         for i in n.input[:2])]
    total = len(layers)
    why = (f"; {len(float_nodes)} kept float by measured sensitivity (budget rel L2 ≤ {budget:g})"
           if float_nodes else "") + (f"; {len(pinned)} float by design ({', '.join(pinned)})"
                                      if pinned else "")
    console.print(f"  {spec.name}: int8 QDQ ({activations} activations) — {len(quantized)}/{total} "
                  f"weight {'/'.join(spec.quantize_ops)} layers in int8{why}; error vs fp32 "
                  f"(Q/DQ in float) rel L2 {err:.3g}; calibrated on {len(feeds)} inputs")
    return {"quantized_nodes": len(quantized), "quantizable_nodes": total,
            "weight_layers": total, "float_layers": pinned + float_nodes,
            "float_by_design": pinned,
            "float_layer_sensitivity": {n: round(sensitivity[n], 5) for n in float_nodes},
            "int8_budget_rel_l2": budget, "int8_error_rel_l2": err,
            "qdq_nodes": n_q + n_dq, "calibration_inputs": len(feeds),
            "int8_activations": activations,
            "quantization": ("QDQ, int8 symmetric activations (MinMax), per-channel symmetric "
                             "int8 weights — TensorRT form" if activations == "int8" else
                             "QDQ, uint8 asymmetric activations (MinMax), per-channel symmetric "
                             "int8 weights — onnxruntime CPU form, not buildable by TensorRT")
            + ("; layers chosen by measured sensitivity" if float_nodes else "")}


def quantize_cpu_int8(src: Path, dst: Path, spec: GraphSpec, feeds: Sequence[dict],
                      scheme: str, block_size: int = 32,
                      threshold: int = external.DEFAULT_THRESHOLD) -> dict:
    """onnxruntime-on-CPU int8 forms that need no static activation ranges (TensorRT builds
    neither):

    ``dynamic``    int8 weights per channel (7-bit range, so AVX2's u8×s8 pair sums cannot
                   saturate int16), uint8 activations with a per-tensor scale computed on every
                   call (DynamicQuantizeLinear + MatMulInteger) — for large-M GEMMs (an encoder).
    ``blockwise``  8-bit weights in blocks of ``block_size`` (MatMulNBits, symmetric) with
                   ``accuracy_level=4``: the kernel quantizes each activation block on the fly and
                   multiplies in int8 (VNNI/AMX on x86, dot-product on ARM) — for small-M graphs
                   (a decoder step).

    Both follow the activation outliers of trained weights that one static per-tensor scale
    cannot (measured on trained Whisper: see docs/int8.md)."""
    import logging

    big = bool(external.data_files(src))
    # the weights are needed in memory only by the block-wise quantizer
    model = onnx.load(str(src), load_external_data=scheme == "blockwise")
    nodes = weight_matmuls(model, ("MatMul",))
    if not nodes:
        raise ToolkitError(f"graph {spec.name} has no MatMul with constant weights to quantise")
    all_layers = weight_matmuls(model, spec.quantize_ops)  # (the quantizers mutate ``model``)
    logging.disable(logging.WARNING)  # the quantizers log every node they visit
    try:
        with console.status(f"{spec.name}: int8 ({scheme})"):
            if scheme == "blockwise":
                model = nbits_quantize(model, bits=8, block_size=block_size, symmetric=True)
                tied = share_tied_embedding(model)
                _save(model, dst, big)
                del model
                op, how = "MatMulNBits", (f"MatMulNBits: 8-bit symmetric weights in blocks of "
                                          f"{block_size}, accuracy_level 4 (activations "
                                          "quantized per block at run time)")
            elif scheme == "dynamic":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                tied = None
                quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"],
                                 nodes_to_quantize=nodes, per_channel=True, reduce_range=True,
                                 weight_type=QuantType.QInt8, use_external_data_format=big)
                op, how = "MatMulInteger", ("dynamic: per-channel int8 weights (7-bit range), "
                                            "uint8 activations scaled per call")
            else:
                raise ToolkitError(f"unknown int8-cpu scheme {scheme!r} for graph {spec.name}")
    finally:
        logging.disable(logging.NOTSET)
    external.consolidate(dst, threshold)
    out = onnx.load(str(dst), load_external_data=False)
    n_q = sum(1 for n in out.graph.node if n.op_type == op)
    probe, ref = _probe(src, feeds)
    err = worst_rel_l2(run_onnx(dst, probe, "all"), ref) if probe else None
    total = len(all_layers)
    console.print(f"  {spec.name}: int8-cpu ({scheme}) — {n_q}/{total} "
                  f"{'/'.join(spec.quantize_ops)} weight layers in int8 ({op})"
                  + (f"; error vs fp32 rel L2 {err:.3g}" if err is not None else ""))
    return {"quantized_nodes": n_q, "quantizable_nodes": total, "weight_layers": total,
            "float_layers": [n for n in all_layers if n not in nodes],
            "int8_error_rel_l2": err, "calibration_inputs": 0, "int8_scheme": scheme,
            "int8_activations": "dynamic (per call)" if scheme == "dynamic" else
                                "dynamic per block (kernel)",
            "tied_embedding": tied,
            "quantization": how + " — onnxruntime CPU form, not buildable by TensorRT"}


def nbits_quantize(model, bits: int, block_size: int, symmetric: bool,
                   exclude: Sequence[str] = ()):
    """``model``'s constant-weight MatMuls (but ``exclude``) → MatMulNBits with ``bits``-bit
    weights in blocks of ``block_size`` along K, ``accuracy_level=4`` (the kernel quantizes each
    activation block to int8 and multiplies in int8). Returns the new ModelProto."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric,
                                       accuracy_level=4, bits=bits,
                                       quant_format=QuantFormat.QOperator)
    q = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=symmetric,
                             accuracy_level=4, nodes_to_exclude=list(exclude), algo_config=cfg)
    q.process()
    return q.model.model


def _save(model, dst: Path, big: bool) -> None:
    from onnxruntime.quantization.onnx_model import ONNXModel

    ONNXModel(model).save_model_to_file(str(dst), big)


def nbits_layers(model) -> dict[str, int]:
    """{MatMulNBits node: bits} of a graph."""
    return {n.name: int(_attrs(n).get("bits", 4)) for n in model.graph.node
            if n.op_type == "MatMulNBits"}


def quantize_int4(src: Path, dst: Path, spec: GraphSpec, feeds: Sequence[dict],
                  threshold: int = external.DEFAULT_THRESHOLD) -> dict:
    """The int4 form of a small-M graph (an LLM's decoder step) for onnxruntime on CPU: every
    constant-weight MatMul → MatMulNBits with 4-bit weights in blocks of
    ``spec.int4_block_size`` (``spec.int4_symmetric``; asymmetric blocks carry a zero point),
    except the layers named in ``spec.int4_8bit_layers`` (e.g. an LM head whose output is
    argmax'ed), which get 8-bit blocks. ``accuracy_level=4``: int8 compute on the unpacked
    weights (VNNI/AMX on x86). Weight-only: no activation ranges, no calibration. The step is
    memory-bound, so a quarter of the fp32 bytes is what makes it fast."""
    import logging

    big = bool(external.data_files(src))
    model = onnx.load(str(src), load_external_data=True)
    nodes = weight_matmuls(model, ("MatMul",))
    if not nodes:
        raise ToolkitError(f"graph {spec.name} has no MatMul with constant weights to quantise")
    eight = [n for n in nodes if any(k in n for k in spec.int4_8bit_layers)]
    bs, sym = spec.int4_block_size, spec.int4_symmetric
    logging.disable(logging.WARNING)  # the quantizers log every node they visit
    try:
        with console.status(f"{spec.name}: int4 (MatMulNBits, {len(nodes)} layers)"):
            model = nbits_quantize(model, bits=4, block_size=bs, symmetric=sym, exclude=eight)
            if eight:
                model = nbits_quantize(model, bits=8, block_size=bs, symmetric=True)
            tied = share_tied_embedding(model)
            _save(model, dst, big)
            del model
    finally:
        logging.disable(logging.NOTSET)
    external.consolidate(dst, threshold)
    probe, ref = _probe(src, feeds)
    err = worst_rel_l2(run_onnx(dst, probe, "all"), ref) if probe else None
    moved: dict[str, float] = {}
    budget = spec.int4_budget
    if budget is not None and err is not None and err > budget:
        moved, err = _int4_with_8bit_layers(src, dst, spec, probe, ref, budget, threshold, big)
    out = onnx.load(str(dst), load_external_data=False)
    bits = nbits_layers(out)
    n4 = sum(1 for b in bits.values() if b == 4)
    left_float = weight_matmuls(out, ("MatMul",))
    del out
    how = (f"MatMulNBits: 4-bit {'symmetric' if sym else 'asymmetric (zero point per block)'} "
           f"weights in blocks of {bs}"
           + (f", {', '.join(eight)} at 8-bit symmetric blocks" if eight else "")
           + (f", {len(moved)} more layers at 8-bit by measured sensitivity (budget rel L2 ≤ "
              f"{budget:g})" if moved else "")
           + ", accuracy_level 4 (activations quantized per block at run time)")
    console.print(f"  {spec.name}: int4 — {n4}/{len(nodes)} weight MatMuls in 4-bit"
                  + (f", {len(bits) - n4} in 8-bit" if len(bits) > n4 else "")
                  + (f" ({len(moved)} of them by measured sensitivity)" if moved else "")
                  + (f"; error vs fp32 rel L2 {err:.3g}" if err is not None else ""))
    return {"quantized_nodes": len(bits), "quantizable_nodes": len(nodes),
            "weight_layers": len(nodes), "int4_nodes": n4,
            "int8_nodes": sorted(n for n, b in bits.items() if b == 8),
            "int8_by_sensitivity": {n: round(v, 5) for n, v in moved.items()},
            "int4_budget_rel_l2": budget,
            "float_layers": left_float,
            "int4_error_rel_l2": err, "calibration_inputs": 0, "int4_scheme": "nbits",
            "int4_block_size": bs, "int4_symmetric": sym,
            "int8_activations": "dynamic per block (kernel)", "tied_embedding": tied,
            "quantization": how + " — onnxruntime CPU form, not buildable by TensorRT"}


# refinement tries where each is a session over a large graph: the int4 search's always (it
# runs the whole decoder on the probe feeds, about a minute on the InternVL2-2B preset), the
# int8 search's past LARGE_GRAPH_BYTES
FEW_REFINE_TRIES = 8


def _int4_with_8bit_layers(src: Path, dst: Path, spec: GraphSpec, probe: Sequence[dict],
                           ref: Sequence[dict], budget: float, threshold: int,
                           big: bool) -> tuple[dict[str, float], float]:
    """The int4 graph at ``dst`` is over ``budget``: move its most sensitive 4-bit layers to
    8-bit blocks until it holds (the int8 search's answer, ``_shortest_prefix``; llama.cpp's
    mixed "K-quants" keep some tensors at more bits for the same reason). Candidates are
    assembled from the 4-bit graph and one all-8-bit graph beside it (no re-quantization per
    candidate; weights read from their data files). Sensitivity: each 4-bit layer's output vs a
    float twin of it fed the same input (``_nbits_sensitivity``). Rewrites ``dst``; returns
    ({layer moved: its sensitivity}, the graph's error)."""
    import logging

    q8_path = dst.with_name(dst.stem + ".all8bit.onnx")
    try:
        logging.disable(logging.WARNING)
        try:
            with console.status(f"{spec.name}: int4 over its budget (rel L2 {budget:g}); "
                                "every layer at 8-bit blocks, the other candidate form"):
                model = onnx.load(str(src), load_external_data=True)
                model = nbits_quantize(model, bits=8, block_size=spec.int4_block_size,
                                       symmetric=True)
                _save(model, q8_path, big)
                del model
        finally:
            logging.disable(logging.NOTSET)
        external.consolidate(q8_path, threshold)
        q4 = onnx.load(str(dst), load_external_data=False)
        q8 = onnx.load(str(q8_path), load_external_data=False)
        with console.status(f"{spec.name}: measuring each 4-bit layer against its float twin"):
            sens = _nbits_sensitivity(src, dst, probe[:2])
        order = sorted(sens, key=sens.get, reverse=True)

        def error(at8: set[str]) -> float:
            candidate = _with_8bit_layers(q4, q8, at8)
            _prune(candidate)   # the 4-bit weights of the moved layers: not loaded
            return worst_rel_l2(_run_in(candidate, dst.parent, probe), ref)

        chosen, err = _shortest_prefix(
            order, error, budget,
            f"{spec.name}: choosing 4-bit layers (budget rel L2 ≤ {budget:g})", "at 8-bit",
            FEW_REFINE_TRIES,
            f"graph {spec.name}: no layer can stay 4-bit within the error budget (rel L2 ≤ "
            f"{budget:g}); export --int8 --int8-target cpu (8-bit blocks) instead")
        final = _with_8bit_layers(q4, q8, chosen)
        _prune(final)
        external.save(final, dst, threshold)   # streamed from both graphs' data files
        # named as they are in the shipped graph (the 8-bit quantizer's node names)
        out8 = {n.output[0]: n.name for n in q8.graph.node if n.op_type == "MatMulNBits"}
        name8 = {n.name: out8[n.output[0]] for n in q4.graph.node if n.name in chosen}
        return {name8[n]: sens[n] for n in order if n in chosen}, err
    finally:
        q8_path.unlink(missing_ok=True)
        q8_path.with_name(external.data_name(q8_path)).unlink(missing_ok=True)


def _nbits_sensitivity(fp32: Path, q4: Path, feeds: Sequence[dict]) -> dict[str, float]:
    """Local error of every 4-bit MatMulNBits layer of ``q4``: relative L2 between its output
    and a float MatMul twin with the fp32 graph's weight fed the same input (the quantizer
    keeps each layer's output name, which pairs it with its fp32 node). Weights are read from
    the data files and the twins run in groups, as in ``layer_sensitivity``."""
    with external.linked(fp32, q4.parent) as src:
        q = onnx.load(str(q4), load_external_data=False)
        by_output = {n.output[0]: n for n in src.graph.node if n.op_type == "MatMul"}
        inits = {i.name: i for i in src.graph.initializer}
        twins = []
        for n in q.graph.node:
            if n.op_type != "MatMulNBits" or int(_attrs(n).get("bits", 4)) != 4:
                continue
            orig = by_output.get(n.output[0])
            if orig is None or orig.input[1] not in inits:
                continue
            w = onnx.TensorProto()
            w.CopyFrom(inits[orig.input[1]])
            w.name = f"{w.name}__float_twin"
            twin = onnx.helper.make_node("MatMul", [n.input[0], w.name],
                                         [f"{n.output[0]}__float_twin"],
                                         name=f"{n.name}__float_twin")
            twins.append((n.name, twin, w, n.output[0]))
        return _twin_errors(q, q4.parent, feeds, twins)


def _with_8bit_layers(q4, q8, names: set[str]):
    """A copy of the 4-bit graph ``q4`` in which the MatMulNBits layers ``names`` are the
    all-8-bit graph ``q8``'s node for the same output, with its weights (renamed: both
    quantizers name a layer's scales alike)."""
    m = onnx.ModelProto()
    m.CopyFrom(q4)
    eight = {n.output[0]: n for n in q8.graph.node if n.op_type == "MatMulNBits"}
    q8_inits = {i.name: i for i in q8.graph.initializer}
    for k, n in enumerate(m.graph.node):
        if n.name not in names:
            continue
        other = onnx.NodeProto()
        other.CopyFrom(eight[n.output[0]])
        for i, name in enumerate(other.input):
            if i and name in q8_inits:
                t = onnx.TensorProto()
                t.CopyFrom(q8_inits[name])
                t.name = f"{name}__8bit"
                m.graph.initializer.append(t)
                other.input[i] = t.name
        m.graph.node[k].CopyFrom(other)
    return m


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _same_matrix(table: np.ndarray, blocks: np.ndarray, scales: np.ndarray) -> bool:
    """Whether 8-bit symmetric ``blocks`` [V, K/bs, bs] with ``scales`` are ``table`` [V, K]
    quantized: every weight within one step of its dequantized value (half a step when
    rounded, one when a block's positive maximum is clipped to 127 of a ±128 scale)."""
    v, k = table.shape
    step = scales.reshape(v, -1, 1)
    deq = (blocks.astype(np.float32) - 128.0) * step
    limit = np.broadcast_to(np.abs(step), blocks.shape).reshape(v, k)  # (scales can be < 0)
    return bool(np.all(np.abs(deq.reshape(v, k) - table) <= limit * (1 + 1e-5) + 1e-7))


def share_tied_embedding(model: onnx.ModelProto) -> str | None:
    """Where a Gather looks rows up in an fp32 table that a MatMulNBits node holds as 8-bit
    blocks (a decoder's tied token embedding: the lookup and the output projection are one
    matrix), make it read the blocks (GatherBlockQuantized, the same dequantization as the
    projection) and drop the fp32 copy — 80 of the 112 MB of tiny.en's int8 decoder. The
    lookup is then int8 like the projection it is tied to. Returns the Gather's name."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    blockwise = [n for n in graph.node if n.op_type == "MatMulNBits" and n.input[1] in inits
                 and n.input[2] in inits and (len(n.input) < 4 or not n.input[3])
                 and _attrs(n).get("bits") == 8]
    for pos, g in enumerate(graph.node):
        if g.op_type != "Gather" or g.input[0] not in inits or _attrs(g).get("axis", 0) != 0:
            continue
        table = numpy_helper.to_array(inits[g.input[0]])
        if table.dtype != np.float32 or table.ndim != 2:
            continue
        for m in blockwise:
            a = _attrs(m)
            if (a.get("N"), a.get("K")) != table.shape:
                continue
            blocks = numpy_helper.to_array(inits[m.input[1]])
            scales = numpy_helper.to_array(inits[m.input[2]])
            if blocks.ndim != 3 or not _same_matrix(table, blocks, scales):
                continue
            name, n_blocks = g.name or g.output[0], blocks.shape[1]
            scales3 = numpy_helper.from_array(scales.reshape(table.shape[0], n_blocks, 1),
                                              f"{m.input[2]}_gather")
            width = numpy_helper.from_array(np.array([table.shape[1]], np.int64),
                                            f"{name}_width")
            rows, ids_shape, shape = (f"{name}_blocks", f"{name}_ids_shape", f"{name}_shape")
            new = [helper.make_node("GatherBlockQuantized", [m.input[1], g.input[1],
                                                             scales3.name], [rows],
                                    name=f"{name}_Q8", domain="com.microsoft", gather_axis=0,
                                    quantize_axis=2, block_size=int(a["block_size"]), bits=8),
                   helper.make_node("Shape", [g.input[1]], [ids_shape], name=f"{name}_Shape"),
                   helper.make_node("Concat", [ids_shape, width.name], [shape], axis=0,
                                    name=f"{name}_Concat"),
                   helper.make_node("Reshape", [rows, shape], [g.output[0]],
                                    name=f"{name}_Reshape")]
            del graph.node[pos]
            for i, node in enumerate(new):
                graph.node.insert(pos + i, node)
            graph.initializer.extend([scales3, width])
            if not any(g.input[0] in n.input for n in graph.node):
                graph.initializer.remove(inits[g.input[0]])
            return name
    return None


def tie_transposed_embedding(path: Path) -> str | None:
    """Where a Gather looks rows up in an fp32 table whose exact transpose a MatMul holds as
    its weight (a decoder's tied token embedding and output projection, which the ONNX export
    writes as two initializers), make it gather columns of the MatMul's weight and transpose
    them — the same numbers, one copy: 80 of the 193 MB of tiny.en's fp32 decoder, and about
    as much resident memory. Graphs with external data are left alone (their exports stay in
    bounded memory). Rewrites ``path``; returns the Gather's name."""
    from onnx import helper, numpy_helper

    if external.data_files(path):
        return None
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.input, *graph.value_info]}
    for pos, g in enumerate(graph.node):
        if g.op_type != "Gather" or g.input[0] not in inits or _attrs(g).get("axis", 0) != 0 \
                or g.input[1] not in ranks:
            continue
        table = numpy_helper.to_array(inits[g.input[0]])
        if table.dtype != np.float32 or table.ndim != 2:
            continue
        for m in graph.node:
            w = inits.get(m.input[1]) if m.op_type == "MatMul" and len(m.input) > 1 else None
            if w is None or list(w.dims) != [table.shape[1], table.shape[0]] \
                    or not np.array_equal(numpy_helper.to_array(w), table.T):
                continue
            name, rank = g.name or g.output[0], ranks[g.input[1]]
            new = [helper.make_node("Gather", [m.input[1], g.input[1]], [f"{name}_columns"],
                                    axis=1, name=f"{name}_columns"),
                   helper.make_node("Transpose", [f"{name}_columns"], [g.output[0]],
                                    perm=[*range(1, rank + 1), 0], name=f"{name}_rows")]
            del graph.node[pos]
            for i, node in enumerate(new):
                graph.node.insert(pos + i, node)
            if not any(g.input[0] in n.input for n in graph.node):
                graph.initializer.remove(inits[g.input[0]])
            onnx.save(model, str(path))
            return name
    return None


MAX_REFINE_TRIES = 48
# each try is a session over the whole graph: past this much weight (a 2B decoder: 8.5 GB,
# about a minute a try on 2 cores) the refinement stops after FEW_REFINE_TRIES tries
LARGE_GRAPH_BYTES = 1 << 30


def _choose_float_layers(src: Path, qdq: Path, spec: GraphSpec, nodes: Sequence[str],
                         sensitivity: dict[str, float], feeds: Sequence[dict],
                         ref: Sequence[dict], budget: float) -> tuple[list[str], float]:
    """The layers to keep float so that the graph's error stays within ``budget``.

    Candidates are made by rewiring layers of the all-int8 graph back to their float input and
    weight (no re-quantization), judged with Q/DQ in float. A binary search finds the shortest
    prefix of the most sensitive layers to keep float; then, least sensitive first, each of those
    is tried in int8 again and kept there if the budget still holds (the local ranking does not
    see how errors compound, so the prefix alone keeps too many float)."""
    with external.linked(src, qdq.parent) as src_model:
        return _search_float_layers(qdq, src_model, spec, nodes, sensitivity, feeds, ref, budget)


def _search_float_layers(qdq: Path, src_model, spec: GraphSpec, nodes: Sequence[str],
                         sensitivity: dict[str, float], feeds: Sequence[dict],
                         ref: Sequence[dict], budget: float) -> tuple[list[str], float]:
    """``_choose_float_layers``'s search; every candidate is assembled from the two graphs'
    structure alone and reads its weights from their data files (``external.linked``)."""
    q = onnx.load(str(qdq), load_external_data=False)
    order = sorted(nodes, key=sensitivity.get, reverse=True)

    def error(float_set: set[str]) -> float:
        # pruned: with graph optimisations off nothing removes the Q/DQ of the layers put back
        # to float, and onnxruntime then holds their dequantized weights to the end of the run
        # (the InternVL2-2B decoder's candidates: 15 GB unpruned, 7.6 GB pruned)
        candidate = _with_float_layers(q, src_model, float_set)
        _prune(candidate)
        return worst_rel_l2(_run_in(candidate, qdq.parent, feeds), ref)

    float_set, err = _shortest_prefix(
        order, error, budget, f"{spec.name}: choosing int8 layers (budget rel L2 ≤ {budget:g})",
        "float", (MAX_REFINE_TRIES if external.weight_bytes(q) + external.weight_bytes(src_model)
                  < LARGE_GRAPH_BYTES else FEW_REFINE_TRIES),
        f"graph {spec.name}: no int8 layer can be kept within the error budget (rel L2 ≤ "
        f"{budget:g}); export it at fp16 or fp32")
    return [n for n in order if n in float_set], err


def _shortest_prefix(order: Sequence[str], error, budget: float, title: str, kept: str,
                     refine: int, none_fit: str) -> tuple[set[str], float]:
    """The layers to keep out of the cheaper form: a binary search for the shortest prefix of
    ``order`` (most sensitive first) whose ``error(set)`` is within ``budget`` — never all of
    them, which would leave nothing in that form — then, least sensitive first, up to
    ``refine`` of those tried in the cheaper form again and left there if the budget still
    holds (a local ranking does not see how errors compound, so the prefix alone keeps too
    many). ``none_fit``: the error when not even one layer fits."""
    lo, hi, best = 1, len(order) - 1, None
    steps = int(np.ceil(np.log2(len(order) + 1))) + min(refine, len(order))
    with Steps(title, total=steps) as bar:
        while lo <= hi:
            k = (lo + hi) // 2
            e = error(set(order[:k]))
            bar.advance(f"{k} {kept} → rel L2 {e:.3f}")
            if e <= budget:
                best, hi = (k, e), k - 1
            else:
                lo = k + 1
        if best is None:
            raise ToolkitError(none_fit)
        chosen, err = set(order[:best[0]]), best[1]
        for n in list(reversed(order[:best[0]]))[:refine]:
            e = error(chosen - {n})
            if e <= budget:
                chosen.discard(n)
                err = e
            bar.advance(f"{len(chosen)} {kept} → rel L2 {err:.3f}")
    return chosen, err


def _with_float_layers(q, src_model, float_set: set[str]):
    """A copy of QDQ model ``q`` in which the layers named in ``float_set`` take their float
    input tensor and float weight again (their Q/DQ pairs are left unused)."""
    m = onnx.ModelProto()
    m.CopyFrom(q)
    producers = {o: n for n in m.graph.node for o in n.output}
    src_nodes = {n.name: n for n in src_model.graph.node}
    have = {i.name for i in m.graph.initializer}
    src_inits = {i.name: i for i in src_model.graph.initializer}
    for n in m.graph.node:
        if n.name not in float_set or n.name not in src_nodes:
            continue
        dq = producers.get(n.input[0])
        qn = (producers.get(dq.input[0])
              if dq is not None and dq.op_type == "DequantizeLinear" else None)
        if qn is not None and qn.op_type == "QuantizeLinear":
            n.input[0] = qn.input[0]
        w = src_nodes[n.name].input[1]
        if w in src_inits and w not in have:
            m.graph.initializer.append(src_inits[w])
            have.add(w)
        n.input[1] = w
    return m


def _prune(model) -> None:
    """Drop nodes whose outputs nothing uses (the Q/DQ pairs of layers put back to float) and
    initializers no node reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = outputs | {i for n in model.graph.node for i in n.input}
        keep = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(keep) == len(model.graph.node):
            break
        del model.graph.node[:]
        model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input} | outputs
    inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def _calibrate(src: Path, spec: GraphSpec, feeds: Sequence[dict], activations: str,
               cache: Path, advance=None) -> None:
    """MinMax activation ranges of the tensors onnxruntime's quantizer reads (every float input
    and output of a ``spec.quantize_ops`` node), written as its calibration cache — the same
    numbers its MinMax calibrator computes (symmetric: ±max|x| for int8 activations), measured
    with bounded memory (``ort.value_ranges``)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    with _inferred(src) as inferred:
        skeleton = onnx.load(str(inferred), load_external_data=False)
    types = _value_types(skeleton)
    inits = {i.name for i in skeleton.graph.initializer}
    tensors = list(dict.fromkeys(
        t for n in skeleton.graph.node if n.op_type in spec.quantize_ops
        for t in list(n.input) + list(n.output)
        if t and t not in inits and types.get(t) == onnx.TensorProto.FLOAT))
    del skeleton
    ranges = value_ranges(src, feeds, tensors, advance)
    pairs = {}
    for t, (lo, hi) in ranges.items():
        if activations != "uint8":  # symmetric, as the MinMax calibrator with symmetric=True
            m = max(abs(lo), abs(hi))
            lo, hi = -m, m
        pairs[t] = (np.array(lo, dtype=np.float32), np.array(hi, dtype=np.float32))
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, pairs), cache)


def _quantize(src: Path, dst: Path, spec: GraphSpec, nodes: Sequence[str], activations: str,
              cache: Path) -> None:
    """One onnxruntime quantize_static call from the range cache ``_calibrate`` wrote (also
    re-used for another layer selection)."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a "consider pre-processing" hint
    try:
        quantize_static(str(src), str(dst), None,
                        use_external_data_format=bool(external.data_files(src)),
                        quant_format=QuantFormat.QDQ,
                        activation_type=(QuantType.QUInt8 if activations == "uint8"
                                         else QuantType.QInt8),
                        weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_quantize=list(nodes), op_types_to_quantize=list(spec.quantize_ops),
                        calibrate_method=CalibrationMethod.MinMax,
                        calibration_cache_path=str(cache),
                        extra_options={"ActivationSymmetric": activations != "uint8",
                                       "WeightSymmetric": True,
                                       "DedicatedQDQPair": False,
                                       "QuantizeBias": False,
                                       # TensorRT form: Q/DQ on the layers' inputs only
                                       # (TensorRT's placement) — re-quantizing every output
                                       # per tensor tripled the trained Whisper encoder's error
                                       # (0.19 → 0.71). The static uint8 CPU form keeps output
                                       # Q/DQ: onnxruntime needs it to fuse QLinearMatMul.
                                       "OpTypesToExcludeOutputQuantization":
                                           list(spec.quantize_ops) if activations == "int8"
                                           else []})
    finally:
        root.setLevel(level)
