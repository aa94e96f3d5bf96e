"""Speech data folders: LJSpeech layout (metadata.csv + wavs/) or a plain folder of audio; for
training also Hugging Face audiofolder and AIHub (audio + JSON transcript) layouts."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ...core.errors import ToolkitError

AUDIO_EXT = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".wma")


@dataclass
class Utterance:
    path: Path
    text: str | None      # reference transcript when the folder has one


def bundled_dir() -> Path:
    return Path(str(resources.files("toolkit.assets").joinpath("speech")))


def shared_ljspeech() -> Path | None:
    """``../shared/data/ljspeech-mini`` next to the working directory or the source tree."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        p = base.parent / "shared" / "data" / "ljspeech-mini"
        if (p / "metadata.csv").is_file():
            return p
    return None


def load_folder(folder: str | Path, limit: int | None = None) -> list[Utterance]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ToolkitError(f"data folder {folder} does not exist")
    meta = folder / "metadata.csv"
    items: list[Utterance] = []
    if meta.is_file():
        wav_dir = folder / "wavs"
        try:
            rows = list(csv.reader(meta.read_text(encoding="utf-8").splitlines(), delimiter="|",
                                   quoting=csv.QUOTE_NONE))
        except UnicodeDecodeError as exc:
            raise ToolkitError(f"{meta} is not UTF-8 text (byte {exc.start}); save it as "
                               "UTF-8") from None
        for row in rows:
            if not row or not row[0].strip():
                continue
            uid = row[0].strip()
            text = (row[2] if len(row) > 2 and row[2].strip() else row[1] if len(row) > 1
                    else None)
            cands = [wav_dir / f"{uid}{ext}" for ext in AUDIO_EXT] + \
                    [folder / f"{uid}{ext}" for ext in AUDIO_EXT]
            path = next((c for c in cands if c.is_file()), None)
            if path is None:
                raise ToolkitError(f"{meta} lists {uid} but {wav_dir / (uid + '.wav')} does "
                                   "not exist; fix metadata.csv or add the file")
            items.append(Utterance(path, text))
    else:
        items = [Utterance(p, None) for p in sorted(folder.iterdir())
                 if p.suffix.lower() in AUDIO_EXT and p.is_file()]
    if not items:
        raise ToolkitError(f"data folder {folder} holds no audio (expected metadata.csv + wavs/ "
                           f"or files ending in {', '.join(AUDIO_EXT[:4])}, ...)")
    return items[:limit] if limit else items


def default_bench_data() -> list[Utterance]:
    return load_folder(bundled_dir())


def default_calibration_files(calib_data: str | Path | None, limit: int = 8) -> list[Path]:
    if calib_data is not None:
        return [u.path for u in load_folder(calib_data, limit)]
    shared = shared_ljspeech()
    folder = shared if shared is not None else bundled_dir()
    return [u.path for u in load_folder(folder, limit)]


# -- training data ----------------------------------------------------------------------------

TEXT_COLUMNS = ("transcription", "sentence", "text", "transcript")


def load_labelled_folder(folder: str | Path) -> list[Utterance]:
    """Audio with transcripts for training, in any of three layouts:

    - LJSpeech: ``metadata.csv`` (``id|text`` or ``id|raw|normalized``) + ``wavs/``;
    - Hugging Face "audiofolder": ``metadata.csv`` (comma-separated, header) with a
      ``file_name`` column and ``transcription``, ``sentence`` or ``text``;
    - AIHub: audio files with a JSON transcript each (``{"fileName": ..., "script": {"value":
      ...}}``), anywhere under the folder.

    Audio without a transcript is an error naming how many and which (a training set silently
    smaller than the user thinks is worse than a stop).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ToolkitError(f"data folder {folder} does not exist")
    meta = folder / "metadata.csv"
    if meta.is_file():
        try:
            first = meta.read_text(encoding="utf-8-sig").splitlines()[:1]
        except UnicodeDecodeError as exc:
            raise ToolkitError(f"{meta} is not UTF-8 text (byte {exc.start}); save it as "
                               "UTF-8") from None
        if first and "file_name" in [c.strip() for c in first[0].split(",")]:
            items = _audiofolder(folder, meta)
        else:
            items = load_folder(folder)
    else:
        items = _aihub(folder)
    missing = [u.path.name for u in items if not (u.text or "").strip()]
    if missing:
        raise ToolkitError(f"{len(missing)} of {len(items)} audio files in {folder} have no "
                           f"transcript ({', '.join(missing[:5])}"
                           f"{', …' if len(missing) > 5 else ''}); add them or remove the files")
    if not items:
        raise ToolkitError(f"data folder {folder} holds no labelled audio (expected "
                           "metadata.csv + wavs/, an audiofolder metadata.csv with file_name, "
                           "or audio files with AIHub JSON transcripts)")
    return items


def _audiofolder(folder: Path, meta: Path) -> list[Utterance]:
    rows = list(csv.DictReader(meta.read_text(encoding="utf-8-sig").splitlines()))
    if not rows:
        return []
    column = next((c for c in TEXT_COLUMNS if c in rows[0]), None)
    if column is None:
        raise ToolkitError(f"{meta} has no transcript column; name one of "
                           f"{', '.join(TEXT_COLUMNS)} (beside file_name)")
    items = []
    for row in rows:
        name = (row.get("file_name") or "").strip()
        if not name:
            continue
        path = (folder / name)
        if not path.resolve().is_relative_to(folder.resolve()):
            raise ToolkitError(f"{meta} names {name}, outside {folder}; file names must be "
                               "relative paths inside the data folder")
        if not path.is_file():
            raise ToolkitError(f"{meta} lists {name} but {path} does not exist; fix "
                               "metadata.csv or add the file")
        items.append(Utterance(path, row.get(column)))
    return items


def _aihub(folder: Path) -> list[Utterance]:
    """Audio files and JSON transcripts (``fileName`` + ``script.value``) under ``folder``. A
    transcript belongs to the audio file of that name in its own folder; one elsewhere is
    matched by name only when the name is unique (speaker folders often reuse names)."""
    audio = [p for p in sorted(folder.rglob("*"))
             if p.suffix.lower() in AUDIO_EXT and p.is_file()]
    by_name: dict[str, list[Path]] = {}
    for p in audio:
        by_name.setdefault(p.name, []).append(p)
    texts: dict[Path, str] = {}
    for js in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(js.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ToolkitError(f"{js} is not a valid JSON transcript ({exc}); fix or remove "
                               "it") from None
        if not isinstance(data, dict) or "fileName" not in data:
            continue
        script = data.get("script")
        value = script.get("value") if isinstance(script, dict) else None
        name = Path(str(data["fileName"])).name
        target = js.parent / name
        if not target.is_file() and len(by_name.get(name, [])) == 1:
            target = by_name[name][0]
        if target in texts:
            raise ToolkitError(f"two transcripts name {target} ({js} is the second); keep one")
        texts[target] = value or ""
    return [Utterance(p, texts.get(p)) for p in audio]
