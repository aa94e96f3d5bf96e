"""Speech data folders: LJSpeech layout (metadata.csv + wavs/) or a plain folder of audio."""

from __future__ import annotations

import csv
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
