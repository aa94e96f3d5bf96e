"""Tokenizers for InternVL, torch-free (the ``tokenizers`` package): a checkpoint's
``tokenizer.json``, or the small byte-level BPE of the ``internvl-tiny`` preset, trained on the
caption and tag texts of ``../shared/data/captions`` and committed as
``toolkit/assets/internvl/tiny-tokenizer.json`` (``train_caption_tokenizer`` rebuilds it;
a test checks that it does so exactly)."""

from __future__ import annotations

import json
from pathlib import Path

from ...core.errors import ToolkitError
from .prompt import CAPTION_PROMPT, IMG_CONTEXT, IMG_END, IMG_START, SYSTEM_MESSAGE

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "internvl"
TINY_TOKENIZER = ASSETS / "tiny-tokenizer.json"
# the small tokenizer's special tokens, in id order (0 = end of text, also padding)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMG_START, IMG_END, IMG_CONTEXT]
TINY_VOCAB = 1024


class TextTokenizer:
    """``encode`` (special tokens written in the text become their ids) / ``decode`` (special
    tokens dropped) / ``token_id`` over a ``tokenizers.Tokenizer``."""

    def __init__(self, tk, bos_token: str | None = None, source: str = ""):
        self.tk = tk
        self.source = source
        self.bos_id = self.token_id(bos_token) if bos_token else None

    @classmethod
    def from_file(cls, path: str | Path, bos_token: str | None = None) -> "TextTokenizer":
        from tokenizers import Tokenizer

        try:
            tk = Tokenizer.from_file(str(path))
        except Exception as exc:   # tokenizers raises a bare Exception on a bad file
            raise ToolkitError(f"cannot read tokenizer {path}: "
                               f"{str(exc).splitlines()[0][:160]}") from None
        return cls(tk, bos_token, str(path))

    def __len__(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        i = self.tk.token_to_id(token)
        if i is None:
            raise ToolkitError(f"the tokenizer {self.source} has no token {token!r}; it is not "
                               "an InternVL tokenizer")
        return int(i)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self.tk.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos and self.bos_id is not None else []) + list(ids)

    def decode(self, ids) -> str:
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=True)


def tiny_tokenizer() -> TextTokenizer:
    return TextTokenizer.from_file(TINY_TOKENIZER)


def caption_texts(data_dir: str | Path) -> list[str]:
    """The training texts of the small tokenizer: every answer of the train split's chat and
    tag files, the caption question, the system message and the chat roles."""
    root = Path(data_dir) / "annotations"
    texts = [CAPTION_PROMPT, SYSTEM_MESSAGE, "system\n", "user\n", "assistant\n"]
    for name in ("shapes_train_chat.jsonl", "shapes_train_tags.jsonl"):
        for line in (root / name).read_text().splitlines():
            if line.strip():
                texts += [turn["value"] for turn in json.loads(line)["conversations"]
                          if turn["from"] == "gpt"]
    return texts


def train_caption_tokenizer(texts: list[str], vocab_size: int = TINY_VOCAB):
    """A byte-level BPE (Qwen2's kind: any text encodes, decoding restores it) over ``texts``,
    with ``SPECIALS`` first. Deterministic for the same texts and ``tokenizers`` version."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer)
    return tk
