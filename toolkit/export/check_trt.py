"""``toolkit check-trt``: would these ONNX graphs build with TensorRT 10? — a static check.

No TensorRT needed. Every graph of an artifact is checked against:

- TensorRT 10's ONNX operator support matrix (onnx-tensorrt ``docs/operators.md``, TensorRT
  10.x): unsupported ops are errors; ops that only later 10.x minors added are warnings
  (JetPack 6 ships 10.3); ops from non-standard domains (custom / com.microsoft) are errors;
- the type column of that matrix for each node's data input (e.g. MatMul on int64);
- attribute restrictions listed there (pooling rank and dilations, Resize modes, TopK sorted,
  ScatterND reduction, Dropout training, LayerNormalization extra outputs, Q/DQ zero points,
  axes/K/depth inputs that must be build-time constants, LSTM layout/input_forget, ...);
- data types: DOUBLE (TensorRT narrows it to float, clamping at FLT_MAX), STRING / complex
  (unsupported), UINT8 other than at the network boundary, INT8/INT4/FP8 other than through
  Q/DQ; INT64 is native in TensorRT 10 (noted for graph I/O, never an error);
- control flow: If / Loop / Scan are refused (TensorRT-friendly exports must not contain them);
- dynamic shapes: every dynamic input needs a TensorRT profile in the manifest with the right
  rank, static axes unchanged and min <= opt <= max; rank <= 8 (TensorRT's Dims limit);
- opset inside TensorRT 10.0's range 9..20 (newer opsets need a newer 10.x: warning).

Findings are (severity, graph, node, op, problem); errors make the command exit non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..core.errors import ToolkitError
from ..core.progress import console
from .manifest import load_manifest

# ---- the operator matrix of onnx-tensorrt docs/operators.md (TensorRT 10.x) -------------------
FLOATS = ("FP32", "FP16", "BF16")
FLOAT_INT = FLOATS + ("INT32", "INT64")
FLOAT_INT_BOOL = FLOAT_INT + ("BOOL",)
BOOLS = ("BOOL",)
SUPPORTED: dict[str, tuple] = {}
for _ops, _types in [
    (
        "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv "
        "ConvTranspose Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool "
        "GlobalLpPool GlobalMaxPool GroupNormalization GRU HardSigmoid HardSwish Hardmax "
        "ImageScaler "
        "InstanceNormalization IsInf LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM "
        "LpNormalization LpPool MatMul MaxPool MeanVarianceNormalization ParametricSoftplus PRelu "
        "QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Reciprocal "
        "Resize "
        "RNN Round ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh "
        "ThresholdedRelu Upsample",
        FLOATS,
    ),
    (
        "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less "
        "LessOrEqual "
        "Max Min Mod Mul Neg Pad Pow Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp "
        "ReduceMax "
        "ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements "
        "ScatterND Shrink Sign SpaceToDepth Sub Sum",
        FLOAT_INT,
    ),
    (
        "Concat Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop OneHot "
        "Reshape "
        "ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where",
        FLOAT_INT_BOOL,
    ),
    ("Cast CastLike", FLOAT_INT_BOOL + ("UINT8",)),
    ("Constant ConstantOfShape", FLOAT_INT_BOOL + ("FP8", "FP4", "INT4")),
    ("And Not Or Xor", BOOLS),
    ("DequantizeLinear", ("INT8", "FP8", "FP4", "INT4")),
    ("Mean", FLOAT_INT + ("FP8",)),
    ("Gelu", FLOAT_INT + ("INT8",)),
    (
        "BlackmanWindow HammingWindow HannWindow Mish NonMaxSuppression NonZero RoiAlign "
        "DeformConv "
        "GridSample",
        ("FP32", "FP16"),
    ),
    ("STFT", ("FP32",)),
]:
    for _op in _ops.split():
        SUPPORTED[_op] = _types
# Present in the 10.x matrix, but only in later minors than JetPack 6's TensorRT 10.3.
LATE_10X = {
    "Attention": FLOATS + ("INT8", "FP8"),
    "RMSNormalization": FLOATS,
    "RotaryEmbedding": FLOATS,
    "TensorScatter": FLOATS + ("INT32",),
}
UNSUPPORTED = set(
    "AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad "
    "Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder "
    "MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss "
    "Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch "
    "SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength "
    "SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer "
    "StringSplit TfIdfVectorizer Unique".split()
)
CONTROL_FLOW = ("If", "Loop", "Scan")
OPSET_RANGE = (9, 20)  # TensorRT 10.0; 10.x minors raise the upper end (10.15: 24)
MAX_RANK = 8  # nvinfer1::Dims::MAX_DIMS

# ONNX TensorProto element types → the names used in the matrix
_ELEM = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "STRING",
    9: "BOOL",
    10: "FP16",
    11: "DOUBLE",
    12: "UINT32",
    13: "UINT64",
    14: "COMPLEX64",
    15: "COMPLEX128",
    16: "BF16",
    17: "FP8",
    18: "FP8",
    19: "FP8",
    20: "FP8",
    21: "UINT4",
    22: "INT4",
    23: "FP4",
}
_QUANT = {"INT8", "INT4", "FP8", "FP4"}


@dataclass
class Finding:
    severity: str  # "error" | "warning" | "info"
    graph: str
    node: str
    op: str
    problem: str


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class _Graph:
    """What the checks read off one (shape-inferred) graph."""

    g: object  # onnx GraphProto
    types: dict  # tensor name -> ONNX element type
    inits: dict  # initializer name -> TensorProto
    consts: dict  # Constant output name -> TensorProto
    io_names: set
    producers: dict  # tensor name -> producing node

    def is_const(self, name) -> bool:
        return not name or name in self.inits or name in self.consts

    def const_value(self, name):
        from onnx import numpy_helper

        t = self.inits.get(name) if name in self.inits else self.consts.get(name)
        return None if t is None else numpy_helper.to_array(t)


def check_model(model, graph_name: str, manifest_graph: Mapping | None = None) -> list[Finding]:
    """Static TensorRT 10 check of one ONNX ModelProto: opset, data types, graph inputs, every
    node (op, input type, attributes), and the dynamic inputs against the manifest's profiles."""
    out: list[Finding] = []

    def add(sev, node, problem):
        out.append(
            Finding(
                sev,
                graph_name,
                getattr(node, "name", "") or "-",
                getattr(node, "op_type", "") or "-",
                problem,
            )
        )

    _check_opset(model, add)
    graph = _read_graph(model)
    _check_types(graph, graph_name, out)
    _check_inputs(graph, graph_name, out)
    for n in graph.g.node:
        _check_node(n, graph, add)
    if manifest_graph is not None:
        _check_profiles(graph, manifest_graph, add)
    return out


