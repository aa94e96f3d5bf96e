"""Whisper tokenizer: from the checkpoint when it has one, else built offline from the packaged
tiktoken ranks (byte-level BPE) plus Whisper's special tokens.

Vocabulary sizes: 51 864 (English-only: gpt2 ranks), 51 865 (multilingual, 99 languages),
51 866 (large-v3 / turbo: 100 languages, adds ``<|yue|>``).
"""

from __future__ import annotations

import base64
import json
from functools import cached_property
from importlib import resources
from pathlib import Path

from ...core.errors import ToolkitError

# Whisper's language codes, in token order (the order fixes the token ids).
LANGUAGE_CODES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su yue").split()

# GPT-2's pre-tokenisation pattern, used by Whisper's tiktoken encodings.
_PAT = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

# Symbols Whisper keeps out of transcripts by default (its "non-speech" suppression set).
_NON_SPEECH = (list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
               + "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split())
_MUSIC = "♩♪♫♬♭♮♯"


class WhisperTokenizer:
    """The token ids and text codec the decode loop needs, whatever the tokenizer source."""

    def __init__(self, encode, decode_text, token_to_id, vocab_size: int, num_languages: int,
                 source: str):
        self._encode = encode
        self._decode_text = decode_text
        self._tok = token_to_id
        self.vocab_size = vocab_size
        self.num_languages = num_languages
        self.source = source
        self.eot = self._tok("<|endoftext|>")
        self.sot = self._tok("<|startoftranscript|>")
        self.transcribe = self._tok("<|transcribe|>")
        self.translate = self._tok("<|translate|>")
        self.sot_prev = self._tok("<|startofprev|>")
        self.sot_lm = self._tok("<|startoflm|>")
        try:
            self.no_speech = self._tok("<|nospeech|>")
        except ToolkitError:  # tokenizers converted from the first Whisper release
            self.no_speech = self._tok("<|nocaptions|>")
        self.no_timestamps = self._tok("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1
        self.languages = LANGUAGE_CODES[:num_languages]

    @property
    def multilingual(self) -> bool:
        return self.num_languages > 0 and self.vocab_size >= 51865

    def language_token(self, code: str) -> int:
        code = code.lower()
        if code not in self.languages:
            raise ToolkitError(f"unknown language {code!r}; this model knows "
                               f"{len(self.languages)} languages, e.g. en, ko, de, ja")
        return self._tok(f"<|{code}|>")

    @cached_property
    def language_tokens(self) -> list[int]:
        return [self._tok(f"<|{c}|>") for c in self.languages]

    def sot_sequence(self, language: str | None = "en", task: str = "transcribe",
                     timestamps: bool = False) -> list[int]:
        seq = [self.sot]
        if self.multilingual:
            if task not in ("transcribe", "translate"):
                raise ToolkitError(f"unknown task {task!r}; use transcribe or translate")
            if language is not None:
                seq.append(self.language_token(language))
            seq.append(self.transcribe if task == "transcribe" else self.translate)
        elif task == "translate" or (language not in (None, "en")):
            raise ToolkitError("this is an English-only Whisper model: it cannot translate or "
                               f"transcribe language {language!r}; use a multilingual checkpoint")
        if not timestamps:
            seq.append(self.no_timestamps)
        return seq

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, tokens) -> str:
        """Text of the ordinary (non-special) tokens."""
        return self._decode_text([int(t) for t in tokens if int(t) < self.eot])

    @cached_property
    def non_speech_tokens(self) -> list[int]:
        """Single tokens of symbols/music marks (Whisper's default ``suppress_tokens``)."""
        ids = {self.encode(" -")[0], self.encode(" '")[0]}
        for sym in _NON_SPEECH + list(_MUSIC):
            for text in (sym, " " + sym):
                toks = self.encode(text)
                if len(toks) == 1 or (sym in _MUSIC and toks):
                    ids.add(toks[0])
        return sorted(ids)


def _ranks(name: str) -> dict[bytes, int]:
    ref = resources.files("toolkit.assets").joinpath(f"whisper/{name}.tiktoken")
    ranks = {}
    for line in ref.read_text().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def builtin_tokenizer(vocab_size: int) -> WhisperTokenizer:
    """Whisper's tokenizer for a vocabulary size, built offline from the packaged ranks."""
    import tiktoken

    if vocab_size == 51864:
        name, num_languages = "gpt2", 99
    elif vocab_size in (51865, 51866):
        name, num_languages = "multilingual", 99 if vocab_size == 51865 else 100
    else:
        raise ToolkitError(f"no built-in Whisper tokenizer for vocabulary size {vocab_size} "
                           "(known: 51864, 51865, 51866); put the tokenizer files in the "
                           "checkpoint directory")
    ranks = _ranks(name)
    specials = (["<|endoftext|>", "<|startoftranscript|>"]
                + [f"<|{c}|>" for c in LANGUAGE_CODES[:num_languages]]
                + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                   "<|nospeech|>", "<|notimestamps|>"]
                + [f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    special_ids = {tok: len(ranks) + i for i, tok in enumerate(specials)}
    enc = tiktoken.Encoding(name=f"whisper-{name}-{num_languages}", pat_str=_PAT,
                            mergeable_ranks=ranks, special_tokens=special_ids)
    total = len(ranks) + len(specials)
    if total != vocab_size:
        raise ToolkitError(f"built-in tokenizer has {total} tokens, model expects {vocab_size}")
    return WhisperTokenizer(encode=lambda t: enc.encode(t, disallowed_special=()),
                            decode_text=enc.decode, token_to_id=special_ids.__getitem__,
                            vocab_size=total, num_languages=num_languages,
                            source=f"built-in ({name}.tiktoken, {num_languages} languages)")


def hf_tokenizer(path: str | Path, vocab_size: int) -> WhisperTokenizer | None:
    """The checkpoint's own tokenizer, or None when the directory has no tokenizer files.

    ``tokenizer.json`` (what every export writes) is read with the ``tokenizers`` library alone
    — no transformers, so an artifact runs without it; a checkpoint with only the slow files
    (``vocab.json`` + ``merges.txt``) goes through transformers."""
    path = Path(path)
    if (path / "tokenizer.json").is_file():
        return _fast_tokenizer(path, vocab_size)
    if not (path / "vocab.json").is_file():
        return None
    from transformers import WhisperTokenizerFast

    tok = WhisperTokenizerFast.from_pretrained(str(path))
    return _tokenizer(lambda t: tok.encode(t, add_special_tokens=False),
                      lambda ids: tok.decode(ids, skip_special_tokens=True),
                      tok.convert_tokens_to_ids, tok.unk_token_id, tok.unk_token, vocab_size,
                      f"checkpoint ({path})")


def _fast_tokenizer(path: Path, vocab_size: int) -> WhisperTokenizer:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as exc:  # noqa: BLE001 - the Rust library raises its own Exception type
        raise ToolkitError(f"{path / 'tokenizer.json'} is not a tokenizer file "
                           f"({str(exc).splitlines()[0][:120]}); re-export the artifact or fix "
                           "the checkpoint") from None
    config = {}
    if (path / "tokenizer_config.json").is_file():
        config = json.loads((path / "tokenizer_config.json").read_text())
    unk = config.get("unk_token") if isinstance(config.get("unk_token"), str) else None
    clean = bool(config.get("clean_up_tokenization_spaces"))

    def decode(ids):
        text = tok.decode(ids, skip_special_tokens=True)
        return _clean_up(text) if clean else text

    return _tokenizer(lambda t: tok.encode(t, add_special_tokens=False).ids, decode,
                      tok.token_to_id, tok.token_to_id(unk) if unk else None, unk, vocab_size,
                      f"checkpoint ({path})")


def _clean_up(text: str) -> str:
    """Hugging Face's ``clean_up_tokenization`` (for tokenizers configured with it)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                 (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


def _tokenizer(encode, decode, convert, unk_id, unk_token, vocab_size: int,
               source: str) -> WhisperTokenizer:
    num_languages = sum(1 for c in LANGUAGE_CODES if convert(f"<|{c}|>")
                        not in (None, unk_id))  # unk is <|endoftext|>: never a language

    def to_id(token: str) -> int:
        i = convert(token)
        if i is None or (i == unk_id and token != unk_token):
            raise ToolkitError(f"the checkpoint's tokenizer has no special token {token}; "
                               "it is not a Whisper tokenizer")
        return int(i)

    return WhisperTokenizer(encode=encode, decode_text=decode, token_to_id=to_id,
                            vocab_size=vocab_size, num_languages=num_languages, source=source)
