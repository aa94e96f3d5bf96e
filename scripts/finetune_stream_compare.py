"""Issue 28: the fine-tuning result of results/whisper-finetune.json (the in-memory trainer)
against the same command on the streamed trainer, scored both ways.

    toolkit train whisper --data ../shared/data/ljspeech-mini --eval-split 8 --steps 30 \\
        --batch-size 8 --eval-every 10 --out OUT          # under /usr/bin/time -v > LOG 2>&1
    python scripts/finetune_stream_compare.py OUT LOG --json results/whisper-finetune-stream.json

The recorded run was scored before the scorer became Whisper's normaliser + jiwer (c02615d,
issue 27); its figures are re-scored here from the transcripts it kept (before training and at
its best step), and the new run's transcripts are scored with both the current scorer and the
former one (``toolkit/bench/metrics.py`` of c02615d's parent, read from git), so each pair of
figures is compared under one scorer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LJ = ROOT.parent / "shared" / "data" / "ljspeech-mini"
OLD_SCORER = "c02615d^:toolkit/bench/metrics.py"


def old_scorer():
    src = subprocess.run(["git", "-C", str(ROOT), "show", OLD_SCORER], capture_output=True,
                         text=True, check=True).stdout
    f = Path(tempfile.mkdtemp()) / "old_metrics.py"
    f.write_text(src)
    spec = importlib.util.spec_from_file_location("old_metrics", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("log", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from toolkit.bench.metrics import scores
    from toolkit.models.whisper.data import load_labelled_folder

    old = old_scorer()
    refs = [u.text for u in load_labelled_folder(LJ)][-8:]

    def both(texts):
        new = scores(texts, refs, "en")
        return {"cer": round(new["cer"], 2), "wer": round(new["wer"], 2),
                "cer_former_scorer": round(old.corpus_cer(texts, refs), 2),
                "wer_former_scorer": round(old.corpus_wer(texts, refs), 2)}

    recorded = json.loads((ROOT / "results" / "whisper-finetune.json").read_text())["runs"]
    plain = recorded["plain"]
    evals = json.loads((a.out / "eval.json").read_text())
    steps = [json.loads(x) for x in (a.out / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in steps if "loss" in e]
    log = a.log.read_text()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", log)
    best = min(evals, key=lambda e: (e["cer"], e["step"]))
    report = {
        "what": "issue 28: results/whisper-finetune.json's plain run (in-memory trainer, "
                "before streaming) against the same command on the streamed trainer; same data "
                "(24 LJ clips train, the last 8 evaluate), same 30 steps, batch 8, eval every 10",
        "command": plain["command"],
        "compare": "python scripts/finetune_stream_compare.py OUT LOG --json "
                   "results/whisper-finetune-stream.json",
        "scorers": {"cer/wer": "the current one: Whisper's EnglishTextNormalizer + jiwer "
                               "(toolkit/bench/metrics.py)",
                    "*_former_scorer": f"the one the recorded run was scored with ({OLD_SCORER}"
                                       "); it gives the recorded figures back exactly"},
        "recorded_in_memory_run": {
            "step_0": both(plain["texts_before"]),
            f"step_{plain['best_step']} (its best, the only other step whose transcripts "
            "were kept)": both(plain["texts_best"]),
            "recorded_figures (former scorer)": {
                "cer": [round(e["cer"], 2) for e in plain["evals"]],
                "wer": [round(e["wer"], 2) for e in plain["evals"]],
                "steps": [e["step"] for e in plain["evals"]]},
            "loss_first": plain["loss_first"], "loss_last": plain["loss_last"],
            "seconds_per_step_median": plain["seconds_per_step_median"],
            "peak_rss_mb": plain["peak_rss_mb"]},
        "streamed_run": {
            "evals": [{"step": e["step"], **both(e["texts"]),
                       "train_loss": e["train_loss"]} for e in evals],
            "best_step": best["step"],
            "loss_first": round(statistics.mean(e["loss"] for e in steps[:6]), 5),
            "loss_last": round(statistics.mean(e["loss"] for e in steps[-6:]), 5),
            "seconds_per_step_median": statistics.median(e["seconds"] for e in steps),
            "peak_rss_mb": round(int(rss.group(1)) / 1e3, 1) if rss else None,
            "wall_clock": wall.group(1) if wall else None,
            "texts_before": evals[0]["texts"], "texts_best": best["texts"]},
    }
    print(json.dumps(report, indent=1))
    if a.json:
        a.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