def _check_opset(model, add) -> None:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not (OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]):
        add(
            "warning" if opset > OPSET_RANGE[1] else "error",
            None,
            f"opset {opset} is outside TensorRT 10.0's range {OPSET_RANGE[0]}..{OPSET_RANGE[1]}"
            + (
                "; needs a newer TensorRT 10.x — export with --opset 17"
                if opset > OPSET_RANGE[1]
                else ""
            ),
        )


def _read_graph(model) -> _Graph:
    """Shape inference (declared types when it fails), then every tensor's element type."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - fall back to declared types
        inferred = model
    g = inferred.graph
    types: dict[str, int] = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    inits = {i.name: i for i in g.initializer}
    for i in g.initializer:
        types[i.name] = i.data_type
    consts = {}
    for n in g.node:
        if n.op_type == "Constant":
            t = _attr(n, "value")
            if t is not None:
                for o in n.output:
                    consts[o] = t
                    types[o] = t.data_type
    return _Graph(
        g,
        types,
        inits,
        consts,
        {v.name for v in list(g.input) + list(g.output)},
        {o: n for n in g.node for o in n.output},
    )


def _check_types(graph: _Graph, graph_name: str, out: list) -> None:
    """Data types anywhere in the graph: DOUBLE, unsupported types, inner UINT8, quantized I/O."""
    reported = set()
    for name, et in graph.types.items():
        tname = _ELEM.get(et, str(et))
        if name in reported:
            continue
        prod = graph.producers.get(name)
        where = prod.name if prod else name
        if tname == "DOUBLE":
            reported.add(name)
            out.append(
                Finding(
                    "error",
                    graph_name,
                    where,
                    prod.op_type
                    if prod
                    else ("input" if name in graph.io_names else "initializer"),
                    f"tensor {name!r} is DOUBLE: TensorRT casts it down to FLOAT and "
                    "clamps at +-FLT_MAX; export float32",
                )
            )
        elif tname in (
            "STRING",
            "COMPLEX64",
            "COMPLEX128",
            "UINT16",
            "INT16",
            "UINT32",
            "UINT64",
            "UINT4",
        ):
            reported.add(name)
            out.append(
                Finding(
                    "error",
                    graph_name,
                    where,
                    prod.op_type if prod else "tensor",
                    f"tensor {name!r} has type {tname}, which TensorRT 10 does not support",
                )
            )
        elif (
            tname == "UINT8"
            and name not in graph.io_names
            and (prod is None or prod.op_type != "Cast")
        ):
            reported.add(name)
            out.append(
                Finding(
                    "error",
                    graph_name,
                    where,
                    prod.op_type if prod else "tensor",
                    f"tensor {name!r} is UINT8 inside the network; TensorRT takes UINT8 "
                    "only as network input/output",
                )
            )
        elif tname in _QUANT and name in graph.io_names:
            reported.add(name)
            out.append(
                Finding(
                    "error",
                    graph_name,
                    name,
                    "input/output",
                    f"network I/O {name!r} is {tname}; TensorRT treats {tname} as a "
                    "quantized type, reachable only through Q/DQ from a float tensor",
                )
            )


def _check_inputs(graph: _Graph, graph_name: str, out: list) -> None:
    """Graph inputs: INT64 (a note) and the rank limit."""
    for v in graph.g.input:
        if v.name in graph.inits:
            continue
        t = v.type.tensor_type
        if _ELEM.get(t.elem_type) == "INT64":
            out.append(
                Finding(
                    "info",
                    graph_name,
                    v.name,
                    "input",
                    "INT64 input: native in TensorRT 10 (8.x narrowed it to INT32)",
                )
            )
        rank = len(t.shape.dim)
        if rank > MAX_RANK:
            out.append(
                Finding(
                    "error",
                    graph_name,
                    v.name,
                    "input",
                    f"rank {rank} exceeds TensorRT's maximum of {MAX_RANK} dimensions",
                )
            )


def _check_node(n, graph: _Graph, add) -> None:
    """One node: domain, control flow, the operator matrix, its data input's type, attributes."""
    op, dom = n.op_type, n.domain
    if dom not in ("", "ai.onnx"):
        add(
            "error",
            n,
            f"custom op from domain {dom!r}: TensorRT has no importer for it "
            "(needs a plugin); export with standard ONNX ops only",
        )
        return
    if op in CONTROL_FLOW:
        add(
            "error",
            n,
            f"{op} (control flow): TensorRT-friendly exports must not contain "
            "If/Loop/Scan (a merged with/without-past decoder is the classic case); "
            "export separate graphs instead",
        )
        return
    if op in UNSUPPORTED:
        add("error", n, f"{op} is not supported by TensorRT 10's ONNX parser")
        return
    allowed = SUPPORTED.get(op)
    if allowed is None and op in LATE_10X:
        add(
            "warning",
            n,
            f"{op} is only supported by recent TensorRT 10.x releases (not the "
            "10.3 of JetPack 6); decompose it for Jetson",
        )
        allowed = LATE_10X[op]
    elif allowed is None:
        add("error", n, f"{op} is not in TensorRT 10's ONNX operator support matrix")
        return
    data_in = n.input[0] if n.input else ""
    if data_in and data_in in graph.types:
        tname = _ELEM.get(graph.types[data_in], str(graph.types[data_in]))
        if (
            tname not in allowed
            and tname not in ("DOUBLE",)
            and not (tname in _QUANT and op in ("DequantizeLinear",))
        ):
            add(
                "error",
                n,
                f"{op} on a {tname} input is unsupported (TensorRT 10 supports "
                f"{', '.join(allowed)})",
            )
    _check_attributes(n, add, graph.is_const, graph.const_value)


