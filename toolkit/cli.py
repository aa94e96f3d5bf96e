"""The ``toolkit`` command line: thin Typer commands that call into the package.

Every ``ToolkitError`` becomes one line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .errors import ToolkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export PyTorch speech, TTS and video models to ONNX/TensorRT, run and "
                       "benchmark them.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model family on local data.")
app.add_typer(train_app, name="train")
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)


def friendly(fn):
    """Turn user errors into one line + non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToolkitError as exc:
            err.print(f"[red]error:[/] {exc}", soft_wrap=True)
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
@friendly
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """Versions, execution providers, GPU and threads — paste this into a bug report."""
    from .doctor import collect

    info = collect()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    from rich.table import Table

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
@friendly
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
):
    """Export a model's accelerated parts to ONNX (validated against PyTorch) + manifest.json."""
    from . import registry

    fam = registry.get(model)
    precision = _precision(fp16, int8, int8_target)
    if trt and precision == "int8-cpu":
        raise ToolkitError("--trt needs the TensorRT int8 form; drop --int8-target cpu")
    if out_dir is None:
        tag = (preset or (Path(checkpoint).name if checkpoint else
                          fam.default_model or fam.default_preset))
        out_dir = Path("artifacts") / f"{model}-{tag}-{precision}"
    if trt:
        from .export.tensorrt import require_tensorrt

        require_tensorrt(out_dir)  # fail before a long export if the build cannot happen
    fam.export(checkpoint=checkpoint, preset=preset, precision=precision, out=out_dir,
               calib_data=calib_data, opset=opset, seed=seed)
    if trt:
        from .export.tensorrt import build_artifact

        build_artifact(out_dir, fp16=precision == "fp16", int8=precision == "int8")


@app.command()
@friendly
def bench(
    model: Annotated[str, typer.Option("--model", "-m", help="Model family: whisper, gradtts, svt.")] = "whisper",
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Annotated[str, typer.Option(help="Comma list: torch,ort (GPU: ort-cuda,ort-trt,trt).")] = "torch,ort",
    precision: Annotated[Optional[str], typer.Option(help="Comma list of fp32,fp16,int8,int8-cpu (default: all the family supports).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data folder (LJSpeech-style for speech).")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per case.")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs per case.")] = 1,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Records JSON (CSV beside it).")] = None,
    tokens: Annotated[Optional[int], typer.Option(help="Whisper: force this many decoded tokens (default with random weights: 48).")] = None,
    steps: Annotated[Optional[str], typer.Option(help="Grad-TTS: comma list of ODE steps.")] = None,
    frames: Annotated[Optional[str], typer.Option(help="SVT: comma list of clip frame counts.")] = None,
    size: Annotated[Optional[str], typer.Option(help="SVT: comma list of clip sizes (px).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use at most this many data items.")] = None,
    seed: Seed = 0,
    workdir: Annotated[Optional[Path], typer.Option(help="Where exported artifacts are cached.")] = None,
):
    """Every backend × precision on the same inputs: latency, RTF, memory, quality parity."""
    from . import registry

    fam = registry.get(model)
    opts = dict(checkpoint=checkpoint, preset=preset, backends=_csv(backend),
                precisions=_csv(precision), data=data, runs=runs, warmup=warmup,
                out=out_file, seed=seed, limit=limit, workdir=workdir)
    family_opts = {"tokens": tokens, "steps": _csv(steps), "frames": _csv(frames),
                   "size": _csv(size)}
    accepted = fam.extra.get("bench_options", ())
    for k, v in family_opts.items():
        if v is None:
            continue
        if k not in accepted:
            raise ToolkitError(f"--{k} does not apply to {model}; it applies to "
                               f"{ {'tokens': 'whisper', 'steps': 'gradtts', 'frames': 'svt', 'size': 'svt'}[k]}")
        opts[k] = v
    fam.bench(**opts)


# ------------------------------------------------------------------------------------------
# whisper
# ------------------------------------------------------------------------------------------

@app.command()
@friendly
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files (any common format/rate/channels).")],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Annotated[str, typer.Option(help="torch or ort (GPU: ort-cuda, ort-trt, trt).")] = "ort",
    language: Annotated[Optional[str], typer.Option(help="Language code, e.g. en, ko.")] = None,
    task: Annotated[str, typer.Option(help="transcribe or translate.")] = "transcribe",
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens decoded per 30 s window.")] = 224,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per file.")] = False,
    seed: Seed = 0,
):
    """Transcribe audio with Whisper on any backend (one decode loop for all)."""
    from .runtime.whisper.pipeline import load_pipeline

    pipe = load_pipeline(artifact=artifact, checkpoint=checkpoint, preset=preset,
                         backend=backend, seed=seed)
    if pipe.random_init:
        err.print("[yellow]note:[/] random-initialised weights (preset) — the text is "
                  "meaningless; use --checkpoint for real transcripts")
    for path in audio:
        result = pipe.transcribe(path, language=language, task=task,
                                 max_new_tokens=max_new_tokens)
        if as_json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            out.print(f"[bold]{path}[/]: {result['text']}", soft_wrap=True)


