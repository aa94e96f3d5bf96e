"""``toolkit serve`` (a table of models behind one HTTP API), ``toolkit load-test`` and
``toolkit export-triton``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import registry
from ..core.errors import ToolkitError
from ..export.manifest import MANIFEST
from ..serve import loadtest, ray_app, server, triton
from ..serve.served import ModelSource
from ..serve.service import Settings
from .base import Artifact, Checkpoint, Preset, csv
from .errors import err, one_line_errors, out
from .options import number, with_options

MODEL_HELP = ("A model to serve, repeatable: FAMILY[=SOURCE][@BACKEND]; SOURCE is an artifact "
              "or checkpoint directory or preset:NAME (default: the family's default model), "
              "BACKEND as --backend. E.g. --model whisper=artifacts/tiny.en --model "
              "gradtts=preset:tiny@torch.")


def parse_model(spec: str, backend: str) -> ModelSource:
    """``FAMILY[=SOURCE][@BACKEND]`` → a ``ModelSource``."""
    head, _, at = spec.partition("@")
    name, _, source = head.partition("=")
    fam = registry.get(name.strip())
    s = ModelSource(fam, backend=at.strip() or backend)
    source = source.strip()
    if source.startswith("preset:"):
        s.preset = source.removeprefix("preset:")
    elif source:
        if (Path(source) / MANIFEST).is_file():
            s.artifact = source
        else:
            s.checkpoint = source
    return s


def sources(models: list[str] | None, artifact, checkpoint, preset, backend: str
            ) -> list[ModelSource]:
    """The models to serve: every --model, plus the Whisper shorthand; Whisper's default model
    when nothing is given."""
    chosen = [parse_model(m, backend) for m in models or []]
    if artifact or checkpoint or preset:
        chosen.insert(0, ModelSource(registry.get("whisper"), str(artifact) if artifact else None,
                                     checkpoint, preset, backend))
    return chosen or [ModelSource(registry.get("whisper"), backend=backend)]


def _family_options() -> dict:
    """Each family's serving options (``SERVE_OPTIONS`` of its CLI module), by option name."""
    groups = {}
    for fam in registry.FAMILIES.values():
        cls = getattr(fam.cli_module, "SERVE_OPTIONS", None) if fam.cli else None
        if cls is not None:
            groups[f"{fam.name}_options"] = cls
    return groups


FAMILY_OPTIONS = _family_options()


@one_line_errors
@with_options(**FAMILY_OPTIONS)
def serve(
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Annotated[str, typer.Option(help="Backend of the models: torch or ort (GPU: "
                                              "ort-cuda, ort-trt, trt).")] = "ort",
    engine: Annotated[str, typer.Option(help="local (uvicorn, one process) or ray (Ray Serve "
                                             "deployment).")] = "local",
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine "
                                           "only).")] = "127.0.0.1",
    port: Annotated[int, number("--port", "TCP port.", 1, 65535)] = 8000,
    max_batch: Annotated[int, number("--max-batch", "Requests decoded together (Whisper: one "
                                     "30-s window each per round); 1 = one at a time.", 1,
                                     1024)] = 8,
    max_wait_ms: Annotated[float, number("--max-wait-ms", "How long an idle server waits for "
                                         "more requests to batch with the first.", 0, 60_000,
                                         integer=False)] = 10.0,
    max_queue: Annotated[int, number("--max-queue", "Requests that may wait; past that the "
                                     "server answers 429 with Retry-After.", 1, 100_000)] = 128,
    max_upload_mb: Annotated[float, number("--max-upload-mb", "Largest upload (413 past it).",
                                           0.001, 4096, integer=False)] = 25.0,
    max_audio_s: Annotated[float, number("--max-audio-s", "Longest recording, checked before "
                                         "and while decoding (413 past it).", 1, 86_400,
                                         integer=False)] = 10800.0,
    max_audio_total_s: Annotated[float, number(
        "--max-audio-total-s", "Seconds of decoded audio all requests may hold at once "
        "(16 kHz float32: 230 MB per hour, plus its log-mel; 429 past it).", 1, 864_000,
        integer=False)] = 14400.0,
    timeout_s: Annotated[float, number("--timeout-s", "Longest a request may take (504 past "
                                       "it; its work stops at the next decoder step).", 0.1,
                                       86_400, integer=False)] = 300.0,
    header_timeout_s: Annotated[float, number("--header-timeout-s", "A connection must send "
                                              "each request's headers within this (closed "
                                              "otherwise).", 0.1, 3600, integer=False)] = 10.0,
    max_connections: Annotated[Optional[int], number(
        "--max-connections", "Connections and requests in progress at once (503 past it; "
        "default: --max-queue + --max-batch + 64).", 1, 100_000)] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer "
                                                            "<key>' with the key in this "
                                                            "environment variable.")] = None,
    replicas: Annotated[int, number("--replicas", "--engine ray: replicas of each deployment.",
                                    1, 1024)] = 1,
    gpus_per_replica: Annotated[float, number("--gpus-per-replica", "--engine ray: GPUs per "
                                              "replica (0 on CPU machines).", 0, 64,
                                              integer=False)] = 0.0,
    cpus_per_replica: Annotated[float, number("--cpus-per-replica", "--engine ray: CPUs "
                                              "reserved per replica.", 0.01, 1024,
                                              integer=False)] = 1.0,
    ray_address: Annotated[Optional[str], typer.Option(help="--engine ray: join this Ray "
                                                            "cluster (default: start a local "
                                                            "one).")] = None,
    autoscaling: Annotated[Optional[str], typer.Option(help="--engine ray: Ray Serve "
                                                            "autoscaling_config as JSON, e.g. "
                                                            "'{\"min_replicas\":1,"
                                                            "\"max_replicas\":4}'.")] = None,
    **family_options,
):
    """Serve models over OpenAI- and LibreTranslate-style HTTP APIs, with dynamic batching."""
    settings = Settings(
        models=sources(model, artifact, checkpoint, preset, backend), max_batch=max_batch,
        max_wait_ms=max_wait_ms, max_queue=max_queue, max_upload_mb=max_upload_mb,
        max_audio_s=max_audio_s, max_audio_total_s=max_audio_total_s, timeout_s=timeout_s,
        options={name.removesuffix("_options"): value for name, value in family_options.items()})
    if engine == "local":
        server.run(settings, host, port, api_key_env, header_timeout_s, max_connections)
    elif engine == "ray":
        ray_app.run(settings, host, port, api_key_env, replicas=replicas, gpus=gpus_per_replica,
                    cpus=cpus_per_replica, address=ray_address, autoscaling=autoscaling)
    else:
        raise ToolkitError(f"--engine must be local or ray (got {engine!r})")


