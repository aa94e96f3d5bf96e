"""A recording of speech with long stretches of silence, noise and music-like tones, built
from the shared clips (``speech_with_gaps``): where Whisper, left alone, writes text nobody
said, and what ``--vad-filter`` is for; and LJ clips between pauses (``clips_with_pauses``),
several VAD chunks for ``--batch-size``. Used by tests/runtime/test_whisper_vad.py,
tests/support/vad_side_by_side.py and scripts/whisper_batched.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from toolkit.models.whisper.audio import SAMPLE_RATE, load_audio
from toolkit.models.whisper.data import load_folder

JFK = ("And so my fellow Americans, ask not what your country can do for you, ask what you "
       "can do for your country.")


@dataclass
class Recording:
    path: Path
    duration: float
    speech: list[tuple[float, float, str]]      # (start s, end s, reference text)
    other: list[tuple[float, float, str]]       # (start s, end s, what it is)

    @property
    def reference(self) -> str:
        return " ".join(t for _, _, t in self.speech)

    @property
    def speech_s(self) -> float:
        return sum(b - a for a, b, _ in self.speech)


def noise_floor(seconds: float, rng, level: float = 0.002) -> np.ndarray:
    """A quiet room: white noise at about −54 dBFS."""
    return (level * rng.standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)


def pink_noise(seconds: float, rng, level: float = 0.05) -> np.ndarray:
    """Fan or traffic noise: 1/f noise (white noise shaped in the frequency domain)."""
    n = round(seconds * SAMPLE_RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def tones(seconds: float, rng, level: float = 0.15) -> np.ndarray:
    """Music-like: a melody of notes (0.25–0.6 s) with harmonics, an attack and a decay, over
    a soft chord."""
    n = round(seconds * SAMPLE_RATE)
    out = np.zeros(n, np.float32)
    t0 = 0
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
    while t0 < n:
        dur = int(rng.uniform(0.25, 0.6) * SAMPLE_RATE)
        t = np.arange(min(dur, n - t0)) / SAMPLE_RATE
        f = rng.choice(scale) * rng.choice([1, 2])
        note = sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2, 3, 4))
        env = np.minimum(1, t / 0.02) * np.exp(-3 * t)
        out[t0:t0 + len(t)] += (note * env).astype(np.float32)
        t0 += dur
    t = np.arange(n) / SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 138.6, 164.8)) / 3
    out += 0.3 * chord.astype(np.float32)
    return (level * out / np.max(np.abs(out))).astype(np.float32)


def drums(seconds: float, rng, level: float = 0.3, beat_s: float = 0.5) -> np.ndarray:
    """A beat: a noise burst with a 25-ms decay every ``beat_s``."""
    n = round(seconds * SAMPLE_RATE)
    out = np.zeros(n, np.float32)
    hit = rng.standard_normal(3000).astype(np.float32) * np.exp(-np.arange(3000) / 400)
    for i in range(0, n, round(beat_s * SAMPLE_RATE)):
        m = min(n - i, len(hit))
        out[i:i + m] += hit[:m]
    return (level * out / np.max(np.abs(out))).astype(np.float32)


def speech_with_gaps(shared_data: Path, out: Path, seed: int = 0) -> Recording:
    """About 150 s: jfk.flac twice and two LJ Speech clips (41 s of speech) between 15–30-s
    stretches of a quiet room, music (tones and a beat), pink noise, tones and digital
    silence — the music and tones after speech are where tiny.en writes "Thank you"."""
    rng = np.random.default_rng(seed)
    jfk = load_audio(shared_data / "audio" / "jfk.flac")
    lj = load_folder(shared_data / "ljspeech-mini")
    parts: list[tuple[np.ndarray, str | None, str]] = [
        (noise_floor(15, rng), None, "quiet room"),
        (jfk, JFK, "speech"),
        (tones(30, rng, 0.3) + drums(30, rng, 0.3), None, "music (tones and a beat)"),
        (load_audio(lj[0].path), lj[0].text, "speech"),
        (pink_noise(20, rng, 0.1), None, "pink noise"),
        (load_audio(lj[2].path), lj[2].text, "speech"),
        (tones(30, rng, 0.4), None, "music-like tones"),
        (jfk, JFK, "speech"),
        (np.zeros(15 * SAMPLE_RATE, np.float32), None, "digital silence"),
    ]
    speech, other, t = [], [], 0.0
    for audio, text, what in parts:
        span = (t, t + len(audio) / SAMPLE_RATE)
        (speech if text is not None else other).append((*span, text if text else what))
        t = span[1]
    audio = np.concatenate([a for a, _, _ in parts])
    sf.write(out, audio, SAMPLE_RATE)
    return Recording(out, t, speech, other)


def words_outside_speech(segments: list[dict], rec: Recording, tol: float = 0.5) -> list[str]:
    """Words of the segments that overlap no speech of ``rec`` (± ``tol`` s): text written
    over silence, noise or music."""
    out = []
    for s in segments:
        if not any(s["end"] > a - tol and s["start"] < b + tol for a, b, _ in rec.speech):
            out += s["text"].split()
    return out


def clips_with_pauses(shared_data: Path, out: Path, clips: int = 8,
                      pauses_s: tuple[float, ...] = (3.0, 4.5, 6.0), seed: int = 0) -> Recording:
    """The first ``clips`` LJ Speech clips, each followed by a quiet-room pause of 3, 4.5 or
    6 s in turn (longer than the VAD's 2 s of silence and twice its padding, so every clip is
    a stretch of speech of its own): several VAD chunks of up to 30 s, for ``--batch-size``."""
    rng = np.random.default_rng(seed)
    parts, speech, other, t = [], [], [], 0.0
    for k, utt in enumerate(load_folder(shared_data / "ljspeech-mini")[:clips]):
        audio = load_audio(utt.path)
        pause = noise_floor(pauses_s[k % len(pauses_s)], rng)
        speech.append((t, t + len(audio) / SAMPLE_RATE, utt.text))
        t += len(audio) / SAMPLE_RATE
        other.append((t, t + len(pause) / SAMPLE_RATE, "quiet room"))
        t += len(pause) / SAMPLE_RATE
        parts += [audio, pause]
    sf.write(out, np.concatenate(parts), SAMPLE_RATE)
    return Recording(out, t, speech, other)
