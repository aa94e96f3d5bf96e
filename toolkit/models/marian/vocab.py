"""SentencePiece vocabularies: Bergamot's ``vocab.<pair>.spm`` (ids are the SentencePiece ids;
``</s>`` = 0, ``<unk>`` = 1) and a Hugging Face Marian checkpoint's ``source.spm`` /
``target.spm`` + ``vocab.json`` (pieces mapped to the model's ids through vocab.json).

Read with the ``sentencepiece`` package — Google's own implementation, the library Marian links:
ids and normalisation are exact by construction. (``tokenizers`` cannot open a .spm file; it
would need a conversion through transformers' converter, which itself needs sentencepiece.) No
torch here, so the runtime can use it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...core.errors import MissingDependency, ToolkitError


def _processor(path: Path):
    try:
        import sentencepiece
    except ImportError:
        raise MissingDependency("reading a Marian vocabulary needs the sentencepiece package: "
                                "pip install 'sentencepiece>=0.2'") from None
    if not path.is_file():
        raise ToolkitError(f"vocabulary {path} does not exist")
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise ToolkitError(f"{path} is not a SentencePiece model "
                           f"({str(exc).splitlines()[0][:120]})") from None
    return sp


class SentencePieceVocab:
    """One SentencePiece model shared by source and target (Bergamot ``vocab.<pair>.spm``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.sp = _processor(self.path)
        self.eos_id = self.sp.PieceToId("</s>")
        self.unk_id = self.sp.unk_id()
        self.pad_id = None
        if self.sp.IdToPiece(self.eos_id) != "</s>":
            raise ToolkitError(f"{self.path} has no </s> piece; it is not a Marian vocabulary")

    def __len__(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, text: str) -> list[int]:
        """Source ids, ending in ``</s>`` as Marian feeds them."""
        return list(self.sp.EncodeAsIds(text)) + [self.eos_id]

    def pieces(self, text: str) -> list[str]:
        return list(self.sp.EncodeAsPieces(text))

    def decode(self, ids) -> str:
        """Target ids → text; ``</s>`` and anything after it dropped, ids outside the
        vocabulary (a random preset's padding id) skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if 0 <= i < len(self):
                out.append(i)
        return self.sp.DecodeIds(out)


class HFMarianVocab:
    """A Hugging Face Marian checkpoint's tokenizer files (MarianTokenizer's layout) read
    without transformers: ``source.spm`` splits the source into pieces, ``vocab.json`` maps
    pieces to ids (unknown ones to ``<unk>``), ``target.spm`` joins the output pieces."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.directory = directory
        for name in ("source.spm", "target.spm", "vocab.json"):
            if not (directory / name).is_file():
                raise ToolkitError(f"checkpoint {directory} has no {name}; a Marian checkpoint "
                                   "needs source.spm, target.spm and vocab.json beside config.json")
        self.source = _processor(directory / "source.spm")
        self.target = _processor(directory / "target.spm")
        try:
            self.ids = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ToolkitError(f"{directory / 'vocab.json'} is not valid JSON") from None
        self.pieces_of = {int(i): p for p, i in self.ids.items()}
        self.eos_id = self.ids.get("</s>", 0)
        self.unk_id = self.ids.get("<unk>", 1)
        self.pad_id = self.ids.get("<pad>")

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(p, self.unk_id) for p in self.source.EncodeAsPieces(text)] + [
            self.eos_id]

    def decode(self, ids) -> str:
        pieces = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.unk_id) or i not in self.pieces_of:
                continue
            pieces.append(self.pieces_of[i])
        return self.target.DecodePieces(pieces)
