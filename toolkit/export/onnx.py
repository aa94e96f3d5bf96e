"""Generic ONNX export → precision conversion → validation → manifest, for any family's plan."""

from __future__ import annotations

import datetime as _dt
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from rich.markup import escape

from ..core.errors import ToolkitError
from ..core.files import atomic_dir, check_replaceable, sha256_file
from ..core.hardware import tool_versions
from ..core.memory import give_back, high_water_bytes
from ..core.parity import cosine, max_abs, rel_l2
from ..core.precisions import base_precision, check_family_precision
from ..core.progress import console, step
from ..core.threads import default_threads
from . import external
from . import precision as prec
from .manifest import is_artifact, write_manifest
from .ort import run_onnx
from .spec import ExportPlan, GraphSpec, tolerance_for

DEFAULT_OPSET = 17
# Control flow TensorRT cannot take from a TensorRT-friendly export (a merged decoder with an
# `If` on "has past" is the classic failure).
FORBIDDEN_OPS = ("If", "Loop", "Scan")

_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool", 11: "float64",
                3: "int8", 2: "uint8", 16: "bfloat16"}


def export_graph(spec: GraphSpec, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Trace ``spec.module`` to ONNX (TorchScript exporter: stable, plain opset-17 graphs)."""
    module = spec.module.eval()
    args = spec.example_inputs()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(spec.input_names),
                          output_names=list(spec.output_names),
                          dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    bad = control_flow_nodes(path)
    if bad:
        raise ToolkitError(f"graph {spec.name} contains control-flow nodes {bad[:5]} that TensorRT "
                           "rejects; this is an exporter bug — please report it")


def graph_settings(spec: GraphSpec) -> dict:
    """The export choices that change a graph's numbers (a cached artifact must match them)."""
    return {"fp32_ops": sorted(spec.fp32_ops), "quantize_ops": sorted(spec.quantize_ops),
            "int8_budget": spec.int8_budget, "int8_cpu_scheme": spec.int8_cpu_scheme,
            "int8_float_layers": sorted(spec.int8_float_layers),
            "int4_scheme": spec.int4_scheme, "int4_block_size": spec.int4_block_size,
            "int4_symmetric": spec.int4_symmetric,
            "int4_8bit_layers": sorted(spec.int4_8bit_layers)}


def control_flow_nodes(path: str | Path) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    return [f"{n.op_type}:{n.name}" for n in model.graph.node if n.op_type in FORBIDDEN_OPS]


_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger",
             "DynamicQuantizeLinear", "MatMulNBits", "QLinearMatMul", "QLinearConv"}


