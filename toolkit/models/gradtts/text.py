"""Character text front end: normalise, map to symbol ids, intersperse a blank token.

Characters (not phonemes): lower-cased letters, space and common punctuation. Anything else is
dropped with one warning naming the dropped characters — never a crash. Text with no letter
left is a ``ToolkitError``.
"""

from __future__ import annotations

import re
import unicodedata

from ...core.errors import ToolkitError
from ...core.progress import console

PAD = "_"
PUNCTUATION = "!'\"(),-.:;?"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYMBOLS = [PAD, " "] + list(PUNCTUATION) + list(LETTERS)
SYMBOL_TO_ID = {s: i for i, s in enumerate(SYMBOLS)}
BLANK_ID = len(SYMBOLS)            # the interspersed blank (Glow-TTS / Grad-TTS add_blank)
N_VOCAB = len(SYMBOLS) + 1

_REPLACE = {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "-",
            "\u2013": "-", "[": "(", "]": ")"}


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))  # é -> e
    text = "".join(_REPLACE.get(c, c) for c in text).lower()
    return re.sub(r"\s+", " ", text).strip()


def text_to_ids(text: str, add_blank: bool = True, warn: bool = True) -> list[int]:
    """Symbol ids of ``text`` (blank-interspersed when ``add_blank``)."""
    if text is None or not str(text).strip():
        raise ToolkitError("the text is empty; pass a sentence to synthesize, e.g. "
                           "toolkit synthesize \"Hello world.\" --out hello.wav")
    norm = normalize(str(text))
    kept, dropped = [], []
    for c in norm:
        if c in SYMBOL_TO_ID:
            kept.append(SYMBOL_TO_ID[c])
        else:
            dropped.append(c)
    if dropped and warn:
        console.print(f"[yellow]warning:[/] dropped {len(dropped)} character(s) outside the "
                      f"symbol set: {''.join(sorted(set(dropped)))!r}")
    if not any(SYMBOLS[i] in LETTERS for i in kept):
        raise ToolkitError(f"the text {str(text)[:40]!r} has no speakable characters (letters "
                           "a-z); spell numbers and symbols out in words")
    if add_blank:
        out = [BLANK_ID] * (2 * len(kept) + 1)
        out[1::2] = kept
        return out
    return kept
