"""Transcripts as files: txt, json, srt, vtt, tsv (the formats of openai-whisper's CLI).

Each writer turns a transcription result (``WhisperPipeline.transcribe``'s dict: ``text``,
``segments`` with ``start``/``end`` in seconds) into text; ``write_outputs`` writes the chosen
formats beside each other, each file atomically (a temporary sibling renamed into place), so an
interrupted run never leaves half a subtitle file. As openai-whisper's CLI does, an existing
regular file of the same name is replaced; a symbolic link, directory or device there is refused
before anything is decoded, and so is a name longer than the file system allows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import ToolkitError
from ...core.files import atomic_write_bytes, check_output_file, check_writable
from ...core.options import check_fields, option

FORMATS = ("txt", "json", "srt", "vtt", "tsv")


def check_formats(spec: str) -> list[str]:
    """``"srt,vtt"`` / ``"all"`` → the formats, or a one-line error naming the allowed ones."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise ToolkitError("--output-format is empty; use one of " + ", ".join(FORMATS)
                           + " or all")
    if "all" in names:
        return list(FORMATS)
    bad = [n for n in names if n not in FORMATS]
    if bad:
        raise ToolkitError(f"unknown --output-format {', '.join(bad)}; use one of "
                           + ", ".join(FORMATS) + " or all (comma-separated)")
    return list(dict.fromkeys(names))


def timestamp(seconds: float, marker: str = ".", always_hours: bool = False) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{marker}{ms:03d}"


@dataclass
class SubtitleOptions:
    """openai-whisper's subtitle options (``--max-line-width`` …); each needs word timestamps.

    Without both a line width and a line count, every segment is a subtitle of its own (at most
    ``max_words_per_line`` words each, a longer segment split); with both, words are laid out
    ``max_line_width`` characters a line, ``max_line_count`` lines a subtitle, and a pause over
    3 s starts a new one. ``highlight_words``: one cue per word, that word underlined."""

    max_line_width: int | None = option(
        None, "Subtitles: characters per line before a line break (needs --word-timestamps).",
        min=1, max=10_000)
    max_line_count: int | None = option(
        None, "Subtitles: lines per cue, with --max-line-width (needs --word-timestamps).",
        min=1, max=1000)
    max_words_per_line: int | None = option(
        None, "Subtitles: words per cue, without --max-line-width (needs --word-timestamps).",
        min=1, max=10_000)
    highlight_words: bool = option(
        False, "Subtitles: one cue per word, the word underlined (needs --word-timestamps).")

    def check(self, word_timestamps: bool) -> None:
        check_fields(self)
        for name in ("max_line_width", "max_line_count", "max_words_per_line",
                     "highlight_words"):
            if getattr(self, name) and not word_timestamps:
                raise ToolkitError(f"--{name.replace('_', '-')} lays subtitles out by word and "
                                   "needs --word-timestamps")

    @property
    def used(self) -> bool:
        return bool(self.max_line_width or self.max_line_count or self.max_words_per_line
                    or self.highlight_words)


def _lines(result: dict):
    for seg in result["segments"]:
        text = seg["text"].strip().replace("-->", "->")
        if text:
            yield seg, text


