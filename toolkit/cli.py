"""The ``toolkit`` command line: thin Typer commands that call into the package.

Every ``ToolkitError`` becomes one line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import registry
from .core.errors import ToolkitError
from .doctor import collect

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export PyTorch speech, TTS and video models to ONNX/TensorRT, run and "
                       "benchmark them.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model family on local data.")
app.add_typer(train_app, name="train")
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)


def one_line_errors(fn):
    """Turn user errors into one line + non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToolkitError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def _csv(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _precision(fp16: bool, int8: bool, int8_target: str = "trt") -> str:
    if fp16 and int8:
        raise ToolkitError("choose one of --fp16 and --int8")
    if int8_target not in ("trt", "cpu"):
        raise ToolkitError(f"--int8-target must be trt or cpu, not {int8_target!r}")
    if int8:
        return "int8-cpu" if int8_target == "cpu" else "int8"
    return "fp16" if fp16 else "fp32"


Checkpoint = Annotated[Optional[str], typer.Option(
    "--checkpoint", "-c", help="Local checkpoint directory or Hugging Face hub id.")]
Preset = Annotated[Optional[str], typer.Option(
    "--preset", "-p", help="Published architecture with seeded random weights (no download).")]
Artifact = Annotated[Optional[Path], typer.Option(
    "--artifact", "-a", help="Exported artifact directory (manifest.json + graphs).")]
Seed = Annotated[int, typer.Option(help="Seed for random initialisation of presets.")]


# ------------------------------------------------------------------------------------------
# general
# ------------------------------------------------------------------------------------------

@app.command()
@one_line_errors
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """Versions, execution providers, GPU and threads — paste this into a bug report."""
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
        table.add_row(k, str(v))
    out.print(table)


@app.command()
@one_line_errors
def export(
    model: Annotated[str, typer.Argument(help="Model family: whisper, gradtts, svt.")],
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision graphs (LayerNorm/Softmax kept fp32).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="int8 QDQ graphs calibrated on real data.")] = False,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Artifact directory.")] = None,
    calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help="Real data for int8 calibration.")] = None,
    int8_target: Annotated[str, typer.Option("--int8-target", help="int8 form: trt (QDQ with symmetric int8 activations on the layers within the error budget; TensorRT and onnxruntime) or cpu (onnxruntime CPU int8 kernels; not buildable by TensorRT).")] = "trt",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    seed: Seed = 0,
    trt: Annotated[bool, typer.Option("--trt", help="Also build TensorRT engines (needs tensorrt).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds files that are not a toolkit artifact.")] = False,
    external_data_mb: Annotated[Optional[float], typer.Option("--external-data-mb", help="Graphs with at least this many MiB of weights keep them in one <graph>.onnx.data file beside the graph (default 1536: under protobuf's 2 GiB limit).")] = None,
):
    """Export a model's accelerated parts to ONNX (validated against PyTorch) + manifest.json."""
    fam = registry.get(model)
    precision = _precision(fp16, int8, int8_target)
    if trt and precision == "int8-cpu":
        raise ToolkitError("--trt needs the TensorRT int8 form; drop --int8-target cpu")
    if external_data_mb is not None and not 1 <= external_data_mb <= 1900:
        raise ToolkitError(f"--external-data-mb must be between 1 and 1900 MiB (protobuf cannot "
                           f"hold a graph of 2 GiB), not {external_data_mb:g}")
    tag = fam.default_tag(checkpoint, preset)
    out_dir = out_dir or Path("artifacts") / f"{model}-{tag}-{precision}"
    if trt:
        tensorrt().require_tensorrt(out_dir)  # fail before a long export if no build can happen
    fam.export(checkpoint=checkpoint, preset=preset, precision=precision, out=out_dir,
               calib_data=calib_data, opset=opset, seed=seed, force=force,
               external_data_mb=external_data_mb)
    if trt:
        tensorrt().build_artifact(out_dir, fp16=precision == "fp16", int8=precision == "int8")


