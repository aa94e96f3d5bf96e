"""Whisper's own commands: ``toolkit transcribe`` (``toolkit train whisper`` is generated from
``train/whisper.py: TrainOptions``) and its ``toolkit serve`` options."""

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
from ..runtime.whisper.subtitles import (
    SubtitleOptions,
    check_formats,
    plan_outputs,
    write_outputs,
)
from .base import Artifact, Backend, Checkpoint, Preset, err, note, one_line_errors, out
from .options import with_options


@one_line_errors
@with_options(options=TranscribeOptions, subtitles=SubtitleOptions)
def transcribe(
    audio: Annotated[
        list[Path],
        typer.Argument(help="Audio files of any length (any common format/rate/channels)."),
    ],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Backend = "ort",
    output_format: Annotated[
        Optional[str],
        typer.Option(
            help="Files to write: txt, json, srt, vtt, tsv (comma-separated) or all. An existing "
            "regular file of the same name is replaced (as openai-whisper's CLI does); a "
            "symbolic link or directory there is refused."
        ),
    ] = None,
    output_dir: Annotated[
        Optional[Path], typer.Option(help="Where the files go (default: the current directory).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per file.")
    ] = False,
    *,
    options: TranscribeOptions,
    subtitles: SubtitleOptions,
):
    """Transcribe audio of any length with Whisper on any backend: timestamped segments, beam
    search, temperature fallback; subtitles with --output-format srt/vtt."""
    options.check()
    subtitles.check(options.word_timestamps)
    for path in audio:  # before any model is loaded
        check_input_file(path, "audio file")
    outputs = None
    if output_format is not None or output_dir is not None:
        outputs = plan_outputs(
            audio, output_dir or Path("."), check_formats(output_format or "all")
        )
    pipe = registry.get("whisper").open_pipeline(
        artifact=artifact, checkpoint=checkpoint, preset=preset, backend=backend, seed=options.seed
    )
    pipe.check_language(options.language, options.task)
    if options.word_timestamps:
        pipe.check_word_timestamps()
    cap = pipe.new_tokens_cap(options)
    if options.max_new_tokens > cap:
        note(
            f"--max-new-tokens {options.max_new_tokens} is capped at {cap} per 30-s window "
            f"(the model's {pipe.max_length} positions less the prompt)"
        )
    for path in audio:
        result = pipe.transcribe(path, options, progress=not as_json)
        if outputs is not None:
            write_outputs(result, outputs[Path(path)], subtitles)
            err.print(
                f"[green]✓[/] {escape(str(path))} → "
                + ", ".join(escape(str(f)) for f in outputs[Path(path)])
            )
        if as_json:
            print(json.dumps(result, ensure_ascii=False))
        elif outputs is None:
            out.print(f"[bold]{escape(str(path))}[/]: {escape(result['text'])}", soft_wrap=True)
    if pipe.random_init:
        note(
            "random-initialised weights (preset) — the text is meaningless; use --checkpoint "
            "for real transcripts"
        )


@dataclass
class ServeOptions:
    """Whisper's options on ``toolkit serve`` (the decoding of ``toolkit transcribe``)."""

    beam_size: int = option(
        5, "Whisper beams at temperature 0 (as toolkit transcribe).", min=1, max=64
    )
    best_of: int = option(5, "Whisper samples per window at temperature > 0.", min=1, max=64)


SERVE_OPTIONS = ServeOptions
