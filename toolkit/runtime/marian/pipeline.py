"""Translation over any backend: SentencePiece in, the shared encoder–decoder loop
(``runtime/generate``), SentencePiece out.

Sentences are encoded, sorted by length and cut into batches (padding stays small); each batch
is encoded once (cross-attention K/V per sentence) and decoded greedily or by beam search with
Marian's rules: the decoder starts from its start token (Bergamot: an all-zero input), ends at
``</s>``, and stops after ``length_factor`` × the source length (Marian's max-length-factor,
taken over the batch's longest sentence). Translations come back in input order.

Input rules (one-line errors, never a silent cut): an empty line, a line longer than
``max_source_tokens`` pieces (the exported profiles' limit: split it into sentences), and a line
mostly made of characters the vocabulary does not have (text in another script). Curly quotes
and apostrophes, which the Bergamot vocabularies lack, are read as their ASCII forms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...core import schema
from ...core.errors import ToolkitError, check_positive
from ...export.manifest import inside
from ...models.marian.formats import read_shortlist
from ...models.marian.vocab import HFMarianVocab, SentencePieceVocab
from ..generate import EncoderDecoder, SearchOptions, SuppressTokens
from ..generate.pipeline import CacheEntry, kv_cache
from ..graphs import Graphs
from ..session import Session

SHORTLIST_GRAPH = "decoder_shortlist"     # export/marian/plan.py names it so

# characters the Bergamot vocabularies have no piece for, read as the ASCII ones Marian emits
ASCII_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "‚": "'"})
MOSTLY_UNKNOWN = 0.5    # a line whose letters are mostly unknown is in another script


@dataclass
class Translation:
    text: str
    tokens: list[int]
    sum_logprob: float = 0.0


@dataclass
class BatchResult:
    translations: list[Translation]
    encoder_ms: float = 0.0
    step_ms: list[float] = field(default_factory=list)
    batches: int = 0

    @property
    def tokens(self) -> int:
        return sum(len(t.tokens) for t in self.translations)


def marian_cache(cfg: dict) -> list[CacheEntry]:
    if cfg["architecture"] == "bergamot":
        return [CacheEntry("position", (), "int64"),
                *[CacheEntry(f"cell_{i}", (cfg["d_model"],)) for i in range(cfg["decoder_layers"])]]
    return kv_cache(cfg["decoder_layers"], cfg["heads"], cfg["head_dim"])


class MarianPipeline(EncoderDecoder):
    """``shortlist``: the model's lexical shortlist and ``short_decoder`` the decoder graph over
    a shortlist's rows (Bergamot models that ship one); with both, each batch decodes over the
    target ids its source tokens allow (``use_shortlist``, on by default, as Firefox runs
    these models), else over the whole vocabulary."""

    def __init__(self, encoder: Session, decoder: Session, config: dict, vocab,  # noqa: PLR0913
                 random_init: bool, source: dict, backend: str, precision: str,
                 short_decoder: Session | None = None, shortlist=None):
        super().__init__(encoder, decoder, marian_cache(config), backend, precision)
        self.short_decoder = short_decoder
        self.shortlist = shortlist if short_decoder is not None else None
        self.use_shortlist = self.shortlist is not None
        self._vocab_ids: np.ndarray | None = None     # the batch's shortlist while it decodes
        self.config = config
        self.vocab = vocab
        self.random_init = random_init
        self.source = source
        self.pair = tuple(config["pair"])
        self.eos = int(config["eos_id"])
        self.unk = int(config["unk_id"])
        self.pad = config.get("pad_id")
        self.start = int(config["start_id"])
        self.max_source = int(config["max_source_tokens"])
        self.max_target = int(config["max_target_tokens"])
        self.factor = float(config["length_factor"])
        limits = config.get("batch_limits") or {}
        self.max_sentences = int(limits.get("sentences", 32))
        self.max_rows = int(limits.get("rows", 128))
        self.vocab_size = vocab_size = int(config["vocab_size"])
        banned = [self.pad] if self.pad is not None and self.pad < vocab_size else []
        self.filters = [SuppressTokens(np.array(banned, np.int64))]
        self._known_chars: dict[str, bool] = {}

    @property
    def sessions(self) -> list[Session]:
        return [self.encoder, self.decoder] + ([self.short_decoder] if self.short_decoder else [])

    def close(self) -> None:
        super().close()
        if self.short_decoder is not None:
            self.short_decoder.close()

    def step(self, ids: np.ndarray, past: dict, cross: dict) -> tuple[np.ndarray, dict]:
        """A decoder step; with a shortlist, over its rows only, the logits put back in place
        in a full-vocabulary row (everything else -inf), so the search and its logit rules
        are the same either way."""
        vocab = self._vocab_ids
        if vocab is None:
            return super().step(ids, past, cross)
        dec = self.short_decoder
        out = dec.run_device({"input_ids": ids, **past, **cross, "vocab_ids": vocab})
        small = dec.to_host(out["logits"])
        logits = np.full((small.shape[0], self.vocab_size), -np.inf, np.float32)
        logits[:, vocab] = small
        return logits, {c.past: out[c.present] for c in self.cache}

    # -- input ------------------------------------------------------------------------------
    def _unknown(self, char: str) -> bool:
        """Whether the vocabulary has no piece for ``char`` (it encodes to <unk>)."""
        known = self._known_chars
        if char not in known:
            known[char] = self.unk not in self.vocab.encode(char)
        return not known[char]

    def encode_text(self, text: str, where: str = "the text") -> list[int]:
        """Source ids ending in </s>, with the input rules above (one-line errors)."""
        text = text.strip().translate(ASCII_QUOTES)
        if not text:
            raise ToolkitError(f"{where} is empty; give a sentence to translate")
        ids = self.vocab.encode(text)
        if len(ids) > self.max_source:
            raise ToolkitError(f"{where} is {len(ids)} pieces long; this model translates at "
                               f"most {self.max_source} pieces per sentence (its exported "
                               "limit) — split it into sentences, one per line")
        unknown = [c for c in set(text) if not c.isspace() and self._unknown(c)]
        share = sum(text.count(c) for c in unknown) / max(1, len(text.replace(" ", "")))
        if share > MOSTLY_UNKNOWN:
            raise ToolkitError(f"{where} is mostly characters the {self.pair[0]}→{self.pair[1]} "
                               f"vocabulary does not have ({''.join(sorted(unknown))[:8]}…); is "
                               f"it {self.pair[0]} text? Use a model for its language")
        return ids

    def source_feeds(self, rows: Sequence[list[int]]) -> dict[str, np.ndarray]:
        width = max(len(r) for r in rows)
        pad = self.pad if self.pad is not None else self.eos
        ids = np.full((len(rows), width), pad, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = r, 1
        return {"input_ids": ids, "attention_mask": mask}

    def batch_capacity(self, beam_size: int, requested: int) -> int:
        """Sentences per batch: ``requested``, within the TensorRT profile on trt backends."""
        if self.backend in ("trt", "ort-trt"):
            return max(1, min(requested, self.max_sentences, self.max_rows // max(1, beam_size)))
        return max(1, requested)

    # -- translation --------------------------------------------------------------------------
    def translate_ids(self, rows: list[list[int]], beam_size: int = 1,
                      stop: Callable[[], bool] | None = None) -> tuple[list, float, list]:
        """One batch of encoded sentences → (hypotheses, encoder ms, decoder step ms)."""
        t0 = time.perf_counter()
        cross = self.run_encoder(self.source_feeds(rows))
        enc_ms = (time.perf_counter() - t0) * 1e3
        limit = min(self.max_target, max(1, math.ceil(self.factor * max(len(r) for r in rows))))
        if self.use_shortlist and self.shortlist is not None:
            self._vocab_ids = self.shortlist.allowed(np.concatenate(rows), self.vocab_size
                                                     ).astype(np.int64)
        try:
            res = self.generate(cross, [self.start], self.eos, self.filters,
                                SearchOptions(beam_size=beam_size, max_new_tokens=limit), limit,
                                stop=stop)
        finally:
            self._vocab_ids = None
        return res.hypotheses, enc_ms, res.step_ms

    def translate(self, texts: Sequence[str], beam_size: int = 1, batch_size: int = 32,
                  stop: Callable[[], bool] | None = None, names: Sequence[str] | None = None
                  ) -> BatchResult:
        """Texts → translations in input order (length-sorted batches of ``batch_size``)."""
        check_positive(beam_size=beam_size, batch_size=batch_size)
        names = names or [f"text {i + 1}" for i in range(len(texts))]
        if not texts:
            raise ToolkitError("nothing to translate: give a sentence or --input FILE")
        ids = [self.encode_text(t, n) for t, n in zip(texts, names)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        per = self.batch_capacity(beam_size, batch_size)
        out: list[Translation | None] = [None] * len(ids)
        result = BatchResult([])
        for at in range(0, len(order), per):
            chunk = order[at:at + per]
            hyps, enc_ms, step_ms = self.translate_ids([ids[i] for i in chunk], beam_size, stop)
            result.encoder_ms += enc_ms
            result.step_ms += step_ms
            result.batches += 1
            for i, h in zip(chunk, hyps):
                out[i] = Translation(self.vocab.decode(h.tokens), h.tokens, h.sum_logprob)
        result.translations = out  # type: ignore[assignment]
        return result


# ------------------------------------------------------------------------------------------
# construction
# ------------------------------------------------------------------------------------------

def vocab_from_artifact(artifact: Path, cfg: dict):
    info = cfg["vocab"]
    if info.get("kind") == "hf":
        vocab = HFMarianVocab(inside(artifact, info["files"], "vocabulary folder", bare=False))
    else:
        vocab = SentencePieceVocab(inside(artifact, info["files"], "vocabulary"))
    if cfg.get("pad_id") is not None:
        vocab.pad_id = int(cfg["pad_id"])
    return vocab


def check_config(cfg: dict, graphs: Graphs) -> None:
    where = f"model_config of {graphs.artifact or 'the model'}"
    schema.field(cfg, "architecture", str, where, choices=("bergamot", "hf"))
    for key, hi in (("d_model", 65536), ("heads", 1024), ("head_dim", 4096),
                    ("decoder_layers", 128), ("vocab_size", 10_000_000),
                    ("max_source_tokens", 100_000), ("max_target_tokens", 100_000)):
        schema.field(cfg, key, int, where, 1, hi)
    for key in ("eos_id", "unk_id", "start_id"):
        schema.field(cfg, key, int, where, 0, cfg["vocab_size"])
    schema.field(cfg, "pair", list, where)
    schema.field(cfg, "vocab", dict, where)
    dec = graphs.sessions["decoder"]
    have = {t.name for t in dec.inputs}
    need = {c.past for c in marian_cache(cfg)}
    if dec.inputs and not need <= have:
        raise ToolkitError(f"{where} describes a decoder cache ({', '.join(sorted(need - have))})"
                           " the decoder graph does not take; re-export the artifact")


def shortlist_from_artifact(artifact: Path, cfg: dict):
    """The artifact's lexical shortlist (its hash is checked with the manifest's files; the
    ranges of every offset and id are checked here)."""
    return read_shortlist(inside(artifact, cfg["shortlist"], "lexical shortlist"), check=False,
                          target_vocab=int(cfg["vocab_size"]))


def from_graphs(graphs: Graphs) -> MarianPipeline:
    cfg = graphs.model_config
    check_config(cfg, graphs)
    loaded = graphs.loaded
    vocab = loaded.vocab if loaded is not None else vocab_from_artifact(graphs.artifact, cfg)
    short = graphs.sessions.get(SHORTLIST_GRAPH)
    shortlist = None
    if short is not None:
        if not cfg.get("shortlist"):
            raise ToolkitError(f"{graphs.artifact} has a shortlist decoder but no shortlist "
                               "file in its model_config; re-export the artifact")
        shortlist = (loaded.shortlist if loaded is not None
                     else shortlist_from_artifact(graphs.artifact, cfg))
    return MarianPipeline(graphs.sessions["encoder"], graphs.sessions["decoder"], cfg, vocab,
                          graphs.random_init, graphs.source, graphs.backend, graphs.precision,
                          short_decoder=short, shortlist=shortlist)
