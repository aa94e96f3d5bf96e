"""onnxruntime on the CPU, as the exporter uses it: calibration, layer selection and validation.

Kept apart from ``runtime/`` (the ``Session`` backends) so that the export layer never imports a
layer above it. ``optimization="none"`` evaluates Q/DQ nodes as float ops — what a QDQ graph
means, independent of this CPU's fused int8 kernels.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..core.errors import ToolkitError
from ..core.threads import default_threads
from . import external

_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def _options(optimization: str):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = default_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                                   if optimization == "none"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return so


@contextlib.contextmanager
def _on_disk(model, extra_outputs: Sequence[str] = (), extra_nodes: Sequence = (),
             workdir: str | Path | None = None):
    """A path to ``model`` with outputs (and nodes) added. A graph that is already a file is
    read without its weights and the probe is written beside it, so its external data resolves
    and a large graph is never loaded whole; an in-memory graph is written to a temporary
    folder under ``workdir`` (the export's own, so a large graph lands where the export
    writes), in the toolkit's layout (external data when large — it is spent afterwards)."""
    if isinstance(model, (str, Path)) and not extra_outputs and not extra_nodes:
        yield Path(model)
        return
    tmpdir = None
    if isinstance(model, (str, Path)):
        src = Path(model)
        proto = onnx.load(str(src), load_external_data=False)
        probe = src.with_name(f"{src.stem}.probe-{os.getpid()}.onnx")
    else:
        proto = model
        tmpdir = tempfile.mkdtemp(prefix="toolkit-probe-", dir=workdir)
        probe = Path(tmpdir) / "probe.onnx"
    if extra_nodes:  # each probe right after the node that makes its input; with
        # onnxruntime's priority-based order (ties by list position) the session then frees
        # every intermediate as soon as it would without probes
        after: dict[str, list] = {}
        for n in extra_nodes:
            after.setdefault(n.input[0], []).append(n)
        nodes = []
        pending = list(proto.graph.input)
        for v in pending:
            nodes.extend(_chain(after, v.name))
        for node in proto.graph.node:
            nodes.append(node)
            for o in node.output:
                nodes.extend(_chain(after, o))
        nodes.extend(n for chain in after.values() for n in chain)  # anything left over
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in extra_outputs)
    try:
        if tmpdir is None:
            onnx.save(proto, str(probe))  # weights stay where they are (inline ones included)
        else:
            external.save(proto, probe)
        yield probe
    finally:
        probe.unlink(missing_ok=True)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _chain(after: dict, tensor: str) -> list:
    """The probe nodes reading ``tensor``, and any probe nodes reading theirs."""
    out = []
    for n in after.pop(tensor, []):
        out.append(n)
        for o in n.output:
            out.extend(_chain(after, o))
    return out


def cpu_session(model, optimization: str = "all", extra_outputs: Sequence[str] = (),
                workdir: str | Path | None = None):
    """An onnxruntime CPU session on ``model`` (a path, or an in-memory ModelProto that is
    spent by the call, written under ``workdir``). ``extra_outputs``: float tensors inside the
    graph to expose as outputs."""
    with _on_disk(model, extra_outputs, workdir=workdir) as path:
        return _session(path, optimization, model)


def _session(path: Path, optimization: str, model, in_list_order: bool = False):
    so = _options(optimization)
    if in_list_order:  # the default order walks back from the outputs: a probe output
        # would keep its tensor alive to the end of the graph (measured: 5 MB per probed
        # tensor on tiny, ~1 GB per window on large-v3's attention scores)
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    try:
        return ort.InferenceSession(str(path), so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        name = Path(model).name if isinstance(model, (str, Path)) else "the exported graph"
        raise ToolkitError(f"onnxruntime cannot load {name}: {first[:300]}") from None


def value_ranges(path: str | Path, feeds: Sequence[dict], tensors: Sequence[str],
                 advance=None) -> dict[str, tuple[float, float]]:
    """(min, max) each of ``tensors`` takes over ``feeds``, computed inside the graph (ReduceMin
    and ReduceMax per tensor, run right after the node that makes it, in onnxruntime's
    priority-based order), so only scalars leave it and each tensor is freed when it would be
    without the probes. Exposing every intermediate whole — or onnxruntime's own calibrator,
    whose default order keeps each probed tensor to the end of the graph — holds them all at
    once: 24 GB for the large-v3-turbo encoder (measured), ~23 GB per window for large-v3's
    attention scores alone. ``advance()`` is called after each feed."""
    nodes, outs = [], []
    for i, t in enumerate(tensors):
        for op in ("ReduceMin", "ReduceMax"):
            m = f"__range_{op}_{i}"
            # keepdims=1: onnxruntime cannot reduce an empty axis away (an empty cache)
            nodes.append(onnx.helper.make_node(op, [t], [m], name=m, keepdims=1))
            outs.append(m)
    lo = {t: float("inf") for t in tensors}
    hi = {t: float("-inf") for t in tensors}
    with _on_disk(path, outs, nodes) as probe:
        sess = _session(probe, "none", path, in_list_order=True)
        types = {i.name: _INPUT_TYPES.get(i.type) for i in sess.get_inputs()}
        for feed in feeds:
            got = sess.run(outs, _cast(feed, types))
            for k, t in enumerate(tensors):
                mn, mx = got[2 * k], got[2 * k + 1]
                if mn.size:
                    lo[t] = min(lo[t], float(np.min(mn)))
                    hi[t] = max(hi[t], float(np.max(mx)))
            if advance is not None:
                advance()
        del sess
    return {t: (lo[t], hi[t]) for t in tensors if lo[t] <= hi[t]}


def absmax(path: str | Path, feeds: Sequence[dict], tensors: Sequence[str]) -> dict[str, float]:
    """The largest |value| each of ``tensors`` takes over ``feeds`` (see ``value_ranges``)."""
    return {t: max(abs(a), abs(b)) for t, (a, b) in value_ranges(path, feeds, tensors).items()}


def _cast(feed: dict, types: dict) -> dict:
    return {k: (np.asarray(v).astype(types[k], copy=False) if types[k] is not None else v)
            for k, v in feed.items() if k in types}


def run_onnx(model, feeds: Sequence[dict], optimization: str = "all",
             extra_outputs: Sequence[str] = (), workdir: str | Path | None = None
             ) -> list[dict[str, np.ndarray]]:
    """Outputs of ``model`` for every feed (inputs cast to the graph's types; fp16 outputs
    returned as float32; feed entries the graph does not take are ignored)."""
    sess = cpu_session(model, optimization, extra_outputs, workdir)
    names = [o.name for o in sess.get_outputs()]
    types = {i.name: _INPUT_TYPES.get(i.type) for i in sess.get_inputs()}
    results = []
    for feed in feeds:
        outs = sess.run(None, _cast(feed, types))
        results.append({n: (o.astype(np.float32) if o.dtype == np.float16 else o)
                        for n, o in zip(names, outs)})
    return results
