"""Old vs new scoring of the same Whisper bench rows, side by side.

    .venv/bin/python tests/support/rescore_whisper.py RECORDS.json [...] [--data DIR]
        [--out results/whisper-scoring-old-vs-new.json]

Every row of a ``toolkit bench --model whisper`` record file keeps its transcripts
(``texts``); they are scored against the data's references three ways:

- ``recorded``: the figures in the file (written by the bench that made it);
- ``old rule``: the rule the bench used before it scored like the field — NFKC, lower case,
  every punctuation character a space — through jiwer; on files written before the change it
  reproduces ``recorded`` exactly (the hand-written edit distance and jiwer agree), so the only
  difference left is the normalisation;
- ``new``: ``toolkit.bench.metrics.scores`` — Whisper's normaliser, jiwer (and raw figures).

References: ``--data`` (an LJSpeech-style folder; default: the bundled clips), in the order
the bench read them; a long-form row's reference is the clips' transcripts joined.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path

import jiwer

from toolkit.bench.metrics import scores
from toolkit.models.whisper.data import default_bench_data, load_folder


def old_rule(text: str) -> str:
    """The bench's normalisation before Whisper's (kept here only to show the difference)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def old_scores(hyps: list[str], refs: list[str]) -> dict:
    h, r = [old_rule(t) for t in hyps], [old_rule(t) for t in refs]
    words = jiwer.process_words(r, h)
    chars = jiwer.process_characters(r, h)
    n = words.hits + words.substitutions + words.deletions
    c = chars.hits + chars.substitutions + chars.deletions
    return {"wer": 100.0 * (n - words.hits + words.insertions) / n,
            "cer": 100.0 * (c - chars.hits + chars.insertions) / c,
            "deleted": words.deletions, "inserted": words.insertions}


def references(data: str | None, rows: int, long_form: bool) -> list[str]:
    utts = load_folder(data) if data else default_bench_data()
    texts = [u.text for u in utts]
    if long_form:
        return [" ".join(texts)]
    if rows > len(texts):
        raise SystemExit(f"{rows} transcripts but {len(texts)} references in {data}")
    return texts[:rows]


def rescore(path: Path, data: str | None) -> list[dict]:
    out = []
    for rec in json.loads(path.read_text()):
        texts = rec.get("texts")
        if not texts or rec.get("random_init"):
            continue
        long_form = rec.get("mode") == "long-form"
        refs = references(data, len(texts), long_form)
        old, new = old_scores(texts, refs), scores(texts, refs, "en")
        out.append({
            "file": str(path), "mode": rec.get("mode"), "shape": rec.get("shape"),
            "backend": rec["backend"], "precision": rec["precision"],
            "beam_size": rec.get("beam_size"),
            "recorded_cer": rec.get("cer_vs_reference"), "recorded_wer": rec.get("wer_vs_reference"),
            "old_cer": old["cer"], "old_wer": old["wer"],
            "old_dropped": old["deleted"], "old_inserted": old["inserted"],
            "new_cer": new["cer"], "new_wer": new["wer"],
            "new_dropped": new["deleted"], "new_inserted": new["inserted"],
            "new_ref_words": new["ref_words"],
            "raw_cer": new["cer_raw"], "raw_wer": new["wer_raw"], "normalizer": new["normalizer"],
        })
    return out


def _f(v, fmt=".2f") -> str:
    return "—" if v is None else format(v, fmt)


def table(rows: list[dict]) -> str:
    head = ("| file | mode | beam | backend | CER recorded | CER old rule | CER new | CER raw "
            "| WER recorded | WER old rule | WER new | WER raw | dropped old→new "
            "| inserted old→new |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {Path(r['file']).name} | {r['mode']} | {r['beam_size']} | "
            f"{r['backend']} {r['precision']} | {_f(r['recorded_cer'])} | {_f(r['old_cer'])} | "
            f"{_f(r['new_cer'])} | {_f(r['raw_cer'])} | {_f(r['recorded_wer'])} | "
            f"{_f(r['old_wer'])} | {_f(r['new_wer'])} | {_f(r['raw_wer'])} | "
            f"{r['old_dropped']}→{r['new_dropped']} | {r['old_inserted']}→{r['new_inserted']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="+", type=Path)
    ap.add_argument("--data", help="the data the bench ran on (default: the bundled clips)")
    ap.add_argument("--out", type=Path, help="write the rows as JSON (and a .md table) here")
    a = ap.parse_args(argv)
    rows = [r for p in a.records for r in rescore(p, a.data)]
    text = table(rows)
    print(text)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1) + "\n")
        a.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
