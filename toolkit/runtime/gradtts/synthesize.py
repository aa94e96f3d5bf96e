"""``toolkit synthesize``: text → mel (.npy) → waveform (.wav, Griffin-Lim).

``check_request`` runs before any model is loaded (text, output names); ``write_synthesis``
synthesises with an open pipeline and writes both files atomically (a temporary sibling renamed
into place: an interrupted run leaves neither half-written)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ...core.errors import ToolkitError
from ...core.files import atomic_write_bytes, check_output_file, check_writable
from ...models.gradtts.constants import AUDIO
from ...models.gradtts.sampler import MAX_TEXT_CHARS, check_steps
from ...models.gradtts.text import text_to_ids
from ...models.gradtts.vocoder import VOCODER, griffin_lim


@dataclass
class SynthesisOptions:
    steps: int = 10
    temperature: float = 1.5
    length_scale: float = 1.0
    seed: int = 0


def check_request(text: str, out: str | Path, options: SynthesisOptions) -> tuple[Path, Path]:
    """(wav path, mel path), or a one-line error — before anything is loaded."""
    check_steps(options.steps)
    if len(text) > MAX_TEXT_CHARS:
        raise ToolkitError(f"the text has {len(text)} characters; one utterance takes at most "
                           f"{MAX_TEXT_CHARS} — split it into sentences and synthesize each")
    text_to_ids(text)  # empty / unspeakable text
    out = Path(out)
    if out.suffix.lower() != ".wav":
        raise ToolkitError(f"--out must name a .wav file (got {out.name}); the mel is written "
                           "beside it as .npy")
    check_writable(out.parent, "--out")
    mel = out.with_suffix(".npy")
    return check_output_file(out), check_output_file(mel)


def write_synthesis(pipe, text: str, wav_path: Path, mel_path: Path,
                    options: SynthesisOptions) -> dict:
    syn = pipe.synthesize(text, steps=options.steps, temperature=options.temperature,
                          length_scale=options.length_scale, seed=options.seed)
    if not np.isfinite(syn.mel).all():
        raise ToolkitError(f"the acoustic model ({pipe.backend} {pipe.precision}) produced NaN or "
                           "infinite mel values; nothing was written — try an fp32 artifact or "
                           "the torch backend")
    wav = griffin_lim(syn.mel)
    wav_path.parent.mkdir(parents=True, exist_ok=True)   # made once there is something to write
    buf = io.BytesIO()
    np.save(buf, syn.mel)
    atomic_write_bytes(mel_path, buf.getvalue())
    buf = io.BytesIO()
    sf.write(buf, wav, AUDIO["sample_rate"], format="WAV", subtype="PCM_16")
    atomic_write_bytes(wav_path, buf.getvalue())
    acoustic_ms = syn.encoder_ms + syn.unet_ms
    return {"wav": str(wav_path), "mel": str(mel_path), "frames": syn.frames,
            "seconds": syn.audio_seconds, "acoustic_ms": acoustic_ms,
            "rtf": acoustic_ms / 1e3 / syn.audio_seconds, "backend": pipe.backend,
            "precision": pipe.precision, "steps": options.steps, "vocoder": VOCODER}