def bench(model: str = "whisper", checkpoint=None, preset=None, backend=None,
          precision=None, data=None, runs: int = 5, warmup: int = 1, out_file=None, limit=None,
          seed: int = 0, workdir=None, **family_options):
    """Every backend × precision on the same inputs: latency, RTF, memory, quality parity."""
    fam = registry.get(model)
    opts = dict(checkpoint=checkpoint, preset=preset, backends=_csv(backend),
                precisions=_csv(precision), data=data, runs=runs, warmup=warmup,
                out=out_file, seed=seed, limit=limit, workdir=workdir)
    accepted = {o.name: o for o in fam.bench_options}
    for name, value in family_options.items():
        if value is None or value is False:   # not given
            continue
        if name not in accepted:
            owners = [f.name for f in registry.FAMILIES.values()
                      if any(o.name == name for o in f.bench_options)]
            raise ToolkitError(f"--{name.replace('_', '-')} does not apply to {model}; it applies to "
                               f"{', '.join(owners)}")
        opts[name] = _csv(value) if accepted[name].kind == "list" else value
    fam.bench(**opts)


def _bench_signature() -> inspect.Signature:
    """The common options, then every family's own (declared in the registry, not here)."""
    kw = inspect.Parameter.KEYWORD_ONLY

    def opt(name, annotation, default):
        return inspect.Parameter(name, kw, default=default, annotation=annotation)

    params = [
        opt("model", Annotated[str, typer.Option("--model", "-m", help="Model family: "
                                                 + ", ".join(registry.FAMILIES) + ".")], "whisper"),
        opt("checkpoint", Checkpoint, None), opt("preset", Preset, None),
        opt("backend", Annotated[Optional[str], typer.Option(help="Comma list: torch,ort (GPU: ort-cuda,ort-trt,trt; whisper: hf, ct2 = faster-whisper). Default: torch,ort, plus ct2 for whisper when faster-whisper is installed.")], None),
        opt("precision", Annotated[Optional[str], typer.Option(help="Comma list of fp32,fp16,int8,int8-cpu (default: all).")], None),
        opt("data", Annotated[Optional[Path], typer.Option(help="Data folder (LJSpeech-style for speech, videos for svt).")], None),
        opt("runs", Annotated[int, typer.Option(help="Timed runs per case.")], 5),
        opt("warmup", Annotated[int, typer.Option(help="Untimed warm-up runs per case.")], 1),
        opt("out_file", Annotated[Optional[Path], typer.Option("--out", "-o", help="Records JSON (CSV and PNG beside it).")], None),
        opt("limit", Annotated[Optional[int], typer.Option(help="Use at most this many data items.")], None),
        opt("seed", Seed, 0),
        opt("workdir", Annotated[Optional[Path], typer.Option(help="Where exported artifacts are cached.")], None),
    ]
    seen: set[str] = set()
    for fam in registry.FAMILIES.values():
        for o in fam.bench_options:
            if o.name in seen:
                continue
            seen.add(o.name)
            flag = o.name.replace("_", "-")
            if o.kind == "flag":   # off by default; given = True
                params.append(opt(o.name, Annotated[bool, typer.Option(f"--{flag}",
                                                                       help=o.help)], False))
                continue
            kind = Optional[int] if o.kind == "int" else Optional[str]
            params.append(opt(o.name, Annotated[kind, typer.Option(f"--{flag}", help=o.help)],
                              None))
    return inspect.Signature(params)


bench = one_line_errors(bench)
bench.__signature__ = _bench_signature()
app.command("bench")(bench)


# ------------------------------------------------------------------------------------------
# whisper
# ------------------------------------------------------------------------------------------