def _check_profiles(graph: _Graph, manifest_graph: Mapping, add) -> None:
    """Every dynamic input has a min/opt/max profile of its rank, static axes unchanged."""
    g, inits = graph.g, graph.inits
    profiles = manifest_graph.get("trt_profiles") or {}
    for v in g.input:
        if v.name in inits:
            continue
        dims = [
            d.dim_param if d.dim_param else (int(d.dim_value) if d.HasField("dim_value") else "?")
            for d in v.type.tensor_type.shape.dim
        ]
        dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
        if dynamic:
            _check_profile(v.name, dims, dynamic, profiles.get(v.name), add)
    for name in profiles:
        if name not in {v.name for v in g.input}:
            add(
                "error",
                type("N", (), {"name": name, "op_type": "profile"}),
                "TensorRT profile names an input the graph does not have",
            )


def _check_profile(name: str, dims: list, dynamic: list, p: Mapping | None, add) -> None:
    fake = type("N", (), {"name": name, "op_type": "input"})
    if p is None:
        add(
            "error",
            fake,
            f"dynamic input {dims} has no TensorRT profile (min/opt/max) "
            "in the manifest; the graph's spec must declare one",
        )
        return
    for key in ("min", "opt", "max"):
        s = p.get(key, [])
        if len(s) != len(dims):
            add("error", fake, f"profile {key} {s} has rank {len(s)}, the input has {len(dims)}")
            return
        for i, d in enumerate(dims):
            if isinstance(d, int) and d > 0 and s[i] != d:
                add("error", fake, f"profile {key} {s} changes static axis {i} (= {d})")
    if any(not (a <= b <= c) for a, b, c in zip(p["min"], p["opt"], p["max"])):
        add("error", fake, f"profile is not min <= opt <= max: {p}")
    elif any(p["min"][i] == 0 for i in dynamic):
        add(
            "info",
            fake,
            f"profile min has a zero-length axis {p['min']} (empty "
            "tensors are allowed in TensorRT 10; make sure the graph handles them)",
        )


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _check_pool(n, add, a, const_value) -> None:
    op = n.op_type
    ks = a("kernel_shape") or []
    if op != "LpPool" and len(ks) not in (2, 3):
        add("error", n, f"{op} with {len(ks)}-D kernel: TensorRT pools 2D or 3D only "
                        "(unsqueeze 1-D inputs to 2-D)")
    dil = a("dilations")
    if dil and any(d != 1 for d in dil):
        add("error", n, f"{op} dilations {list(dil)}: must be empty or all ones")
    if op == "MaxPool" and len(n.output) > 1 and n.output[1]:
        add("error", n, "MaxPool Indices output is unsupported")


