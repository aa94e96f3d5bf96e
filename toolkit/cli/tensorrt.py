"""``toolkit build`` (TensorRT engines of an artifact) and ``toolkit check-trt`` (a static check
against TensorRT's ONNX support)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..export import check_trt as checker
from ..export import tensorrt as builder
from ..export.manifest import load_manifest
from .errors import one_line_errors
from .options import number


@one_line_errors
def build(
    artifact_dir: Annotated[Path, typer.Argument(help="Exported artifact directory "
                                                      "(manifest.json + graphs).")],
    fp16: Annotated[bool, typer.Option("--fp16", help=(
        "fp16 engine: from the fp16 export (strongly typed; its fp32 islands kept); from an "
        "fp32 export only with --weakly-typed."))] = False,
    int8: Annotated[bool, typer.Option("--int8", help="int8 engine from the int8 QDQ export "
                                                      "(explicit quantization).")] = False,
    weakly_typed: Annotated[bool, typer.Option("--weakly-typed", help=(
        "TensorRT 10 only: builder precision flags (--fp16 on an fp32 export, LayerNorm/Softmax "
        "and their inputs pinned fp32) instead of the graph's own types."))] = False,
    workspace: Annotated[Optional[int], number(
        "--workspace", "Builder workspace limit, MiB (default: 2048 on a discrete GPU; on a "
        "Jetson, a quarter of the memory left after the graph's weights, 256-2048).", 16,
        1 << 20)] = None,
    timing_cache: Annotated[Optional[Path], typer.Option(
        "--timing-cache", help="Timing cache file (read and updated); default per GPU + "
                               "TensorRT under ~/.cache/toolkit/tensorrt.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write a copy of the artifact with the engines here (default: in "
                            "place).")] = None,
    profile: Annotated[Optional[list[str]], typer.Option(
        "--profile", help="Override a range: AXIS=min:opt:max (a named dynamic axis, e.g. "
                          "tokens=1:64:448) or INPUT=AxB:AxB:AxB (a whole input shape). "
                          "Repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when a cached engine "
                                                        "matches.")] = False,
):
    """Build TensorRT 10/11 engines for every graph of an artifact (needs tensorrt + a GPU)."""
    overrides = builder.parse_profile_overrides(profile)  # bad syntax fails before anything
    builder.build_artifact(artifact_dir, fp16=fp16, int8=int8, workspace_mb=workspace,
                           timing_cache=timing_cache, out=out_dir, profile_overrides=overrides,
                           force=force, weakly_typed=weakly_typed)


@one_line_errors
def check_trt(
    artifact_dir: Annotated[Path, typer.Argument(help="Exported artifact directory "
                                                      "(manifest.json + graphs).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
):
    """Static check of every graph against TensorRT 10's ONNX support (no TensorRT needed)."""
    graphs = list(load_manifest(artifact_dir)["graphs"])
    findings = checker.check_artifact(artifact_dir)
    if as_json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        checker.print_findings(findings, artifact_dir, graphs)
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)
