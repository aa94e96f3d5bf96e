"""``toolkit synthesize``: text → mel (.npy) → waveform (.wav, Griffin-Lim)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from rich.markup import escape

from ...core.errors import ToolkitError
from ...core.files import check_writable
from ...core.progress import console
from ...models.gradtts.audio import VOCODER, griffin_lim
from ...models.gradtts.model import AUDIO
from ...models.gradtts.sampler import MAX_TEXT_CHARS, check_steps
from ...models.gradtts.text import text_to_ids
from .pipeline import open_pipeline


def synthesize_to_files(text: str, out: str | Path, artifact=None, checkpoint=None, preset=None,
                        backend: str = "torch", steps: int = 10, temperature: float = 1.5,
                        length_scale: float = 1.0, seed: int = 0) -> dict:
    check_steps(steps)
    if len(text) > MAX_TEXT_CHARS:  # before loading anything
        raise ToolkitError(f"the text has {len(text)} characters; one utterance takes at most "
                           f"{MAX_TEXT_CHARS} — split it into sentences and synthesize each")
    text_to_ids(text)  # fail on empty / unspeakable text before loading anything
    out = Path(out)
    if out.suffix.lower() != ".wav":
        raise ToolkitError(f"--out must name a .wav file (got {out.name}); the mel is written "
                           "beside it as .npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    check_writable(out.parent)
    pipe = open_pipeline(artifact=artifact, checkpoint=checkpoint, preset=preset, backend=backend,
                         seed=seed)
    syn = pipe.synthesize(text, steps=steps, temperature=temperature, length_scale=length_scale,
                          seed=seed)
    pipe.close()
    if not np.isfinite(syn.mel).all():
        raise ToolkitError(f"the acoustic model ({pipe.backend} {pipe.precision}) produced NaN or "
                           "infinite mel values; nothing was written — try an fp32 artifact or "
                           "the torch backend")
    mel_path = out.with_suffix(".npy")
    np.save(mel_path, syn.mel)
    wav = griffin_lim(syn.mel)
    sf.write(str(out), wav, AUDIO["sample_rate"])
    acoustic_ms = syn.encoder_ms + syn.unet_ms
    console.print(f"[green]✓[/] {escape(str(out))} ({syn.audio_seconds:.2f} s, {syn.frames} frames) and "
                  f"{escape(str(mel_path))}; acoustic model: {pipe.backend} {pipe.precision}, {steps} steps, "
                  f"{acoustic_ms:.0f} ms (RTF {acoustic_ms / 1e3 / syn.audio_seconds:.3f}); "
                  f"vocoder: {VOCODER} (no neural vocoder weights available)")
    if pipe.random_init:
        console.print("[yellow]note:[/] random-initialised weights (preset) — the audio is noise; "
                      "train a checkpoint with `toolkit train gradtts` for speech")
    return {"wav": str(out), "mel": str(mel_path), "frames": syn.frames,
            "backend": pipe.backend, "vocoder": VOCODER}