@app.command()
@one_line_errors
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files of any length (any common format/rate/channels).")],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Annotated[str, typer.Option(help="torch or ort (GPU: ort-cuda, ort-trt, trt).")] = "ort",
    language: Annotated[Optional[str], typer.Option(help="Language code, e.g. en, ko (default: detected; English-only models: en).")] = None,
    task: Annotated[str, typer.Option(help="transcribe or translate (to English).")] = "transcribe",
    beam_size: Annotated[int, typer.Option(help="Beams at temperature 0 (1 = greedy).")] = 5,
    best_of: Annotated[int, typer.Option(help="Samples per window at temperature > 0.")] = 5,
    patience: Annotated[float, typer.Option(help="Beam search patience (finished candidates = beam size × patience).")] = 1.0,
    length_penalty: Annotated[Optional[float], typer.Option(help="0..1: rank by log-prob / ((5+len)/6)^α (default: / len).")] = None,
    temperature: Annotated[float, typer.Option(help="First decoding temperature.")] = 0.0,
    temperature_increment_on_fallback: Annotated[float, typer.Option(help="Step of the temperature when a window fails the thresholds below (0: no fallback).")] = 0.2,
    compression_ratio_threshold: Annotated[float, typer.Option(help="A window whose text compresses better than this failed (repetition).")] = 2.4,
    logprob_threshold: Annotated[float, typer.Option(help="A window whose average log-probability is below this failed.")] = -1.0,
    no_speech_threshold: Annotated[float, typer.Option(help="A window with <|nospeech|> probability above this, and not confident, is silence.")] = 0.6,
    condition_on_previous_text: Annotated[bool, typer.Option(help="Prompt each window with the text before it.")] = True,
    initial_prompt: Annotated[Optional[str], typer.Option(help="Text to prompt the first window with (spelling, names).")] = None,
    without_timestamps: Annotated[bool, typer.Option("--without-timestamps", help="Decode without timestamp tokens (one segment per window).")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens decoded per 30-s window.")] = 224,
    output_format: Annotated[Optional[str], typer.Option(help="Files to write: txt, json, srt, vtt, tsv (comma-separated) or all.")] = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Where the files go (default: current directory).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per file.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of fallback sampling (and of preset weights).")] = 0,
):
    """Transcribe audio of any length with Whisper on any backend: timestamped segments, beam
    search, temperature fallback; subtitles with --output-format srt/vtt."""
    whisper = registry.get("whisper").layer("runtime")
    if temperature_increment_on_fallback < 0:
        raise ToolkitError("--temperature-increment-on-fallback must be 0 or more (got "
                           f"{temperature_increment_on_fallback})")
    temperatures = (whisper.fallback_temperatures(temperature, temperature_increment_on_fallback))
    options = whisper.TranscribeOptions(
        language=language, task=task, beam_size=beam_size, best_of=best_of, patience=patience,
        length_penalty=length_penalty, temperatures=temperatures,
        compression_ratio_threshold=compression_ratio_threshold,
        logprob_threshold=logprob_threshold, no_speech_threshold=no_speech_threshold,
        condition_on_previous_text=condition_on_previous_text, initial_prompt=initial_prompt,
        without_timestamps=without_timestamps, max_new_tokens=max_new_tokens, seed=seed)
    options.check()
    outputs = None
    if output_format is not None or output_dir is not None:
        outputs = whisper.plan_outputs(audio, output_dir or Path("."),
                                       whisper.check_formats(output_format or "all"))
    pipe = registry.get("whisper").open_pipeline(artifact=artifact, checkpoint=checkpoint,
                                                 preset=preset, backend=backend, seed=seed)
    if pipe.random_init:
        err.print("[yellow]note:[/] random-initialised weights (preset) — the text is "
                  "meaningless; use --checkpoint for real transcripts")
    pipe.check_language(language, task)
    tok = pipe.tokenizer
    longest = pipe.max_length - len(tok.sot_sequence(language if tok.multilingual else None, task,
                                                     timestamps=not without_timestamps))
    if max_new_tokens > longest:
        err.print(f"[yellow]note:[/] --max-new-tokens {max_new_tokens} is capped at {longest} "
                  f"per 30-s window (the model's {pipe.max_length} positions less the prompt)")
    for path in audio:
        result = pipe.transcribe(path, options, progress=not as_json)
        if outputs is not None:
            whisper.write_outputs(result, outputs[Path(path)])
            err.print(f"[green]✓[/] {escape(str(path))} → "
                      + ", ".join(escape(str(f)) for f in outputs[Path(path)]))
        if as_json:
            print(json.dumps(result, ensure_ascii=False))
        elif outputs is None:
            out.print(f"[bold]{escape(str(path))}[/]: {escape(result['text'])}", soft_wrap=True)


