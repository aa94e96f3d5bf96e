"""onnxruntime on the CPU, as the exporter uses it: calibration, layer selection and validation.

Kept apart from ``runtime/`` (the ``Session`` backends) so that the export layer never imports a
layer above it. ``optimization="none"`` evaluates Q/DQ nodes as float ops — what a QDQ graph
means, independent of this CPU's fused int8 kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..core.errors import ToolkitError
from ..core.threads import default_threads

_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def cpu_session(model, optimization: str = "all", extra_outputs: Sequence[str] = ()):
    """An onnxruntime CPU session on ``model`` (a path or an in-memory ModelProto).

    ``extra_outputs``: float tensors inside the graph to expose as outputs as well.
    """
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = default_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                                   if optimization == "none"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if extra_outputs:
        model = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
        model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT,
                                                                     None) for n in extra_outputs)
    src = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        name = Path(model).name if isinstance(model, (str, Path)) else "the exported graph"
        raise ToolkitError(f"onnxruntime cannot load {name}: {first[:300]}") from None


def run_onnx(model, feeds: Sequence[dict], optimization: str = "all",
             extra_outputs: Sequence[str] = ()) -> list[dict[str, np.ndarray]]:
    """Outputs of ``model`` for every feed (inputs cast to the graph's types; fp16 outputs
    returned as float32; feed entries the graph does not take are ignored)."""
    sess = cpu_session(model, optimization, extra_outputs)
    names = [o.name for o in sess.get_outputs()]
    types = {i.name: _INPUT_TYPES.get(i.type) for i in sess.get_inputs()}
    results = []
    for feed in feeds:
        cast = {k: (np.asarray(v).astype(types[k], copy=False) if types[k] is not None else v)
                for k, v in feed.items() if k in types}
        outs = sess.run(None, cast)
        results.append({n: (o.astype(np.float32) if o.dtype == np.float16 else o)
                        for n, o in zip(names, outs)})
    return results