def graph_precision(path: str | Path) -> str:
    """What a graph file holds, read off its nodes and weights: "int8" (any quantized op),
    "fp16" (float16 weights) or "fp32" — so a manifest's label can be checked."""
    model = onnx.load(str(path), load_external_data=False)
    if any(n.op_type in _INT8_OPS for n in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def graph_io(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Inputs/outputs of an ONNX file: name, dtype, shape (ints or axis names)."""
    model = onnx.load(str(path), load_external_data=False)

    def info(v):
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        return {"name": v.name, "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)),
                "shape": dims}

    inits = {i.name for i in model.graph.initializer}
    return ([info(v) for v in model.graph.input if v.name not in inits],
            [info(v) for v in model.graph.output])


def torch_outputs(spec: GraphSpec, feed: dict) -> dict[str, np.ndarray]:
    """The PyTorch module's outputs on one feed, by output name (float outputs as float32)."""
    args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in spec.input_names]
    with torch.inference_mode():
        out = spec.module(*args)
    out = (out,) if isinstance(out, torch.Tensor) else out
    return {name: (o.float() if o.is_floating_point() else o).numpy()
            for name, o in zip(spec.output_names, out)}


def reference_outputs(plan: ExportPlan, feeds: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """PyTorch fp32 outputs of every graph on its feeds (taken before the weights are released)."""
    return {spec.name: [torch_outputs(spec, f) for f in feeds.get(spec.name, [])]
            for spec in plan.graphs}


def validate(plan: ExportPlan, files: dict[str, Path], precision: str,
             feeds: dict[str, list[dict]], refs: dict[str, list[dict]] | None = None) -> dict:
    """Run every graph on onnxruntime (CPU) and its PyTorch module on the same real inputs.

    int8 graphs are judged on what the precision does — Q/DQ evaluated as float ops (graph
    optimisations off), which is what TensorRT computes up to accumulation order and the same on
    every CPU — and the error this CPU's fused int8 kernels add is measured beside it and
    reported (``kernel_*``), not judged: it differs between VNNI/AMX, AVX2-only and ARM CPUs.
    """
    int8 = base_precision(precision) == "int8"
    report: dict = {}
    for spec in plan.graphs:
        graph_feeds = feeds.get(spec.name, [])
        judged = run_onnx(files[spec.name], graph_feeds, "none" if int8 else "all")
        fused = run_onnx(files[spec.name], graph_feeds, "all") if int8 else [None] * len(judged)
        tol = tolerance_for(spec, precision)
        worst: dict = {}
        kernel: dict = {}
        graph_refs = (refs or {}).get(spec.name) or [torch_outputs(spec, f) for f in graph_feeds]
        for ref, got, kern in zip(graph_refs, judged, fused):
            for name, r in ref.items():
                g = got[name]
                if g.shape != r.shape:
                    raise ToolkitError(f"validation: {spec.name}/{name} has shape {g.shape} on "
                                       f"onnxruntime but {r.shape} in PyTorch")
                m = {"rel_l2": rel_l2(g, r), "cosine": cosine(g, r), "max_abs": max_abs(g, r),
                     "finite": bool(np.isfinite(g).all())}
                if kern is not None:  # worst over the feeds, kept beside the judged figures
                    k = kernel.setdefault(name, {"kernel_rel_l2": 0.0,
                                                 "kernel_rel_l2_vs_qdq": 0.0})
                    k["kernel_rel_l2"] = max(k["kernel_rel_l2"], rel_l2(kern[name], r))
                    k["kernel_rel_l2_vs_qdq"] = max(k["kernel_rel_l2_vs_qdq"],
                                                    rel_l2(kern[name], g))
                if m["rel_l2"] >= worst.setdefault(name, m)["rel_l2"]:
                    worst[name] = m
        for name, m in worst.items():
            m.update(kernel.get(name, {}))
            m["tolerance"] = dict(tol)
            m["passed"] = bool(m["finite"] and m["rel_l2"] <= tol["rel_l2"]
                               and m["cosine"] >= tol["cosine"])
            if int8:
                m["judged_on"] = "Q/DQ evaluated in float (onnxruntime, graph optimisations off)"
        report[spec.name] = worst
    return report


def print_validation(report: dict, precision: str, title: str = "Validation against PyTorch fp32"):
    from rich.table import Table

    table = Table(title=f"{title} ({precision}, onnxruntime CPU, worst case over real inputs)")
    kernel = any("kernel_rel_l2" in m for outs in report.values() for m in outs.values())
    cols = ["graph", "outputs", "worst output", "rel L2", "min cosine", "max |Δ|", "tolerance",
            "result"] + (["CPU int8 kernels rel L2 (reported)"] if kernel else [])
    for col in cols:
        table.add_column(col, justify="left" if col in ("graph", "worst output") else "right")
    for graph, outs in report.items():
        if not outs:
            continue
        worst = max(outs, key=lambda k: outs[k]["rel_l2"])
        tol = outs[worst]["tolerance"]
        ok = all(m["passed"] for m in outs.values())
        table.add_row(graph, str(len(outs)), worst, f"{outs[worst]['rel_l2']:.2e}",
                      f"{min(m['cosine'] for m in outs.values()):.6f}",
                      f"{max(m['max_abs'] for m in outs.values()):.2e}",
                      f"rel≤{tol['rel_l2']:g} cos≥{tol['cosine']:g}",
                      "[green]pass[/]" if ok else "[red]FAIL[/]",
                      *([f"{max(m.get('kernel_rel_l2', 0.0) for m in outs.values()):.2e}"]
                        if kernel else []))
    console.print(table)
    if kernel:
        console.print("  int8 is judged with Q/DQ evaluated in float (what the graph means, the "
                      "same on every CPU); the last column adds this CPU's fused int8 kernels")


def export_plan(plan: ExportPlan, precision: str, out: str | Path,
                opset: int = DEFAULT_OPSET, force: bool = False,
                external_threshold: int = external.DEFAULT_THRESHOLD,
                release: Callable[[], None] | None = None,
                steps: list[dict] | None = None) -> dict:
    """Export every graph of ``plan`` at ``precision`` into the artifact directory ``out``:
    trace → PyTorch references (and calibration inputs) → release the PyTorch weights →
    convert (``CONVERTERS``) → validate → manifest.

    Writes atomically: on any failure (including failed validation or a full disk) nothing is
    left behind. An existing ``out`` is replaced only if it is empty or an artifact (or
    ``force``). Graphs with at least ``external_threshold`` bytes of weights keep them in one
    data file each (``export/external.py``).

    Memory: the PyTorch outputs that validation compares against (and the calibration inputs)
    are computed right after tracing; then ``release()`` — when given — frees the PyTorch
    weights, so conversion and validation never hold them beside the graph's own copy.
    Returns the manifest, whose ``export_steps`` lists each step's time and peak memory
    (after the ones given in ``steps``, e.g. loading the model).
    """
    check_family_precision(plan.family, precision)
    if precision == "int4" and not any(g.int4_scheme == "nbits" for g in plan.graphs):
        raise ToolkitError(f"the {plan.family} plan declares no int4 graph (GraphSpec.int4_scheme)")
    if not 0 < external_threshold <= external.MAX_INLINE:
        raise ToolkitError(f"the external-data threshold must be between 1 byte and "
                           f"{external.MAX_INLINE >> 20} MiB, not {external_threshold}")
    torch.set_num_threads(default_threads())  # feeds and references: same threads every run
    out = check_replaceable(out, is_artifact, force)
    steps = list(steps or [])
    t_start = time.perf_counter() - sum(s["seconds"] for s in steps)
    with atomic_dir(out, is_artifact, force) as tmp:
        work = tmp / ".work"
        files = _trace(plan, work / "fp32", opset, external_threshold, steps)
        val_feeds, refs, calib = _references(plan, precision, steps)
        if release is not None:
            release()
        conv_info = _convert(plan, files, work / precision, precision, val_feeds, calib,
                             external_threshold, steps)
        del calib
        if precision == "fp32":
            conv_info = _tie_embeddings(files, steps)
        final = {name: tmp / f"{name}.onnx" for name in files}
        for name, path in files.items():
            external.move(path, final[name])
        shutil.rmtree(work)
        report = _validated(plan, final, precision, val_feeds, refs, steps)
        del refs, val_feeds
        with step("hashing the graphs and their data files", steps):
            graphs_meta = {spec.name: {**_graph_meta(spec, final[spec.name]),
                                       **conv_info.get(spec.name, {})} for spec in plan.graphs}
        extra = _write_extra_files(plan, tmp)
        manifest = _manifest(plan, precision, opset, graphs_meta, report, extra,
                             external_threshold, steps, t_start)
        write_manifest(tmp, manifest)
    written = [f.name for f in final.values()] + [d["file"] for g in graphs_meta.values()
                                                   for d in g["data_files"]]
    console.print(f"[green]✓[/] wrote {escape(str(out))} ({', '.join(written)} + manifest.json) "
                  f"in {manifest['export_seconds']:.0f} s, peak RSS "
                  f"{manifest['export_peak_rss_gb']:.2f} GB")
    return manifest


def _trace(plan: ExportPlan, where: Path, opset: int, threshold: int,
           steps: list[dict]) -> dict[str, Path]:
    """Every graph traced to fp32 ONNX under ``where``, its weights consolidated."""
    where.mkdir(parents=True)
    files: dict[str, Path] = {}
    for spec in plan.graphs:
        path = where / f"{spec.name}.onnx"
        with step(f"tracing {spec.name} to ONNX", steps):
            export_graph(spec, path, opset)
        with step(f"writing {spec.name}'s weights (one data file when over "
                  f"{threshold / (1 << 20):g} MiB)", steps):
            external.consolidate(path, threshold)
        files[spec.name] = path
    return files


def _references(plan: ExportPlan, precision: str, steps: list[dict]):
    """(validation feeds, PyTorch outputs on them, calibration feeds or None)."""
    with step("PyTorch reference outputs on real inputs", steps):
        val_feeds = plan.validation_feeds()
        refs = reference_outputs(plan, val_feeds)
    calib = None
    if base_precision(precision) == "int8" and precision != "int4":  # int4: weight-only
        if plan.calibration_feeds is None:
            raise ToolkitError(f"{plan.family} has no calibration data source for int8")
        with step("calibration inputs from real data", steps):
            calib = plan.calibration_feeds()
    return val_feeds, refs, calib


def _to_fp16(src, dst, spec, feeds, calib, threshold) -> dict:
    return prec.convert_fp16(src, dst, spec, feeds, threshold)


def _to_int8(src, dst, spec, feeds, calib, threshold) -> dict:
    """The TensorRT form: Q/DQ with symmetric int8 activations."""
    return prec.quantize_int8(src, dst, spec, calib, activations="int8", threshold=threshold)


def _to_int8_cpu(src, dst, spec, feeds, calib, threshold) -> dict:
    """The onnxruntime x86 form: uint8 activations (Q/DQ), or the spec's dynamic / blockwise
    scheme."""
    if spec.int8_cpu_scheme != "qdq":
        return prec.quantize_cpu_int8(src, dst, spec, calib, spec.int8_cpu_scheme,
                                      threshold=threshold)
    return prec.quantize_int8(src, dst, spec, calib, activations="uint8", threshold=threshold)


def _to_int4(src, dst, spec, feeds, calib, threshold) -> dict | None:
    """The graph's declared int4 form: 4-bit MatMulNBits ("nbits"), its int8-cpu form, or fp32
    (None: the file is kept). Weight-only: the conversion error is measured on the validation
    feeds, no calibration set is built."""
    if spec.int4_scheme == "nbits":
        return prec.quantize_int4(src, dst, spec, feeds, threshold=threshold)
    if spec.int4_scheme == "int8-cpu":   # weight-only / dynamic schemes: no calibration
        if spec.int8_cpu_scheme == "qdq":
            raise ToolkitError(f"graph {spec.name}: int4 keeps graphs at int8-cpu only with a "
                               "dynamic or blockwise int8_cpu_scheme (no calibration in int4)")
        return {**_to_int8_cpu(src, dst, spec, feeds, feeds, threshold), "int4_scheme": "int8-cpu"}
    if spec.int4_scheme is None:
        return None
    raise ToolkitError(f"unknown int4 scheme {spec.int4_scheme!r} for graph {spec.name}")


# precision → converter(src, dst, spec, validation feeds, calibration feeds, threshold);
# a converter returning None leaves the graph fp32
CONVERTERS = {"fp16": _to_fp16, "int8": _to_int8, "int8-cpu": _to_int8_cpu, "int4": _to_int4}


def _convert(plan: ExportPlan, files: dict[str, Path], where: Path, precision: str, val_feeds,
             calib, threshold: int, steps: list[dict]) -> dict[str, dict]:
    """Each graph converted to ``precision`` in place of its fp32 file (fp32: nothing to do);
    returns the converter's manifest info per graph."""
    convert = CONVERTERS.get(precision)
    if convert is None:
        return {}
    where.mkdir()
    info = {}
    for spec in plan.graphs:
        dst = where / f"{spec.name}.onnx"
        with step(f"{spec.name}: {precision} conversion", steps, live=False):
            got = convert(files[spec.name], dst, spec, val_feeds.get(spec.name, []),
                          (calib or {}).get(spec.name, []), threshold)
        if got is None:   # this graph stays fp32 at this precision
            info[spec.name] = {"kept_fp32": True}
            continue
        info[spec.name] = got
        files[spec.name] = dst
        give_back()  # the converter's copy of the graph, before the next one
    return info


def _tie_embeddings(files: dict[str, Path], steps: list[dict]) -> dict[str, dict]:
    """fp32 graphs: one copy of a tied token embedding (``precision.tie_transposed_embedding``;
    validation below checks the result like any conversion)."""
    info = {}
    with step("sharing tied embedding weights", steps):
        for name, path in files.items():
            tied = prec.tie_transposed_embedding(path)
            if tied:
                info[name] = {"tied_embedding": tied}
    return info


def _validated(plan, final, precision, val_feeds, refs, steps) -> dict:
    with step("validating against PyTorch on real inputs", steps):
        report = validate(plan, final, precision, val_feeds, refs)
    print_validation(report, precision)
    failed = [f"{g}/{o}" for g, outs in report.items() for o, m in outs.items()
              if not m["passed"]]
    if failed:
        raise ToolkitError(f"validation failed for {', '.join(failed)} at {precision} "
                           "(see the table above); the artifact was not written")
    return report


def _graph_meta(spec: GraphSpec, f: Path) -> dict:
    inputs, outputs = graph_io(f)
    return {
        "file": f.name,
        "sha256": sha256_file(f),
        "bytes": f.stat().st_size,
        "data_files": [{"file": d.name, "sha256": sha256_file(d), "bytes": d.stat().st_size}
                       for d in external.data_files(f)],
        "inputs": inputs,
        "outputs": outputs,
        "dynamic_axes": {k: {str(a): n for a, n in v.items()}
                         for k, v in spec.dynamic_axes.items()},
        "trt_profiles": {k: p.as_dict() for k, p in spec.profiles.items()},
        "settings": graph_settings(spec),
        "held_precision": graph_precision(f),
    }


def _write_extra_files(plan: ExportPlan, tmp: Path) -> dict[str, str]:
    """The plan's extra files (tokenizer, configs) written into the artifact: {name: sha256}."""
    extra_files = plan.extra_files()
    for name, content in extra_files.items():
        dst = tmp / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (bytes, bytearray)):
            dst.write_bytes(content)
        else:
            shutil.copyfile(content, dst)
    return {name: sha256_file(tmp / name) for name in sorted(extra_files)}


def _manifest(plan, precision, opset, graphs_meta, report, extra, threshold, steps,
              t_start) -> dict:
    return {
        "family": plan.family,
        "precision": precision,
        "opset": opset,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": plan.source,
        "random_init": bool(plan.source.get("random_init")),
        "export_revision": plan.revision,
        "model_config": plan.model_config,
        "graphs": graphs_meta,
        "parity": {"reference": "PyTorch fp32 on the same real inputs",
                   "backend": "onnxruntime CPUExecutionProvider", "graphs": report},
        "extra_files": extra,
        "external_data_threshold_bytes": int(threshold),
        "export_steps": steps,
        "export_seconds": round(time.perf_counter() - t_start, 1),
        # the process's high-water mark: exact, loading included (what /usr/bin/time -v
        # reports as maximum resident set size)
        "export_peak_rss_gb": round(max([high_water_bytes() / 1e9]
                                        + [s["peak_rss_gb"] for s in steps]), 2),
        "tools": tool_versions(),
    }