@app.command()
@one_line_errors
def serve(
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Annotated[str, typer.Option(help="Backend of the models: torch or ort (GPU: ort-cuda, ort-trt, trt).")] = "ort",
    tts_artifact: Annotated[Optional[Path], typer.Option(help="Also serve /v1/audio/speech from this Grad-TTS artifact.")] = None,
    tts_checkpoint: Annotated[Optional[str], typer.Option(help="… or this Grad-TTS checkpoint.")] = None,
    tts_preset: Annotated[Optional[str], typer.Option(help="… or this Grad-TTS preset (random weights: noise).")] = None,
    tts_backend: Annotated[str, typer.Option(help="Backend of the Grad-TTS model (as toolkit synthesize).")] = "torch",
    no_whisper: Annotated[bool, typer.Option("--no-whisper", help="Serve only the Grad-TTS model.")] = False,
    engine: Annotated[str, typer.Option(help="local (uvicorn, one process) or ray (Ray Serve deployment).")] = "local",
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_batch: Annotated[int, typer.Option(help="Requests decoded together (Whisper: one 30-s window each per round); 1 = one at a time.")] = 8,
    max_wait_ms: Annotated[float, typer.Option(help="How long an idle server waits for more requests to batch with the first.")] = 10.0,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait; past that the server answers 429 with Retry-After.")] = 128,
    max_upload_mb: Annotated[float, typer.Option(help="Largest audio upload (413 past it).")] = 25.0,
    max_audio_s: Annotated[float, typer.Option(help="Longest recording, checked before and while decoding (413 past it).")] = 10800.0,
    timeout_s: Annotated[float, typer.Option(help="Longest a request may take (504 past it).")] = 300.0,
    api_key_env: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer <key>' with the key in this environment variable.")] = None,
    beam_size: Annotated[int, typer.Option(help="Whisper beams at temperature 0 (as toolkit transcribe).")] = 5,
    best_of: Annotated[int, typer.Option(help="Whisper samples per window at temperature > 0.")] = 5,
    tts_steps: Annotated[int, typer.Option(help="Grad-TTS ODE steps per request.")] = 10,
    replicas: Annotated[int, typer.Option(help="--engine ray: replicas of each deployment.")] = 1,
    gpus_per_replica: Annotated[float, typer.Option(help="--engine ray: GPUs per replica (0 on CPU machines).")] = 0.0,
    cpus_per_replica: Annotated[float, typer.Option(help="--engine ray: CPUs reserved per replica.")] = 1.0,
    ray_address: Annotated[Optional[str], typer.Option(help="--engine ray: join this Ray cluster (default: start a local one).")] = None,
    autoscaling: Annotated[Optional[str], typer.Option(help="--engine ray: Ray Serve autoscaling_config as JSON, e.g. '{\"min_replicas\":1,\"max_replicas\":4}'.")] = None,
):
    """Serve Whisper (and Grad-TTS) over an OpenAI-compatible HTTP API, with dynamic batching."""
    serve_mod = registry.layer_module("serve", "service")
    if not no_whisper:
        whisper = serve_mod.ModelSource(str(artifact) if artifact else None, checkpoint, preset, backend)
    elif artifact or checkpoint or preset:
        raise ToolkitError("--no-whisper serves no Whisper model; drop --artifact/--checkpoint/--preset")
    else:
        whisper = None
    tts = None
    if tts_artifact or tts_checkpoint or tts_preset:
        tts = serve_mod.ModelSource(str(tts_artifact) if tts_artifact else None, tts_checkpoint, tts_preset, tts_backend)
    settings = serve_mod.Settings(whisper=whisper, tts=tts, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                  max_queue=max_queue, max_upload_mb=max_upload_mb, max_audio_s=max_audio_s, timeout_s=timeout_s,
                                  beam_size=beam_size, best_of=best_of, tts_steps=tts_steps)
    if engine == "local":
        registry.layer_module("serve", "server").run(settings, host, port, api_key_env)
    elif engine == "ray":
        registry.layer_module("serve", "ray_app").run(
            settings, host, port, api_key_env, replicas=replicas, gpus=gpus_per_replica,
            cpus=cpus_per_replica, address=ray_address, autoscaling=autoscaling)
    else:
        raise ToolkitError(f"--engine must be local or ray (got {engine!r})")


