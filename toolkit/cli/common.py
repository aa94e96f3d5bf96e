"""The commands every family shares: ``doctor``, ``export``, ``bench``. They reach a family only
through its registry entry."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import registry
from ..core.errors import ToolkitError
from ..core.precisions import FAMILY_PRECISIONS, precision_from_flags
from ..doctor import collect
from .base import Checkpoint, Preset, Seed, app, csv, one_line_errors, out
from .options import number


@app.command()
@one_line_errors
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """Versions, execution providers, GPU, threads and installed parts — paste this into a bug
    report."""
    info = collect()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(title="toolkit doctor", show_header=False)
    for k, v in info.items():
        if k == "cpu_int8":
            have = [f for f, on in v["features"].items() if on]
            table.add_row("cpu int8 features", ", ".join(have) or "none of " +
                          ", ".join(v["features"]))
            table.add_row("cpu int8 kernels", v["int8_kernels"])
            continue
        if k == "parts":
            for part, state in v.items():
                table.add_row(escape(f"toolkit[{part}]") if part != "runtime"
                              else "toolkit (runtime)", state)
            continue
        table.add_row(k, str(v))
    out.print(table)


@app.command()
@one_line_errors
def export(
    model: Annotated[str, typer.Argument(help=f"Model family: {registry.names()}.")],
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision graphs (LayerNorm/Softmax "
                                                      "kept fp32).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="int8 QDQ graphs calibrated on real "
                                                      "data.")] = False,
    int4: Annotated[bool, typer.Option(
        "--int4", help="4-bit block-wise weights (MatMulNBits) for an LLM's decoder step, "
                       "onnxruntime CPU; families that offer it: "
                       + ", ".join(FAMILY_PRECISIONS["int4"]) + ".")] = False,
    int8_target: Annotated[str, typer.Option(
        "--int8-target", help="int8 form: trt (QDQ with symmetric int8 activations on the "
                              "layers within the error budget; TensorRT and onnxruntime) or cpu "
                              "(onnxruntime CPU int8 kernels; not buildable by "
                              "TensorRT).")] = "trt",
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Artifact directory (default: artifacts/<model>-<name>-"
                            "<precision>).")] = None,
    calib_data: Annotated[Optional[Path], typer.Option(
        "--calib-data", help="Real data for int8 calibration.")] = None,
    opset: Annotated[int, number("--opset", "ONNX opset.", 13, 21)] = 17,
    seed: Seed = 0,
    trt: Annotated[bool, typer.Option("--trt", help="Also build TensorRT engines (needs "
                                                    "tensorrt).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace --out even if it holds files that are not a toolkit artifact "
                        "(never a directory that is or holds the home or working "
                        "directory).")] = False,
    external_data_mb: Annotated[Optional[float], number(
        "--external-data-mb", "Graphs with at least this many MiB of weights keep them in one "
        "<graph>.onnx.data file beside the graph (default 1536: under protobuf's 2 GiB "
        "limit).", 1, 1900, integer=False)] = None,
):
    """Export a model's accelerated parts to ONNX (validated against PyTorch) + manifest.json."""
    registry.get(model).export(
        checkpoint=checkpoint, preset=preset,
        precision=precision_from_flags(fp16, int8, int8_target, int4), out=out_dir,
        calib_data=calib_data, opset=opset, seed=seed, force=force,
        external_data_mb=external_data_mb, trt=trt)


def bench(model: str = "whisper", checkpoint=None, preset=None, backend=None,
          precision=None, data=None, runs: int = 5, warmup: int = 1, out_file=None, limit=None,
          seed: int = 0, workdir=None, **family_options):
    """Every backend × precision on the same inputs: latency, RTF, memory, quality parity.
    Existing record files (JSON, CSV, PNG) of the same --out are replaced."""
    fam = registry.get(model)
    accepted = {o.name: o for o in fam.bench_options}
    given = {}
    for name, value in family_options.items():
        if value is None or value is False:   # not given
            continue
        if name not in accepted:
            owners = [f.name for f in registry.FAMILIES.values()
                      if any(o.name == name for o in f.bench_options)]
            raise ToolkitError(f"--{name.replace('_', '-')} does not apply to {model}; it "
                               f"applies to {', '.join(owners)}")
        given[name] = csv(value) if accepted[name].kind == "list" else value
    fam.run_bench(checkpoint=checkpoint, preset=preset, backends=csv(backend),
                  precisions=csv(precision), data=data, runs=runs, warmup=warmup, out=out_file,
                  seed=seed, limit=limit, workdir=workdir, **given)


def _bench_signature() -> inspect.Signature:
    """The common options, then every family's own (declared in the registry, not here)."""
    kw = inspect.Parameter.KEYWORD_ONLY

    def opt(name, annotation, default):
        return inspect.Parameter(name, kw, default=default, annotation=annotation)

    params = [
        opt("model", Annotated[str, typer.Option("--model", "-m", help="Model family: "
                                                 + registry.names() + ".")], "whisper"),
        opt("checkpoint", Checkpoint, None), opt("preset", Preset, None),
        opt("backend", Annotated[Optional[str], typer.Option(help=(
            "Comma list: torch,ort (GPU: ort-cuda,ort-trt,trt; whisper: hf, ct2 = "
            "faster-whisper). Default: torch,ort, plus the family's peers when installed."))],
            None),
        opt("precision", Annotated[Optional[str], typer.Option(
            help="Comma list of fp32,fp16,int8,int8-cpu (bf16 on torch; int4 where the family "
                 "offers it: " + ", ".join(FAMILY_PRECISIONS["int4"]) + "). Default: all "
                 "the family offers.")], None),
        opt("data", Annotated[Optional[Path], typer.Option(
            help="Data folder (default: the family's bundled data).")], None),
        opt("runs", Annotated[int, number("--runs", "Timed runs per case.", 1, 10_000)], 5),
        opt("warmup", Annotated[int, number("--warmup", "Untimed warm-up runs per case.", 0,
                                            1000)], 1),
        opt("out_file", Annotated[Optional[Path], typer.Option(
            "--out", "-o", help="Records JSON (CSV and PNG beside it; existing ones are "
                                "replaced).")], None),
        opt("limit", Annotated[Optional[int], number("--limit", "Use at most this many data "
                                                     "items.", 1)], None),
        opt("seed", Seed, 0),
        opt("workdir", Annotated[Optional[Path], typer.Option(
            help="Where exported artifacts are cached.")], None),
    ]
    seen: set[str] = set()
    for fam in registry.FAMILIES.values():
        for o in fam.bench_options:
            if o.name in seen:
                continue
            seen.add(o.name)
            flag = "--" + o.name.replace("_", "-")
            if o.kind == "flag":   # off by default; given = True
                params.append(opt(o.name, Annotated[bool, typer.Option(flag, help=o.help)],
                                  False))
            elif o.kind == "int":
                params.append(opt(o.name, Annotated[Optional[int],
                                                    number(flag, o.help, 1, o.max)], None))
            else:
                params.append(opt(o.name, Annotated[Optional[str],
                                                    typer.Option(flag, help=o.help)], None))
    return inspect.Signature(params)


bench = one_line_errors(bench)
bench.__signature__ = _bench_signature()
app.command("bench")(bench)