def _subtitles(result: dict, opts: SubtitleOptions):
    """Groups of words (dicts with ``word``, ``start``, ``end``; a ``word`` beginning with a
    newline starts a line), one group per subtitle."""
    preserve = opts.max_line_count is None or opts.max_line_width is None
    width = opts.max_line_width or 1000
    per_line = opts.max_words_per_line or 1000
    subtitle: list[dict] = []
    line_len, lines = 0, 1
    starts = [s["start"] for s in result["segments"] if s.get("words")]
    last = starts[0] if starts else 0.0
    for seg in result["segments"]:
        for i, original in enumerate(seg.get("words") or []):
            w = dict(original)
            w["word"] = w["word"].replace("-->", "->")
            chunk_start = i % per_line == 0
            long_pause = not preserve and w["start"] - last > 3.0
            has_room = line_len + len(w["word"]) <= width
            seg_break = chunk_start and bool(subtitle) and preserve
            if line_len > 0 and has_room and not long_pause and not seg_break:
                line_len += len(w["word"])
            else:
                w["word"] = w["word"].strip()
                if subtitle and ((opts.max_line_count is not None
                                  and (long_pause or lines >= opts.max_line_count))
                                 or seg_break):
                    yield subtitle
                    subtitle, lines = [], 1
                elif line_len > 0:
                    lines += 1
                    w["word"] = "\n" + w["word"]
                line_len = len(w["word"].strip())
            subtitle.append(w)
            last = w["start"]
    if subtitle:
        yield subtitle


def _cues(result: dict, opts: SubtitleOptions | None):
    """(start s, end s, text) of each cue: segments, or with subtitle options the words."""
    opts = opts or SubtitleOptions()
    if not opts.used:
        for seg, text in _lines(result):
            yield seg["start"], seg["end"], text
        return
    for sub in _subtitles(result, opts):
        text = "".join(w["word"] for w in sub)
        if not opts.highlight_words:
            yield sub[0]["start"], sub[-1]["end"], text
            continue
        last = sub[0]["start"]
        for i, w in enumerate(sub):
            if w["start"] > last:          # the gap before this word: the plain text
                yield last, w["start"], text
            yield w["start"], w["end"], "".join(
                re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", x["word"], flags=re.S) if j == i
                else x["word"] for j, x in enumerate(sub))
            last = w["end"]


def to_txt(result: dict, opts: SubtitleOptions | None = None) -> str:
    return "".join(f"{text}\n" for _, text in _lines(result))


def to_srt(result: dict, opts: SubtitleOptions | None = None) -> str:
    blocks = [f"{i}\n{timestamp(a, ',', True)} --> {timestamp(b, ',', True)}\n{text}\n"
              for i, (a, b, text) in enumerate(_cues(result, opts), 1)]
    return "\n".join(blocks)


def to_vtt(result: dict, opts: SubtitleOptions | None = None) -> str:
    blocks = [f"{timestamp(a)} --> {timestamp(b)}\n{text}\n" for a, b, text in _cues(result, opts)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_tsv(result: dict, opts: SubtitleOptions | None = None) -> str:
    rows = [f"{round(s['start'] * 1000)}\t{round(s['end'] * 1000)}\t{text.replace(chr(9), ' ')}"
            for s, text in _lines(result)]
    return "start\tend\ttext\n" + "".join(r + "\n" for r in rows)


def to_json(result: dict, opts: SubtitleOptions | None = None) -> str:
    return json.dumps(result, ensure_ascii=False, indent=1) + "\n"


WRITERS = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}


def plan_outputs(audio: list[Path], out_dir: Path, formats: list[str]) -> dict[Path, list[Path]]:
    """The files each input will write, checked before anything is decoded: the directory must
    be writable and two inputs may not write the same file."""
    out_dir = check_writable(out_dir, "--output-dir")
    seen: dict[Path, Path] = {}
    plan: dict[Path, list[Path]] = {}
    for path in audio:
        files = [out_dir / f"{Path(path).stem}.{fmt}" for fmt in formats]
        for f in files:
            check_output_file(f, "--output-dir")   # a regular file is replaced, nothing else
            if f in seen:
                raise ToolkitError(f"{path} and {seen[f]} would both write {f}; transcribe them "
                                   "into different --output-dir folders")
            seen[f] = Path(path)
        plan[Path(path)] = files
    return plan


def write_outputs(result: dict, files: list[Path], opts: SubtitleOptions | None = None) -> None:
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)   # made once there is something to write
        atomic_write_bytes(f, WRITERS[f.suffix[1:]](result, opts).encode("utf-8"))
