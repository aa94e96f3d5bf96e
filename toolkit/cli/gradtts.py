"""Grad-TTS's own command: ``toolkit synthesize``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .. import registry
from ..core.options import option
from ..runtime.gradtts.synthesize import SynthesisOptions, check_request, write_synthesis
from .base import Artifact, Backend, Checkpoint, Preset, note, one_line_errors, out
from .options import number


@one_line_errors
def synthesize(
    text: Annotated[str, typer.Argument(help="Text to speak (characters outside a-z and basic "
                                             "punctuation are dropped).")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help=(
        "Output .wav (the mel is written beside it as .npy); existing regular files of those "
        "names are replaced."))],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Backend = "torch",
    steps: Annotated[int, number("--steps", "Reverse-diffusion (ODE) steps.", 1, 1000)] = 10,
    temperature: Annotated[float, number("--temperature", "Prior temperature τ: start at "
                                         "μ + ε/τ.", 0.01, 100, integer=False)] = 1.5,
    length_scale: Annotated[float, number("--length-scale", "Speaking-rate factor on the "
                                          "durations (>1 slower).", 0.1, 10,
                                          integer=False)] = 1.0,
    seed: Annotated[int, number("--seed", "Seed of the noise ε (and of preset weights).", 0,
                                2**32 - 1)] = 0,
):
    """Text → mel (Grad-TTS, any backend) → waveform (Griffin-Lim)."""
    options = SynthesisOptions(steps=steps, temperature=temperature, length_scale=length_scale,
                               seed=seed)
    wav, mel = check_request(text, out_file, options)       # before anything is loaded
    pipe = registry.get("gradtts").open_pipeline(artifact=artifact, checkpoint=checkpoint,
                                                 preset=preset, backend=backend, seed=seed)
    try:
        r = write_synthesis(pipe, text, wav, mel, options)
    finally:
        pipe.close()
    out.print(f"[green]✓[/] {escape(r['wav'])} ({r['seconds']:.2f} s, {r['frames']} frames) and "
              f"{escape(r['mel'])}; acoustic model: {r['backend']} {r['precision']}, {steps} "
              f"steps, {r['acoustic_ms']:.0f} ms (RTF {r['rtf']:.3f}); vocoder: {r['vocoder']} "
              "(no neural vocoder weights available)", soft_wrap=True)
    if pipe.random_init:
        note("random-initialised weights (preset) — the audio is noise; train a checkpoint "
             "with `toolkit train gradtts` for speech")


@dataclass
class ServeOptions:
    """Grad-TTS's options on ``toolkit serve``."""

    tts_steps: int = option(10, "Grad-TTS ODE steps per request.", min=1, max=1000)


SERVE_OPTIONS = ServeOptions
