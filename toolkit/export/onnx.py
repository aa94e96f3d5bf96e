"""Generic ONNX export → precision conversion → validation → manifest, for any family's plan."""

from __future__ import annotations

import datetime as _dt
import shutil
import warnings
from pathlib import Path

import numpy as np

import onnx
import torch
from rich.markup import escape

from ..core.errors import ToolkitError
from ..core.files import atomic_dir, check_replaceable, sha256_file
from ..core.hardware import tool_versions
from ..core.parity import cosine, max_abs, rel_l2
from ..core.progress import Steps, console
from ..core.threads import default_threads
from . import precision as prec
from .manifest import is_artifact, write_manifest
from .ort import run_onnx
from .spec import EXPORT_PRECISIONS, ExportPlan, GraphSpec, base_precision, tolerance_for

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
            "int8_float_layers": sorted(spec.int8_float_layers)}


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


def validate(plan: ExportPlan, files: dict[str, Path], precision: str,
             feeds: dict[str, list[dict]]) -> dict:
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
        for feed, got, kern in zip(graph_feeds, judged, fused):
            for name, r in torch_outputs(spec, feed).items():
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
                opset: int = DEFAULT_OPSET, force: bool = False) -> dict:
    """Export every graph of ``plan`` at ``precision`` into the artifact directory ``out``.

    Writes atomically: on any failure (including failed validation) nothing is left behind. An
    existing ``out`` is replaced only if it is empty or an artifact (or ``force``).
    Returns the manifest.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ToolkitError(f"unknown precision {precision!r}; use one of "
                           f"{', '.join(EXPORT_PRECISIONS)}")
    torch.set_num_threads(default_threads())  # feeds and references: same threads every run
    out = check_replaceable(out, is_artifact, force)
    with atomic_dir(out, is_artifact, force) as tmp:
        work = tmp / ".work"
        work.mkdir()
        files: dict[str, Path] = {}
        graphs_meta: dict[str, dict] = {}
        with Steps(f"export {plan.family} ({precision})", total=len(plan.graphs)) as bar:
            for spec in plan.graphs:
                fp32_path = work / f"{spec.name}.fp32.onnx"
                export_graph(spec, fp32_path, opset)
                files[spec.name] = fp32_path
                bar.advance(spec.name)
        val_feeds = plan.validation_feeds()
        conv_info: dict[str, dict] = {name: {} for name in files}
        if precision == "fp16":
            for spec in plan.graphs:
                dst = work / f"{spec.name}.fp16.onnx"
                conv_info[spec.name] = prec.convert_fp16(files[spec.name], dst, spec,
                                                         val_feeds.get(spec.name, []))
                files[spec.name] = dst
        elif precision in ("int8", "int8-cpu"):
            if plan.calibration_feeds is None:
                raise ToolkitError(f"{plan.family} has no calibration data source for int8")
            calib = plan.calibration_feeds()
            for spec in plan.graphs:
                dst = work / f"{spec.name}.int8.onnx"
                if precision == "int8-cpu" and spec.int8_cpu_scheme != "qdq":
                    conv_info[spec.name] = prec.quantize_cpu_int8(
                        files[spec.name], dst, spec, calib.get(spec.name, []),
                        spec.int8_cpu_scheme)
                else:
                    conv_info[spec.name] = prec.quantize_int8(
                        files[spec.name], dst, spec, calib.get(spec.name, []),
                        activations="uint8" if precision == "int8-cpu" else "int8")
                files[spec.name] = dst
        final: dict[str, Path] = {}
        for spec in plan.graphs:
            target = tmp / f"{spec.name}.onnx"
            shutil.move(str(files[spec.name]), target)
            final[spec.name] = target
        with console.status("validating against PyTorch on real inputs"):
            report = validate(plan, final, precision, val_feeds)
        print_validation(report, precision)
        failed = [f"{g}/{o}" for g, outs in report.items() for o, m in outs.items()
                  if not m["passed"]]
        if failed:
            raise ToolkitError(f"validation failed for {', '.join(failed)} at {precision} "
                               "(see the table above); the artifact was not written")
        for spec in plan.graphs:
            inputs, outputs = graph_io(final[spec.name])
            graphs_meta[spec.name] = {
                "file": final[spec.name].name,
                "sha256": sha256_file(final[spec.name]),
                "bytes": final[spec.name].stat().st_size,
                "inputs": inputs,
                "outputs": outputs,
                "dynamic_axes": {k: {str(a): n for a, n in v.items()}
                                 for k, v in spec.dynamic_axes.items()},
                "trt_profiles": {k: p.as_dict() for k, p in spec.profiles.items()},
                "settings": graph_settings(spec),
                "held_precision": graph_precision(final[spec.name]),
                **conv_info[spec.name],
            }
        shutil.rmtree(work)
        extra_files = plan.extra_files()
        for name, content in extra_files.items():
            dst = tmp / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, (bytes, bytearray)):
                dst.write_bytes(content)
            else:
                shutil.copyfile(content, dst)
        manifest = {
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
            "extra_files": {name: sha256_file(tmp / name) for name in sorted(extra_files)},
            "tools": tool_versions(),
        }
        write_manifest(tmp, manifest)
    console.print(f"[green]✓[/] wrote {escape(str(out))} ({', '.join(f.name for f in final.values())}"
                  f" + manifest.json)")
    return manifest