@app.command("load-test")
@one_line_errors
def load_test(
    url: Annotated[str, typer.Option(help="The server, e.g. http://127.0.0.1:8000.")] = "http://127.0.0.1:8000",
    audio: Annotated[Optional[list[Path]], typer.Option("--audio", help="Clips (files or folders) the clients send in turn (default: the built-in LJSpeech clips).")] = None,
    clients: Annotated[str, typer.Option(help="Comma list of concurrent client counts.")] = "1,4,16,64",
    requests: Annotated[int, typer.Option(help="Requests each client sends, one after another.")] = 4,
    label: Annotated[str, typer.Option(help="Name of this server configuration in the table.")] = "serve",
    api_key_env: Annotated[Optional[str], typer.Option(help="Send the key in this environment variable.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Append the results to this JSONL file.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Print the table of a JSONL file written by --out, and send nothing.")] = None,
):
    """Concurrent clients against a running server: throughput, p50/p99 latency, mean batch,
    and that no request was lost or answered twice."""
    load = registry.layer_module("serve", "loadtest")
    if report is not None:
        results = load.read_results(report)
    else:
        counts = [int(c) for c in (_csv(clients) or [])]
        if not counts or min(counts) < 1 or requests < 1:
            raise ToolkitError("--clients needs counts of at least 1 and --requests at least 1")
        key = registry.layer_module("serve", "server").api_key_from_env(api_key_env)
        clips = load.load_clips(audio or load.default_clips())
        results = load.run_load(url, clips, counts, requests, label=label, api_key=key,
                                out=out_file)
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
    if any(r.lost or r.duplicated for r in results):
        raise typer.Exit(1)


@train_app.command("whisper")
@one_line_errors
def train_whisper(
    data: Annotated[Path, typer.Option("--data", help="Training folder: LJSpeech (metadata.csv + wavs/), audiofolder (metadata.csv with file_name) or audio + AIHub JSON.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output: a Hugging Face checkpoint (the best CER) + train_log.jsonl, eval.json, resume/.")] = Path("runs/whisper-finetune"),
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation folder (default: the last clips of --data, see --eval-split).")] = None,
    eval_split: Annotated[Optional[int], typer.Option(help="Hold out the last N clips of --data for evaluation (default 10 %).")] = None,
    language: Annotated[Optional[str], typer.Option(help="Language of the data (multilingual models), e.g. ko.")] = None,
    task: Annotated[str, typer.Option(help="transcribe or translate.")] = "transcribe",
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (default: 3 epochs).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training clips.")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per micro-batch.")] = 8,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default by size: tiny 3.75e-5 … large 4.4e-6).")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Linear warm-up steps (default 10 %, at most 500).")] = None,
    spec_augment: Annotated[bool, typer.Option("--spec-augment", help="Time and frequency masking of training features.")] = False,
    lora: Annotated[bool, typer.Option("--lora", help="Train low-rank adapters on the attention projections (merged when saved).")] = False,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    eval_every: Annotated[Optional[int], typer.Option(help="Evaluate (greedy decode, CER/WER) every N steps (default: 10 epochs).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last evaluation.")] = False,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward (default: on from medium up).")] = None,
    seed: Seed = 0,
):
    """Fine-tune Whisper on a folder of recordings; the checkpoint with the best CER exports."""
    registry.layer_module("train", "whisper").train(
        data, out_dir, checkpoint=checkpoint, preset=preset, eval_data=eval_data,
        eval_split=eval_split, language=language, task=task, steps=steps, epochs=epochs,
        batch_size=batch_size, grad_accum=grad_accum, lr=lr, warmup=warmup,
        augment=spec_augment, lora=lora, lora_rank=lora_rank, eval_every=eval_every,
        resume=resume, gradient_checkpointing=gradient_checkpointing, seed=seed)


# ------------------------------------------------------------------------------------------
# gradtts  (toolkit synthesize, toolkit train gradtts)
# ------------------------------------------------------------------------------------------