@one_line_errors
def load_test(
    url: Annotated[str, typer.Option(
        help="The server, e.g. http://127.0.0.1:8000.")] = "http://127.0.0.1:8000",
    audio: Annotated[Optional[list[Path]], typer.Option("--audio", help=(
        "Clips (files or folders) the clients send in turn (default: the built-in LJSpeech "
        "clips)."))] = None,
    clients: Annotated[str, typer.Option(
        help="Comma list of concurrent client counts.")] = "1,4,16,64",
    requests: Annotated[int, number("--requests", "Requests each client sends, one after "
                                    "another.", 1, 100_000)] = 4,
    label: Annotated[str, typer.Option(
        help="Name of this server configuration in the table.")] = "serve",
    api_key_env: Annotated[Optional[str], typer.Option(help="Send the key in this environment "
                                                            "variable.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Append the results to this "
                                                                   "JSONL file.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Print the table of a JSONL file written "
                                                        "by --out, and send nothing.")] = None,
):
    """Concurrent clients against a running server: throughput, p50/p99 latency, mean batch,
    and that no request was lost or answered twice."""
    if report is not None:
        results = loadtest.read_results(report)
    else:
        try:
            counts = [int(c) for c in (csv(clients) or [])]
        except ValueError:
            raise ToolkitError(f"--clients takes a comma list of whole numbers (got "
                               f"{clients!r})") from None
        if not counts or not all(1 <= c <= 10_000 for c in counts):
            raise ToolkitError("--clients needs counts from 1 to 10000")
        key = server.api_key_from_env(api_key_env)
        clips = loadtest.load_clips(audio or loadtest.default_clips())
        results = loadtest.run_load(url, clips, counts, requests, label=label, api_key=key,
                                    out=out_file)
    _print_load(results)
    if any(r.lost or r.duplicated for r in results):
        raise typer.Exit(1)


def _print_load(results) -> None:
    table = Table(title="load test")
    for col in ("server", "clients", "requests", "ok", "lost", "dup", "same text",
                "audio s/s", "p50 ms", "p99 ms", "mean batch", "server count"):
        table.add_column(col, justify="left" if col == "server" else "right")
    for r in results:
        table.add_row(r.label, str(r.clients), str(r.requests), str(r.ok), str(r.lost),
                      str(r.duplicated), str(r.same_text), f"{r.throughput:.2f}",
                      f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}",
                      "-" if r.mean_batch is None else f"{r.mean_batch:.2f}",
                      "-" if r.counted is None else str(r.counted))
    out.print(table)
    if any(r.counted is not None and r.counted != r.requests for r in results):
        err.print("[yellow]note:[/] the server counted a different number of answers than "
                  "were sent (on Ray, /metrics is the view of the one replica that answered it)")


@one_line_errors
def export_triton(
    artifacts: Annotated[list[Path], typer.Argument(help="Whisper artifact directories "
                                                         "(toolkit export whisper).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Triton model repository to "
                                                              "write.")],
    platform: Annotated[str, typer.Option(help="onnx (onnxruntime_onnx: the graphs) or tensorrt "
                                               "(tensorrt_plan: the engines of `toolkit "
                                               "build`).")] = "onnx",
    instances: Annotated[int, number("--instances", "Instances of each model (instance_group "
                                     "count).", 1, 1024)] = 1,
    kind: Annotated[str, typer.Option(help="Where the encoder and decoder run: gpu or cpu (the "
                                           "BLS decode loop always runs on the CPU).")] = "gpu",
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it is a repository "
                                                        "export-triton wrote.")] = False,
):
    """Write a Triton Inference Server model repository (encoder, decoder, BLS decode loop) for
    Whisper artifacts; see docs/triton.md."""
    models = triton.write_repository(artifacts, out_dir, platform=platform,
                                     instances=instances, kind=kind, force=force)
    written = json.loads((Path(out_dir) / triton.MARKER).read_text())["models"]
    for m in models:
        info = written[m.name]
        what = ("python BLS: the decode loop" if info["role"] == "bls" else
                f"{info['role']}, {info['platform']}, max_batch_size {info['max_batch_size']}")
        out.print(f"[green]✓[/] {escape(str(m))} ({what})", soft_wrap=True)
    out.print(f"wrote Triton repository {escape(str(out_dir))}: tritonserver "
              f"--model-repository={escape(str(Path(out_dir).resolve()))} (docs/triton.md)",
              soft_wrap=True)
