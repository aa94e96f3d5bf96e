"""LJSpeech-style folders: ``metadata.csv`` (``id|text|normalized_text``) + ``wavs/<id>.wav``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...core.errors import ToolkitError
from ...core.progress import track
from .audio import load_wav, mel_spectrogram
from .text import text_to_ids


@dataclass
class Item:
    id: str
    text: str
    ids: np.ndarray
    mel: np.ndarray           # (80, frames)


def read_metadata(root: str | Path) -> list[tuple[str, str]]:
    root = Path(root)
    if not root.is_dir():
        raise ToolkitError(f"data folder {root} does not exist; pass an LJSpeech-style folder "
                           "(metadata.csv + wavs/)")
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise ToolkitError(f"{meta} is missing; an LJSpeech-style folder needs metadata.csv "
                           "with lines id|text|normalized_text and wavs/<id>.wav")
    try:
        text = meta.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ToolkitError(f"{meta} is not UTF-8 text (byte {exc.start}); save it as "
                           "UTF-8") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2 or not parts[0].strip():
            raise ToolkitError(f"{meta} line {n} is not id|text|normalized_text: {line[:60]!r}")
        text = parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]
        rows.append((parts[0].strip(), text.strip()))
    if not rows:
        raise ToolkitError(f"{meta} has no entries")
    return rows


def load_dataset(root: str | Path, add_blank: bool = True, limit: int | None = None) -> list[Item]:

    root = Path(root)
    rows = read_metadata(root)[:limit]
    items = []
    for uid, text in track(rows, "extracting mels (22.05 kHz, 80 bins)"):
        wav_path = root / "wavs" / f"{uid}.wav"
        mel = mel_spectrogram(load_wav(wav_path))
        try:
            ids = text_to_ids(text, add_blank=add_blank, warn=False)
        except ToolkitError as exc:
            raise ToolkitError(f"metadata.csv entry {uid}: {exc}") from None
        items.append(Item(uid, text, np.asarray(ids, dtype=np.int64), mel))
    return items


def collate(items: list[Item]):
    b = len(items)
    tx = max(len(i.ids) for i in items)
    ty = max(i.mel.shape[1] for i in items)
    ids = torch.zeros(b, tx, dtype=torch.long)
    mel = torch.zeros(b, items[0].mel.shape[0], ty)
    for k, it in enumerate(items):
        ids[k, :len(it.ids)] = torch.from_numpy(it.ids)
        mel[k, :, :it.mel.shape[1]] = torch.from_numpy(it.mel)
    x_len = torch.tensor([len(i.ids) for i in items])
    y_len = torch.tensor([i.mel.shape[1] for i in items])
    return ids, x_len, mel, y_len