@app.command()
@one_line_errors
def synthesize(
    text: Annotated[str, typer.Argument(help="Text to speak (characters outside a-z and basic punctuation are dropped).")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Output .wav (the mel is written beside it as .npy).")],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Annotated[str, typer.Option(help="torch or ort (GPU: ort-cuda, ort-trt, trt).")] = "torch",
    steps: Annotated[int, typer.Option(help="Reverse-diffusion (ODE) steps.")] = 10,
    temperature: Annotated[float, typer.Option(help="Prior temperature τ: start at μ + ε/τ.")] = 1.5,
    length_scale: Annotated[float, typer.Option(help="Speaking-rate factor on the durations (>1 slower).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the noise ε (and of preset weights).")] = 0,
):
    """Text → mel (Grad-TTS, any backend) → waveform (Griffin-Lim)."""
    registry.get("gradtts").layer("runtime").synthesize_to_files(text, out_file, artifact=artifact, checkpoint=checkpoint, preset=preset,
                        backend=backend, steps=steps, temperature=temperature,
                        length_scale=length_scale, seed=seed)


@train_app.command("gradtts")
@one_line_errors
def train_gradtts(
    data: Annotated[Path, typer.Option(help="LJSpeech-style folder: metadata.csv + wavs/.")],
    steps: Annotated[int, typer.Option(help="Total training steps (resumes up to this many).")] = 300,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory (resumed if it exists).")] = Path("checkpoints/gradtts"),
    preset: Annotated[Optional[str], typer.Option(help="Architecture: tiny (CPU demo, the default for a new run) or paper.")] = None,
    batch_size: Annotated[int, typer.Option(help="Utterances per step.")] = 4,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate (default: 1e-3 tiny, 1e-4 paper).")] = None,
    save_every: Annotated[int, typer.Option(help="Write the checkpoint every N steps.")] = 100,
    seed: Seed = 0,
):
    """Train Grad-TTS (duration, prior and diffusion losses) on a local LJSpeech-style folder."""
    registry.get("gradtts").layer("models").train(data, out_dir, steps=steps, preset=preset, batch_size=batch_size, lr=lr,
          seed=seed, save_every=save_every)



# ------------------------------------------------------------------------------------------
# svt  (toolkit embed, toolkit train svt)
# ------------------------------------------------------------------------------------------

@app.command()
@one_line_errors
def embed(
    videos: Annotated[list[Path], typer.Argument(help="Video files (mp4, mkv, avi, webm, mov, ...).")],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Annotated[str, typer.Option(help="torch or ort (GPU: ort-cuda, ort-trt, trt).")] = "torch",
    frames: Annotated[int, typer.Option(help="Frames sampled uniformly from each video.")] = 8,
    size: Annotated[int, typer.Option(help="Clip size in px (multiple of 16).")] = 224,
    slow_fast: Annotated[bool, typer.Option("--slow-fast", help="SVT slow-fast inference: frames/2 at full size + 2×frames at half size, embeddings averaged.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per video with the full embedding.")] = False,
    seed: Seed = 0,
):
    """Embed videos with the SVT backbone (CLS feature), on any backend."""
    pipe = registry.get("svt").open_pipeline(artifact=artifact, checkpoint=checkpoint,
                                             preset=preset, backend=backend, seed=seed)
    if pipe.random_init:
        err.print("[yellow]note:[/] random-initialised weights (preset) — embeddings are not "
                  "semantically meaningful; use --checkpoint for a trained model")
    for path in videos:
        r = pipe.embed(path, n_frames=frames, size=size, slow_fast=slow_fast)
        emb = r.pop("embedding")
        if as_json:
            print(json.dumps({**r, "backend": backend, "random_init": pipe.random_init,
                              "embedding": [round(float(v), 6) for v in emb]}))
        else:
            head = ", ".join(f"{v:+.4f}" for v in emb[:6])
            out.print(f"[bold]{escape(str(path))}[/]: dim {r['dim']}, views {r['views']}, "
                      f"‖e‖={float((emb ** 2).sum() ** 0.5):.3f}  [{head}, …]", soft_wrap=True)


@train_app.command("svt")
@one_line_errors
def train_svt(
    data: Annotated[Path, typer.Option("--data", help="Folder of video clips.")],
    steps: Annotated[int, typer.Option(help="Optimizer steps (total, including resumed ones).")] = 100,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run directory (checkpoints).")] = Path("runs/svt"),
    preset: Annotated[str, typer.Option("--preset", "-p", help="Architecture: vit-base or tiny.")] = "vit-base",
    batch_size: Annotated[int, typer.Option(help="Clips per step.")] = 2,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (warm-up, cosine decay).")] = 2e-4,
    global_size: Annotated[Optional[int], typer.Option(help="Global view size (default 224; tiny: 32).")] = None,
    local_size: Annotated[Optional[int], typer.Option(help="Local view size (default 96; tiny: 16).")] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 50,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT/train_state.pt if present.")] = True,
    seed: Seed = 0,
):
    """SVT self-supervised training: student/EMA-teacher self-distillation over space-time views."""
    models = registry.get("svt").layer("models")
    opts = models.TrainOptions(data=data, steps=steps, out=out_dir, preset=preset,
                        batch_size=batch_size, lr=lr, global_size=global_size,
                        local_size=local_size, save_every=save_every, resume=resume, seed=seed)
    summary = models.train(opts)
    out.print(f"loss {summary['first_loss']:.4f} → {summary['last_loss']:.4f}; teacher entropy "
              f"{summary['teacher_entropy']:.3f} nats (batch-mean distribution "
              f"{summary['teacher_marginal_entropy']:.3f} of max {summary['max_entropy']:.3f}); "
              f"backbone saved to {summary['checkpoint']}")



# ------------------------------------------------------------------------------------------
# tensorrt  (toolkit build, toolkit check-trt)
# ------------------------------------------------------------------------------------------

@app.command()
@one_line_errors
def build(
    artifact_dir: Annotated[Path, typer.Argument(help="Exported artifact directory (manifest.json + graphs).")],
    fp16: Annotated[bool, typer.Option("--fp16", help="fp16 engine (LayerNorm/Softmax and their inputs pinned fp32).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="int8 engine from the int8 QDQ export (explicit quantization).")] = False,
    workspace: Annotated[Optional[int], typer.Option("--workspace", help="Builder workspace limit, MiB (default: 2048 on a discrete GPU; on a Jetson, a quarter of the memory left after the graph's weights, 256-2048).")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Timing cache file (read and updated); default per GPU + TensorRT under ~/.cache/toolkit/tensorrt.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write a copy of the artifact with the engines here (default: in place).")] = None,
    profile: Annotated[Optional[list[str]], typer.Option("--profile", help="Override a range: AXIS=min:opt:max (a named dynamic axis, e.g. tokens=1:64:448) or INPUT=AxB:AxB:AxB (a whole input shape). Repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when a cached engine matches.")] = False,
):
    """Build TensorRT 10 engines for every graph of an artifact (needs tensorrt + a GPU)."""
    overrides = tensorrt().parse_profile_overrides(profile)  # bad syntax fails before anything
    tensorrt().build_artifact(artifact_dir, fp16=fp16, int8=int8, workspace_mb=workspace,
                   timing_cache=timing_cache, out=out_dir, profile_overrides=overrides,
                   force=force)


@app.command("check-trt")
@one_line_errors
def check_trt(
    artifact_dir: Annotated[Path, typer.Argument(help="Exported artifact directory (manifest.json + graphs).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
):
    """Static check of every graph against TensorRT 10's ONNX support (no TensorRT needed)."""
    check = registry.export_module("check_trt")
    graphs = list(registry.export_module("manifest").load_manifest(artifact_dir)["graphs"])
    findings = check.check_artifact(artifact_dir)
    if as_json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        check.print_findings(findings, artifact_dir, graphs)
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)


@app.command("export-triton")
@one_line_errors
def export_triton(
    artifacts: Annotated[list[Path], typer.Argument(help="Whisper artifact directories (toolkit export whisper).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Triton model repository to write.")],
    platform: Annotated[str, typer.Option(help="onnx (onnxruntime_onnx: the graphs) or tensorrt (tensorrt_plan: the engines of `toolkit build`).")] = "onnx",
    instances: Annotated[int, typer.Option(help="Instances of each model (instance_group count).")] = 1,
    kind: Annotated[str, typer.Option(help="Where the encoder and decoder run: gpu or cpu (the BLS decode loop always runs on the CPU).")] = "gpu",
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it is a repository export-triton wrote.")] = False,
):
    """Write a Triton Inference Server model repository (encoder, decoder, BLS decode loop) for
    Whisper artifacts; see docs/triton.md."""
    models = triton().write_repository(artifacts, out_dir, platform=platform,
                                       instances=instances, kind=kind, force=force)
    written = json.loads((Path(out_dir) / triton().MARKER).read_text())["models"]
    for m in models:
        info = written[m.name]
        what = ("python BLS: the decode loop" if info["role"] == "bls" else
                f"{info['role']}, {info['platform']}, max_batch_size {info['max_batch_size']}")
        out.print(f"[green]✓[/] {escape(str(m))} ({what})", soft_wrap=True)
    out.print(f"wrote Triton repository {escape(str(out_dir))}: tritonserver "
              f"--model-repository={escape(str(Path(out_dir).resolve()))} (docs/triton.md)",
              soft_wrap=True)


def triton():
    """The Triton repository writer (loaded when a command needs it)."""
    return registry.layer_module("serve", "triton")




def tensorrt():
    """The TensorRT builder module (loaded when a command needs it)."""
    return registry.export_module("tensorrt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
