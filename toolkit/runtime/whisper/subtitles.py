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
from pathlib import Path

from ...core.errors import ToolkitError
from ...core.files import atomic_write_bytes, check_output_file, check_writable

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


def _lines(result: dict):
    for seg in result["segments"]:
        text = seg["text"].strip().replace("-->", "->")
        if text:
            yield seg, text


def to_txt(result: dict) -> str:
    return "".join(f"{text}\n" for _, text in _lines(result))


def to_srt(result: dict) -> str:
    blocks = [f"{i}\n{timestamp(s['start'], ',', True)} --> {timestamp(s['end'], ',', True)}\n"
              f"{text}\n" for i, (s, text) in enumerate(_lines(result), 1)]
    return "\n".join(blocks)


def to_vtt(result: dict) -> str:
    blocks = [f"{timestamp(s['start'])} --> {timestamp(s['end'])}\n{text}\n"
              for s, text in _lines(result)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_tsv(result: dict) -> str:
    rows = [f"{round(s['start'] * 1000)}\t{round(s['end'] * 1000)}\t{text.replace(chr(9), ' ')}"
            for s, text in _lines(result)]
    return "start\tend\ttext\n" + "".join(r + "\n" for r in rows)


def to_json(result: dict) -> str:
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


def write_outputs(result: dict, files: list[Path]) -> None:
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)   # made once there is something to write
        atomic_write_bytes(f, WRITERS[f.suffix[1:]](result).encode("utf-8"))