RESIZE_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                     "align_corners")
RESIZE_NEAREST = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


def _check_resize(n, add, a, const_value) -> None:
    ctm = _text(a("coordinate_transformation_mode", b"half_pixel"))
    mode = _text(a("mode", b"nearest"))
    nm = _text(a("nearest_mode", b"round_prefer_floor"))
    kar = _text(a("keep_aspect_ratio_policy", b"stretch"))
    if ctm not in RESIZE_TRANSFORMS:
        add("error", n, f"Resize coordinate_transformation_mode {ctm!r} is unsupported")
    if mode not in ("nearest", "linear"):
        add("error", n, f"Resize mode {mode!r} is unsupported (nearest or linear only)")
    if nm not in RESIZE_NEAREST:
        add("error", n, f"Resize nearest_mode {nm!r} is unsupported")
    if a("antialias", 0):
        add("error", n, "Resize antialias is unsupported")
    if kar != "stretch":
        add("error", n, f"Resize keep_aspect_ratio_policy {kar!r} is unsupported (stretch only)")


def _check_topk(n, add, a, const_value) -> None:
    if a("sorted", 1) != 1:
        add("error", n, "TopK sorted=0 is unsupported")
    if len(n.input) > 1:
        k = const_value(n.input[1])
        if k is None:
            add("error", n, "TopK K must be a build-time constant")
        elif int(k.reshape(-1)[0]) >= 3840:
            add("error", n, f"TopK K={int(k.reshape(-1)[0])} must be < 3840")


def _check_scatter_nd(n, add, a, const_value) -> None:
    if _text(a("reduction", b"none")) != "none":
        add("error", n, "ScatterND reduction other than none is unsupported")


def _check_layer_norm(n, add, a, const_value) -> None:
    if any(o for o in n.output[1:]):
        add("error", n, "LayerNormalization: only the first output Y is supported")