# ------------------------------------------------------------------------------------------
# gradtts  (toolkit synthesize, toolkit train gradtts)
# ------------------------------------------------------------------------------------------

@app.command()
@friendly
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
    from .runtime.gradtts.synthesize import synthesize_to_files

    synthesize_to_files(text, out_file, artifact=artifact, checkpoint=checkpoint, preset=preset,
                        backend=backend, steps=steps, temperature=temperature,
                        length_scale=length_scale, seed=seed)


@train_app.command("gradtts")
@friendly
def train_gradtts(
    data: Annotated[Path, typer.Option(help="LJSpeech-style folder: metadata.csv + wavs/.")],
    steps: Annotated[int, typer.Option(help="Total training steps (resumes up to this many).")] = 300,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory (resumed if it exists).")] = Path("checkpoints/gradtts"),
    preset: Annotated[str, typer.Option(help="Architecture: tiny (CPU demo) or paper.")] = "tiny",
    batch_size: Annotated[int, typer.Option(help="Utterances per step.")] = 4,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate (default: 1e-3 tiny, 1e-4 paper).")] = None,
    save_every: Annotated[int, typer.Option(help="Write the checkpoint every N steps.")] = 100,
    seed: Seed = 0,
):
    """Train Grad-TTS (duration, prior and diffusion losses) on a local LJSpeech-style folder."""
    from .models.gradtts.train import train

    train(data, out_dir, steps=steps, preset=preset, batch_size=batch_size, lr=lr,
          seed=seed, save_every=save_every)



# ------------------------------------------------------------------------------------------
# svt  (toolkit embed, toolkit train svt)
# ------------------------------------------------------------------------------------------

@app.command()
@friendly
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
    from .runtime.svt import load_pipeline

    if artifact is None and checkpoint is None and preset is None:
        preset = "vit-base"
    pipe = load_pipeline(artifact=artifact, checkpoint=checkpoint, preset=preset,
                         backend=backend, seed=seed)
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
            out.print(f"[bold]{path}[/]: dim {r['dim']}, views {r['views']}, "
                      f"‖e‖={float((emb ** 2).sum() ** 0.5):.3f}  [{head}, …]", soft_wrap=True)


@train_app.command("svt")
@friendly
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
    from .models.svt.train import TrainOptions, train

    opts = TrainOptions(data=data, steps=steps, out=out_dir, preset=preset,
                        batch_size=batch_size, lr=lr, global_size=global_size,
                        local_size=local_size, save_every=save_every, resume=resume, seed=seed)
    summary = train(opts)
    out.print(f"loss {summary['first_loss']:.4f} → {summary['last_loss']:.4f}; teacher entropy "
              f"{summary['teacher_entropy']:.3f} nats (batch-mean distribution "
              f"{summary['teacher_marginal_entropy']:.3f} of max {summary['max_entropy']:.3f}); "
              f"backbone saved to {summary['checkpoint']}")



# ------------------------------------------------------------------------------------------
# tensorrt  (toolkit build, toolkit check-trt)
# ------------------------------------------------------------------------------------------

@app.command()
@friendly
def build(
    artifact_dir: Annotated[Path, typer.Argument(help="Exported artifact directory (manifest.json + graphs).")],
    fp16: Annotated[bool, typer.Option("--fp16", help="fp16 engine (LayerNorm/Softmax and their inputs pinned fp32).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="int8 engine from the int8 QDQ export (explicit quantization).")] = False,
    workspace: Annotated[int, typer.Option("--workspace", help="Builder workspace limit, MiB.")] = 2048,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Timing cache file (read and updated); default per GPU + TensorRT under ~/.cache/toolkit/tensorrt.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write a copy of the artifact with the engines here (default: in place).")] = None,
    profile: Annotated[Optional[list[str]], typer.Option("--profile", help="Override a range: AXIS=min:opt:max (a named dynamic axis, e.g. tokens=1:64:448) or INPUT=AxB:AxB:AxB (a whole input shape). Repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when a cached engine matches.")] = False,
):
    """Build TensorRT 10 engines for every graph of an artifact (needs tensorrt + a GPU)."""
    from .export.tensorrt import build_artifact, parse_profile_overrides

    overrides = parse_profile_overrides(profile)  # bad syntax fails before anything else
    build_artifact(artifact_dir, fp16=fp16, int8=int8, workspace_mb=workspace,
                   timing_cache=timing_cache, out=out_dir, profile_overrides=overrides,
                   force=force)


@app.command("check-trt")
@friendly
def check_trt(
    artifact_dir: Annotated[Path, typer.Argument(help="Exported artifact directory (manifest.json + graphs).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
):
    """Static check of every graph against TensorRT 10's ONNX support (no TensorRT needed)."""
    from dataclasses import asdict

    from .export.check_trt import check_artifact, print_findings
    from .export.manifest import load_manifest

    graphs = list(load_manifest(artifact_dir)["graphs"])
    findings = check_artifact(artifact_dir)
    if as_json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        print_findings(findings, artifact_dir, graphs)
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)



def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
