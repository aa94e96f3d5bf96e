"""Batched long-form with the VAD (issue 27): the speech's chunks decoded several at a time
(``--vad-filter --batch-size N``) against the sequential path, on this machine.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/whisper_batched.py --runs 3 \
        --out results/whisper-batched.json        # also writes results/whisper-batched.md

The recording: the 32 LJ Speech clips of ../shared/data/ljspeech-mini, each followed by a
quiet-room pause of 3, 4.5 or 6 s in turn (``tests/support/recordings.py:
clips_with_pauses``; every clip a stretch of speech of its own), its reference the clips'
texts joined. Rows, run ``--runs`` times after a warm-up, the rows' runs interleaved so that
the machine's load hits them alike: ``--vad-filter`` with the speech joined and decoded
window after window (``--batch-size 1``, the default); the same chunks as the batched rows
decoded one after the other (the cost of chunking alone); ``--batch-size 4`` and ``8``.
Decoding: the toolkit's defaults (beam 5, fallback, previous text within a chunk; or
``--beam-size``) on the default model (tiny.en, onnxruntime fp32) or ``--artifact``.
Figures: median wall time (VAD, log-mel, encoder, decoder; no word timestamps), its ratio to
the sequential row overall and per round, median CPU seconds (``time.process_time``: with
one onnxruntime thread they move far less with a shared machine's load than wall time) and
their ratio, windows encoded, decoder steps, CER/WER (Whisper-normalised, jiwer:
``toolkit/bench/metrics.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))     # support.recordings

from support.recordings import clips_with_pauses  # noqa: E402
from toolkit import registry  # noqa: E402
from toolkit.bench.metrics import scores  # noqa: E402
from toolkit.core.hardware import environment  # noqa: E402
from toolkit.models.whisper.audio import load_audio  # noqa: E402
from toolkit.runtime.whisper.longform import TranscribeOptions  # noqa: E402
from toolkit.runtime.whisper.vad import detect_speech, transcribe_chunks  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
# (label, batch size, chunked): batch 1 unchunked is the joined sequential path
ROWS = (("sequential (speech joined)", 1, False), ("chunks one at a time", 1, True),
        ("--batch-size 4", 4, True), ("--batch-size 8", 8, True))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_row(pipe, audio, opts: TranscribeOptions, batch: int, chunked: bool):
    t0, c0 = time.perf_counter(), time.process_time()
    if chunked and batch == 1:
        res = transcribe_chunks(pipe, audio, detect_speech(audio, opts), opts, 1)
    else:
        res = pipe.transcribe_audio(audio, replace(opts, batch_size=batch))
    return time.perf_counter() - t0, res, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--artifact", type=Path, help="default: the default model (tiny.en fp32)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per session")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the rows as JSON (and a .md table) here")
    a = ap.parse_args(argv)
    load_before = uptime()
    pipe = registry.get("whisper").open_pipeline(artifact=a.artifact, backend="ort",
                                                 threads=a.threads)
    opts = TranscribeOptions(vad_filter=True, beam_size=a.beam_size)
    with tempfile.TemporaryDirectory() as tmp:
        rec = clips_with_pauses(DATA, Path(tmp) / "paused.wav", clips=a.clips)
        audio = load_audio(rec.path)
    pipe.transcribe_audio(load_audio(DATA / "audio" / "jfk.flac"))        # warm-up
    got: dict[str, list] = {r[0]: [] for r in ROWS}
    for _ in range(a.runs):                      # interleaved: drift in the load hits all rows
        for label, batch, chunked in ROWS:
            got[label].append(run_row(pipe, audio, opts, batch, chunked))
    load_after = uptime()
    rows = []
    base = statistics.median(g[0] for g in got[ROWS[0][0]])
    base_cpu = statistics.median(g[2] for g in got[ROWS[0][0]])
    for label, batch, chunked in ROWS:
        seconds = [g[0] for g in got[label]]
        cpu = [g[2] for g in got[label]]
        res = got[label][-1][1]
        sc = scores([res.text], [rec.reference])
        rows.append({"row": label, "batch_size": batch, "chunked": chunked,
                     "seconds_median": round(statistics.median(seconds), 3),
                     "seconds": [round(s, 3) for s in seconds],
                     "speed_vs_sequential": round(base / statistics.median(seconds), 3),
                     "cpu_seconds_median": round(statistics.median(cpu), 3),
                     "cpu_seconds": [round(c, 3) for c in cpu],
                     "cpu_vs_sequential": round(base_cpu / statistics.median(cpu), 3),
                     "per_round_speed": [round(b[0] / g[0], 3) for b, g in
                                         zip(got[ROWS[0][0]], got[label])],
                     "windows": res.windows, "decoder_steps": len(res.step_ms),
                     "chunks": res.vad.get("chunks"), "cer": sc["cer"], "wer": sc["wer"],
                     "inserted": sc["inserted"], "deleted": sc["deleted"],
                     "same_text_as_chunks_one_at_a_time": None})
    one = got[ROWS[1][0]][-1][1]
    for row, (label, _, chunked) in zip(rows, ROWS):
        if chunked:
            res = got[label][-1][1]
            row["same_text_as_chunks_one_at_a_time"] = (
                [(s.start, s.end, s.text) for s in res.segments]
                == [(s.start, s.end, s.text) for s in one.segments])
    env = environment(a.threads)
    head = [f"recording: {rec.duration:.1f} s, {len(rec.speech)} LJ clips, speech "
            f"{rec.speech_s:.1f} s; VAD kept {one.vad['speech_s']:.1f} s in "
            f"{one.vad['chunks']} chunks of ≤ 30 s",
            f"model: {a.artifact or 'tiny.en (default), onnxruntime fp32'}; beam {a.beam_size}; "
            f"{a.threads} onnxruntime thread(s) per session; {a.runs} interleaved runs",
            f"cpu: {env['cpu']} ({env['cpu_cores']} cores)",
            f"load before: {load_before}", f"load after: {load_after}", "",
            "| row | wall s (median) | × sequential | × per round | CPU s (median) "
            "| × sequential (CPU) | windows | decoder steps (summed over chunks) | CER % | WER % "
            "| same segments as chunks one at a time |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = {None: "—", True: "yes", False: "no"}[r["same_text_as_chunks_one_at_a_time"]]
        rounds = ", ".join(f"{x:.2f}" for x in r["per_round_speed"])
        head.append(f"| {r['row']} | {r['seconds_median']:.2f} | {r['speed_vs_sequential']:.2f}× "
                    f"| {rounds} | {r['cpu_seconds_median']:.2f} | {r['cpu_vs_sequential']:.2f}× "
                    f"| {r['windows']} | {r['decoder_steps']} | {r['cer']:.2f} | {r['wer']:.2f} "
                    f"| {same} |")
    text = "\n".join(head)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"rows": rows, "environment": env, "threads": a.threads,
                                     "load_before": load_before, "load_after": load_after,
                                     "recording_s": rec.duration, "speech_s": rec.speech_s,
                                     "clips": len(rec.speech)}, indent=1) + "\n")
        a.out.with_suffix(".md").write_text(
            "# Batched long-form with the VAD (`--vad-filter --batch-size N`)\n\n"
            "`OMP_NUM_THREADS=1 .venv/bin/python scripts/whisper_batched.py --runs "
            f"{a.runs} --out {a.out}`\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