def _check_dropout(n, add, a, const_value) -> None:
    if len(n.input) > 2 and n.input[2]:
        v = const_value(n.input[2])
        if v is None or bool(v.reshape(-1)[0]):
            add("error", n, "Dropout training_mode must be a constant False")


def _check_constant(n, add, a, const_value) -> None:
    if any(x.name in ("sparse_value", "value_string", "value_strings") for x in n.attribute):
        add("error", n, "Constant with sparse/string values is unsupported")


def _check_lstm(n, add, a, const_value) -> None:
    if a("input_forget", 0) != 0 or a("layout", 0) != 0:
        add("error", n, "LSTM input_forget and layout must be 0")


def _check_zero_point(n, add, a, const_value) -> None:
    if len(n.input) > 2 and n.input[2]:
        zp = const_value(n.input[2])
        if zp is None:
            add("error", n, f"{n.op_type} zero point must be a constant")
        elif zp.any():
            add("error", n, f"{n.op_type} zero point must be 0 (symmetric quantization) for "
                            "TensorRT")


# op type → the attribute check TensorRT's ONNX parser needs for it
ATTRIBUTE_CHECKS = {
    "AveragePool": _check_pool, "MaxPool": _check_pool, "LpPool": _check_pool,
    "Resize": _check_resize, "TopK": _check_topk, "ScatterND": _check_scatter_nd,
    "LayerNormalization": _check_layer_norm, "Dropout": _check_dropout,
    "Constant": _check_constant, "LSTM": _check_lstm,
    "QuantizeLinear": _check_zero_point, "DequantizeLinear": _check_zero_point,
}
# op type → inputs that must be build-time constants, and what they are called
CONST_INPUTS = {"CumSum": (1, "axis"), "OneHot": (1, "depth"), "Squeeze": (1, "axes"),
                "Unsqueeze": (1, "axes")}


def _check_attributes(n, add, is_const, const_value) -> None:
    op = n.op_type
    check = ATTRIBUTE_CHECKS.get(op)
    if check is not None:
        check(n, add, lambda k, d=None: _attr(n, k, d), const_value)
    idx, what = CONST_INPUTS.get(op, (1, "axes") if op.startswith("Reduce") else (None, ""))
    if idx is not None and len(n.input) > idx and n.input[idx] and not is_const(n.input[idx]):
        add("error", n, f"{op} {what} must be a build-time constant (initializer/Constant)")


def check_onnx_file(
    path: str | Path, graph_name: str | None = None, manifest_graph: Mapping | None = None
) -> list[Finding]:
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise ToolkitError(
            f"cannot read ONNX graph {path} ({type(exc).__name__}); re-export it"
        ) from None
    return check_model(model, graph_name or path.stem, manifest_graph)


def check_artifact(artifact_dir: str | Path) -> list[Finding]:

    artifact_dir = Path(artifact_dir)
    manifest = load_manifest(artifact_dir)
    findings: list[Finding] = []
    for name, g in manifest["graphs"].items():
        findings += check_onnx_file(artifact_dir / g["file"], name, g)
    return findings


def print_findings(findings: list[Finding], artifact: str | Path, graphs: list[str]) -> None:
    from rich.table import Table

    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity == "warning"]
    shown = [f for f in findings if f.severity != "info"]
    if shown:
        table = Table(title=f"TensorRT 10 static check of {artifact}: what would fail and why")
        for col in ("severity", "graph", "node", "op", "problem"):
            table.add_column(col, overflow="fold")
        for f in sorted(shown, key=lambda f: (f.severity != "error", f.graph)):
            table.add_row(
                "[red]error[/]" if f.severity == "error" else "[yellow]warning[/]",
                f.graph,
                f.node,
                f.op,
                f.problem,
            )
        console.print(table)
    status = "[red]FAIL[/]" if errors else "[green]pass[/]"
    console.print(
        f"{status}: {len(graphs)} graph(s) ({', '.join(graphs)}), {len(errors)} "
        f"error(s), {len(warnings)} warning(s), "
        f"{sum(f.severity == 'info' for f in findings)} note(s) — checked against "
        "TensorRT 10's ONNX operator matrix (static; no TensorRT needed)"
    )
