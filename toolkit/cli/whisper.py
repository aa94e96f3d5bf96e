"""Whisper's own commands: ``toolkit transcribe`` and ``toolkit train whisper``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .. import registry
from ..core.files import check_input_file
from ..core.options import option
from ..runtime.whisper.longform import TranscribeOptions
from ..runtime.whisper.subtitles import check_formats, plan_outputs, write_outputs
from .base import Artifact, Backend, Checkpoint, Preset, Seed, err, note, one_line_errors, out
from .options import number, with_options


@one_line_errors
@with_options(options=TranscribeOptions)
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files of any length (any common "
                                                     "format/rate/channels).")],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Backend = "ort",
    output_format: Annotated[Optional[str], typer.Option(
        help="Files to write: txt, json, srt, vtt, tsv (comma-separated) or all. An existing "
             "regular file of the same name is replaced (as openai-whisper's CLI does); a "
             "symbolic link or directory there is refused.")] = None,
    output_dir: Annotated[Optional[Path], typer.Option(
        help="Where the files go (default: the current directory).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per file.")] = False,
    *,
    options: TranscribeOptions,
):
    """Transcribe audio of any length with Whisper on any backend: timestamped segments, beam
    search, temperature fallback; subtitles with --output-format srt/vtt."""
    options.check()
    for path in audio:                  # before any model is loaded
        check_input_file(path, "audio file")
    outputs = None
    if output_format is not None or output_dir is not None:
        outputs = plan_outputs(audio, output_dir or Path("."),
                               check_formats(output_format or "all"))
    pipe = registry.get("whisper").open_pipeline(artifact=artifact, checkpoint=checkpoint,
                                                 preset=preset, backend=backend,
                                                 seed=options.seed)
    pipe.check_language(options.language, options.task)
    cap = pipe.new_tokens_cap(options)
    if options.max_new_tokens > cap:
        note(f"--max-new-tokens {options.max_new_tokens} is capped at {cap} per 30-s window "
             f"(the model's {pipe.max_length} positions less the prompt)")
    for path in audio:
        result = pipe.transcribe(path, options, progress=not as_json)
        if outputs is not None:
            write_outputs(result, outputs[Path(path)])
            err.print(f"[green]✓[/] {escape(str(path))} → "
                      + ", ".join(escape(str(f)) for f in outputs[Path(path)]))
        if as_json:
            print(json.dumps(result, ensure_ascii=False))
        elif outputs is None:
            out.print(f"[bold]{escape(str(path))}[/]: {escape(result['text'])}", soft_wrap=True)
    if pipe.random_init:
        note("random-initialised weights (preset) — the text is meaningless; use --checkpoint "
             "for real transcripts")


@one_line_errors
def train_command(
    data: Annotated[Path, typer.Option("--data", help="Training folder: LJSpeech (metadata.csv + wavs/), audiofolder (metadata.csv with file_name) or audio + AIHub JSON.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output: a Hugging Face checkpoint (the best CER) + train_log.jsonl, eval.json, resume/.")] = Path("runs/whisper-finetune"),
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation folder (default: the last clips of --data, see --eval-split).")] = None,
    eval_split: Annotated[Optional[int], number("--eval-split", "Hold out the last N clips of --data for evaluation (default 10 %).", 1)] = None,
    language: Annotated[Optional[str], typer.Option(help="Language of the data (multilingual models), e.g. ko.")] = None,
    task: Annotated[str, typer.Option(help="transcribe or translate.")] = "transcribe",
    steps: Annotated[Optional[int], number("--steps", "Optimizer steps (default: 3 epochs).", 1, 10**9)] = None,
    epochs: Annotated[Optional[int], number("--epochs", "Passes over the training clips.", 1, 10**6)] = None,
    batch_size: Annotated[int, number("--batch-size", "Clips per micro-batch.", 1, 4096)] = 8,
    grad_accum: Annotated[int, number("--grad-accum", "Micro-batches per optimizer step.", 1, 4096)] = 1,
    lr: Annotated[Optional[float], number("--lr", "Peak learning rate (default by size: tiny 3.75e-5 … large 4.4e-6).", 1e-9, 1.0, integer=False)] = None,
    warmup: Annotated[Optional[int], number("--warmup", "Linear warm-up steps (default 10 %, at most 500).", 0, 10**9)] = None,
    spec_augment: Annotated[bool, typer.Option("--spec-augment", help="Time and frequency masking of training features.")] = False,
    lora: Annotated[bool, typer.Option("--lora", help="Train low-rank adapters on the attention projections (merged when saved).")] = False,
    lora_rank: Annotated[int, number("--lora-rank", "LoRA rank.", 1, 1024)] = 8,
    eval_every: Annotated[Optional[int], number("--eval-every", "Evaluate (greedy decode, CER/WER) every N steps (default: 10 epochs).", 1, 10**9)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last evaluation.")] = False,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward (default: on from medium up).")] = None,
    seed: Seed = 0,
):
    """Fine-tune Whisper on a folder of recordings; the checkpoint with the best CER exports."""
    registry.get("whisper").train_module.train(
        data, out_dir, checkpoint=checkpoint, preset=preset, eval_data=eval_data,
        eval_split=eval_split, language=language, task=task, steps=steps, epochs=epochs,
        batch_size=batch_size, grad_accum=grad_accum, lr=lr, warmup=warmup,
        augment=spec_augment, lora=lora, lora_rank=lora_rank, eval_every=eval_every,
        resume=resume, gradient_checkpointing=gradient_checkpointing, seed=seed)


@dataclass
class ServeOptions:
    """Whisper's options on ``toolkit serve`` (the decoding of ``toolkit transcribe``)."""

    beam_size: int = option(5, "Whisper beams at temperature 0 (as toolkit transcribe).", min=1,
                            max=64)
    best_of: int = option(5, "Whisper samples per window at temperature > 0.", min=1, max=64)


SERVE_OPTIONS = ServeOptions
